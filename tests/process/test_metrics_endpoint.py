"""/metrics of a real `python -m user_hasher` process, after traffic whose counts are known,
served on its own port: one process, two listeners, each answering only its own paths."""

import json
import random
import string
import subprocess
from collections import Counter
from collections.abc import Callable

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_TARGET
from proving.service import ServiceProcess, http_get
from tests.conftest import SALT
from tests.metrics_text import (
    DURATION,
    EXPECTED_HASHES,
    EXPECTED_RESPONSES,
    EXPECTED_STATUSES,
    FAMILIES,
    HASHES,
    IDENTITY_ENV,
    IDENTITY_LABELS,
    KNOWN_TRAFFIC,
    RESPONSES,
    by_response,
    samples,
    scrape,
    send,
    value,
)
from tests.support.needs import require_tool

pytestmark = pytest.mark.slow

StartService = Callable[..., ServiceProcess]


@pytest.fixture
def service(start_service: StartService) -> ServiceProcess:
    return start_service(USER_SALT=SALT, **IDENTITY_ENV)


def access_log_lines(service: ServiceProcess) -> list[dict]:
    lines = (json.loads(line) for line in service.output.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == "request"]


NOT_FOUND = {"error": "not found"}


def test_metrics_on_the_metrics_port_only_and_the_service_on_the_service_port_only(
    service: ServiceProcess,
) -> None:
    status, headers, body = http_get(service.metrics_port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    before = by_response(body.decode(), RESPONSES)  # the readiness wait's probes
    assert "user_hasher_build_info{" in body.decode()
    status, _, body = http_get(service.port, CONTRACT_TARGET)
    assert (status, body) == (200, CONTRACT_BODY)
    # Each port refuses the other's paths; the probes stay on the service port.
    for target in (CONTRACT_TARGET, "/healthz", "/readyz", "/"):
        status, headers, body = http_get(service.metrics_port, target)
        assert (status, json.loads(body)) == (404, NOT_FOUND), target
        assert headers["content-type"] == "application/json"
    status, _, body = http_get(service.port, "/metrics")
    assert (status, json.loads(body)) == (404, NOT_FOUND)
    assert http_get(service.port, "/healthz")[0] == http_get(service.port, "/readyz")[0] == 200
    # Only the service port's requests are traffic: the one hash, and /metrics there as an
    # unknown path (with the two probes).
    text = scrape(service.metrics_port)
    assert value(text, HASHES) == 1
    assert by_response(text, RESPONSES) - before == {
        ("GET", "/user_hash", "2xx"): 1,
        ("GET", "unmatched", "4xx"): 1,
        ("GET", "/healthz", "2xx"): 1,
        ("GET", "/readyz", "2xx"): 1,
    }


def test_known_traffic_is_counted_exactly(service: ServiceProcess) -> None:
    before = scrape(service.metrics_port)
    assert value(before, HASHES) == 0

    assert send(service.port, KNOWN_TRAFFIC) == EXPECTED_STATUSES
    after = scrape(service.metrics_port)

    # The baseline holds the readiness polls of start-up; the difference is the traffic.
    assert by_response(after, RESPONSES) - by_response(before, RESPONSES) == EXPECTED_RESPONSES
    assert value(after, HASHES) == EXPECTED_HASHES
    assert value(after, "user_hasher_build_info") == 1
    assert by_response(after, f"{DURATION}_count") == by_response(after, RESPONSES)
    infinity_buckets = Counter(
        {
            (labels["method"], labels["route"], labels["status_class"]): v
            for (name, label_items), v in samples(after).items()
            if name == f"{DURATION}_bucket" and (labels := dict(label_items))["le"] == "+Inf"
        }
    )
    assert infinity_buckets == by_response(after, RESPONSES)
    assert all(v > 0 for v in by_response(after, f"{DURATION}_sum").values())


def test_every_series_carries_the_identity_labels(service: ServiceProcess) -> None:
    send(service.port, KNOWN_TRAFFIC)
    found = samples(scrape(service.metrics_port))
    assert len(found) > 50  # histograms included: this is not a vacuous check
    for name, labels in found:
        assert IDENTITY_LABELS.items() <= dict(labels).items(), name


def test_family_names_and_types_on_the_raw_text(service: ServiceProcess) -> None:
    # The parser adds `_total` to counter names by itself, so names are checked here.
    send(service.port, KNOWN_TRAFFIC)
    text = scrape(service.metrics_port)
    for name, kind in FAMILIES.items():
        assert f"\n# TYPE {name} {kind}\n" in f"\n{text}"
        assert f"\n# HELP {name} " in f"\n{text}"
        assert f"\n{name}{{" in text or f"\n{name}_bucket{{" in text
    assert sorted({line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}) == (
        sorted(FAMILIES)
    )


def test_scrapes_are_neither_counted_nor_access_logged(service: ServiceProcess) -> None:
    send(service.port, KNOWN_TRAFFIC)
    first = scrape(service.metrics_port)
    logged = len(access_log_lines(service))
    for _ in range(3):
        scrape(service.metrics_port)
    last = scrape(service.metrics_port)
    assert by_response(last, RESPONSES) == by_response(first, RESPONSES)
    assert by_response(last, f"{DURATION}_count") == by_response(first, f"{DURATION}_count")
    assert len(access_log_lines(service)) == logged
    # The access log itself saw the known traffic's errors: successes and probes are DEBUG.
    assert logged == sum(status >= 400 for status in EXPECTED_STATUSES)


def test_promtool_accepts_the_live_output(service: ServiceProcess) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    send(service.port, KNOWN_TRAFFIC)
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(service.metrics_port),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # promtool exits 0 on a clean scrape and 3 with one line per lint problem.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def random_token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def test_series_do_not_grow_with_random_paths_and_odd_methods(service: ServiceProcess) -> None:
    rng = random.Random(3)  # fixed seed: a failure can be replayed
    odd_methods = ["BREW", "PROPFIND", "MKCOL", "LOCK", "SEARCH"]
    # One of each kind first, so that every label combination the run can reach exists.
    warm_up = [("GET", "/warm-up"), ("BREW", "/warm-up"), ("BREW", "/user_hash?user_id=x")]
    assert send(service.port, warm_up) == [404, 404, 405]
    before = set(samples(scrape(service.metrics_port)))

    requests = []
    for _ in range(1_000):
        path = "/" + "/".join(random_token(rng, rng.randint(1, 12)) for _ in range(3))
        path = rng.choice([path, f"{path}?user_id={random_token(rng, 6)}"])
        method = rng.choice([*odd_methods, random_token(rng, 8).upper(), "GET"])
        # An odd method on the real route is a 405, on any other path a 404.
        target = rng.choice([path, "/user_hash"]) if method != "GET" else path
        requests.append((method, target))
    statuses = send(service.port, requests)
    assert set(statuses) <= {404, 405}

    after_text = scrape(service.metrics_port)
    assert set(samples(after_text)) == before
    assert by_response(after_text, RESPONSES)[("other", "unmatched", "4xx")] >= 2
