"""Reading a real /metrics answer: raw text for names, prometheus_client's parser for values."""

from __future__ import annotations

import http.client
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proving.service import http_get

# What the Deployment would set from the downward API; distinctive so that a label
# can only carry it if it came from the environment.
IDENTITY_ENV = {"APP_VERSION": "9.8.7-test", "POD_IP": "10.244.1.23", "NODE_IP": "192.168.49.2"}
IDENTITY_LABELS = {"app_version": "9.8.7-test", "pod_ip": "10.244.1.23", "node_ip": "192.168.49.2"}

FAMILIES = {
    "user_hasher_http_request_duration_seconds": "histogram",
    "user_hasher_http_responses_total": "counter",
    "user_hasher_hashes_generated_total": "counter",
    "user_hasher_build_info": "gauge",
    "user_hasher_shed_total": "counter",
}
BUILD_INFO = "user_hasher_build_info"
DURATION = "user_hasher_http_request_duration_seconds"
RESPONSES = "user_hasher_http_responses_total"
HASHES = "user_hasher_hashes_generated_total"
DASHBOARD = Path(__file__).parents[1] / "dashboards" / "user_hasher.json"

Series = tuple[str, frozenset[tuple[str, str]]]

KNOWN_TRAFFIC = [
    *(("GET", f"/user_hash?user_id=user-{n}") for n in range(5)),
    ("HEAD", "/user_hash?user_id=head"),  # answered, but its response carries no hash
    *(("GET", "/user_hash") for _ in range(3)),  # 400: no user_id
    ("GET", "/no-such-page"),
    ("GET", "/user_hash/extra?user_id=x"),
    ("POST", "/user_hash?user_id=x"),
    ("BREW", "/user_hash?user_id=x"),
    ("GET", "/healthz"),
]
EXPECTED_STATUSES = [200] * 6 + [400] * 3 + [404, 404, 405, 405, 200]
EXPECTED_HASHES = 5
# (method, route, status_class). A 405 is on a known route, answered for the wrong method.
EXPECTED_RESPONSES = Counter(
    {
        ("GET", "/user_hash", "2xx"): 5,
        ("HEAD", "/user_hash", "2xx"): 1,
        ("GET", "/user_hash", "4xx"): 3,
        ("GET", "unmatched", "4xx"): 2,
        ("POST", "/user_hash", "4xx"): 1,
        ("other", "/user_hash", "4xx"): 1,
        ("GET", "/healthz", "2xx"): 1,
    }
)


def scrape(port: int) -> str:
    status, headers, body = http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


def samples(text: str) -> dict[Series, float]:
    """Every sample by (sample name, labels); the parser keeps `_total` on sample names."""
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def by_response(text: str, name: str) -> Counter[tuple[str, str, str]]:
    """Values of one sample name keyed by (method, route, status_class)."""
    values: Counter[tuple[str, str, str]] = Counter()
    for (sample_name, labels), value in samples(text).items():
        if sample_name == name:
            label = dict(labels)
            if "le" not in label:
                values[(label["method"], label["route"], label["status_class"])] += value
    return values


def value(text: str, name: str) -> float:
    """The value of a sample name that has exactly one series."""
    (found,) = [v for (sample_name, _), v in samples(text).items() if sample_name == name]
    return found


def send(port: int, requests: list[tuple[str, str]]) -> list[int]:
    """Sends (method, target) pairs on one keep-alive connection; returns the statuses."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    statuses = []
    try:
        for method, target in requests:
            connection.request(method, target)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses
