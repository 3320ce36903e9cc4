"""The registry renders what Prometheus expects, whatever the environment holds."""

import hashlib

import aioprometheus
import pytest
from pydantic import SecretStr

from tests.metrics_text import (
    BUILD_INFO,
    DURATION,
    FAMILIES,
    HASHES,
    RESPONSES,
    by_response,
    samples,
    value,
)
from user_hasher.admission import Admission
from user_hasher.hashing import SALT_CANARY_USER_ID as CANARY
from user_hasher.hashing import user_hash
from user_hasher.metrics import DURATION_BUCKETS_SECONDS, Metrics, status_class
from user_hasher.settings import Settings

SHED = "user_hasher_shed_total"


def rendered(metrics: Metrics) -> str:
    return metrics.render([])[0].decode()


def observe(metrics: Metrics, method: str, route: str, status: int, seconds: float) -> None:
    metrics.observe_response({"method": method}, route, status, seconds)


def test_a_fresh_registry_exposes_build_info_and_a_zero_hash_count() -> None:
    settings = Settings(
        APP_VERSION="1.2.3",
        APP_REVISION="0123abc",
        POD_IP="10.0.0.1",
        NODE_IP="10.0.1.1",
        USER_SALT=SecretStr("pepper"),
    )
    text = rendered(Metrics(settings))
    identity = {"app_version": "1.2.3", "pod_ip": "10.0.0.1", "node_ip": "10.0.1.1"}
    # The revision and the salt's fingerprint are on build_info alone: one series per pod.
    build = {
        **identity,
        "revision": "0123abc",
        "salt_fingerprint": user_hash(CANARY, "pepper")[:12],
    }
    assert samples(text) == {
        (BUILD_INFO, frozenset(build.items())): 1.0,
        (HASHES, frozenset(identity.items())): 0.0,
        # Every reason from the start, at zero: rate() sees the first refusal.
        (SHED, frozenset({**identity, "reason": "in_flight"}.items())): 0.0,
        (SHED, frozenset({**identity, "reason": "saturated"}.items())): 0.0,
        (SHED, frozenset({**identity, "reason": "connections"}.items())): 0.0,
    }
    for name in FAMILIES:
        assert f"# TYPE {name} " in text


def build_info_labels(metrics: Metrics) -> dict[str, str]:
    (labels,) = [dict(labels) for name, labels in samples(rendered(metrics)) if name == BUILD_INFO]
    return labels


def test_the_salt_fingerprint_is_the_hash_of_the_canary_user_id() -> None:
    # What an operator can check with one request: /user_hash?user_id=__salt_fingerprint__.
    assert CANARY == "__salt_fingerprint__"
    fingerprint = build_info_labels(Metrics(Settings(USER_SALT=SecretStr("TESTSALT"))))[
        "salt_fingerprint"
    ]
    assert fingerprint == hashlib.sha1(b"__salt_fingerprint__TESTSALT").hexdigest()[:12]


def test_two_salts_give_two_fingerprints_and_one_salt_one() -> None:
    def fingerprint(salt: str) -> str:
        return build_info_labels(Metrics(Settings(USER_SALT=SecretStr(salt))))["salt_fingerprint"]

    assert fingerprint("salt-a") != fingerprint("salt-b")
    assert fingerprint("salt-a") == fingerprint("salt-a")
    assert fingerprint("") == hashlib.sha1(b"__salt_fingerprint__").hexdigest()[:12]


def test_the_salt_never_appears_in_the_metrics() -> None:
    salt = "SUPERSECRETSALT"
    metrics = Metrics(Settings(USER_SALT=SecretStr(salt)))
    observe(metrics, "GET", "/user_hash", 200, 0.001)
    metrics.count_hash()
    assert salt not in rendered(metrics)


@pytest.mark.parametrize(
    "awkward",
    [
        'v1"beta',  # unescaped, the quote would end the label value and break every line
        "v1\nbeta",  # a newline would end the sample line
        "C:\\new\\x",  # unescaped, `\n` would read back as a newline
        "v1\\",  # unescaped, the backslash would escape the closing quote
    ],
)
def test_label_values_from_the_environment_are_escaped(awkward: str) -> None:
    metrics = Metrics(Settings(APP_VERSION=awkward, APP_REVISION=awkward, POD_IP="fe80::1"))
    text = rendered(metrics)
    (labels,) = [dict(labels) for name, labels in samples(text) if name == HASHES]
    assert labels == {"app_version": awkward, "pod_ip": "fe80::1", "node_ip": "unknown"}
    assert build_info_labels(metrics)["revision"] == awkward


def test_every_series_carries_the_identity_labels() -> None:
    identity = {"app_version": "1.2.3", "pod_ip": "10.0.0.1", "node_ip": "10.0.1.1"}
    metrics = Metrics(Settings(APP_VERSION="1.2.3", POD_IP="10.0.0.1", NODE_IP="10.0.1.1"))
    observe(metrics, "GET", "/user_hash", 200, 0.001)
    metrics.count_hash()
    found = samples(rendered(metrics))
    assert {name for name, _ in found} == {
        f"{DURATION}_bucket",
        f"{DURATION}_count",
        f"{DURATION}_sum",
        RESPONSES,
        HASHES,
        BUILD_INFO,
        SHED,
    }
    for name, labels in found:
        assert identity.items() <= dict(labels).items(), name
        # Only build_info names the build and the salt: they would add nothing elsewhere.
        assert ("revision" in dict(labels)) is (name == BUILD_INFO), name
        assert ("salt_fingerprint" in dict(labels)) is (name == BUILD_INFO), name


def test_observations_land_in_their_buckets_and_the_counter_follows() -> None:
    metrics = Metrics(Settings())
    for seconds in (0.0001, 0.0003, 0.0003, 3.0, 60.0):
        observe(metrics, "GET", "/user_hash", 200, seconds)
    observe(metrics, "GET", "unmatched", 404, 0.002)
    found = samples(rendered(metrics))
    identity = {"app_version", "pod_ip", "node_ip"}
    series = {
        (name, frozenset((k, v) for k, v in labels if k not in identity)): value
        for (name, labels), value in found.items()
    }
    labels = {"method": "GET", "route": "/user_hash", "status_class": "2xx"}

    def sample(name: str, **extra: str) -> float:
        return series[(name, frozenset({**labels, **extra}.items()))]

    assert sample(f"{DURATION}_bucket", le="0.00025") == 1
    assert sample(f"{DURATION}_bucket", le="0.0005") == 3
    assert sample(f"{DURATION}_bucket", le="2.5") == 3
    assert sample(f"{DURATION}_bucket", le="5.0") == 4
    assert sample(f"{DURATION}_bucket", le="+Inf") == 5
    assert sample(f"{DURATION}_count") == 5
    assert sample(f"{DURATION}_sum") == pytest.approx(63.0007)
    assert sample(RESPONSES) == 5
    buckets = [name for name, _ in found if name == f"{DURATION}_bucket"]
    assert len(buckets) == 2 * (len(DURATION_BUCKETS_SECONDS) + 1)


# The documented bounds (docs/design.md, Metrics): dashboards and alerts are written against them.
DOCUMENTED_BUCKETS = (
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf",
)  # fmt: skip


def bucket_counts(metrics: Metrics) -> dict[str, float]:
    """le -> cumulative count of the one response series."""
    return {
        dict(labels)["le"]: count
        for (name, labels), count in samples(rendered(metrics)).items()
        if name == f"{DURATION}_bucket"
    }


def test_the_buckets_are_the_documented_ones() -> None:
    metrics = Metrics(Settings())
    observe(metrics, "GET", "/user_hash", 200, 0.001)
    assert tuple(bucket_counts(metrics)) == DOCUMENTED_BUCKETS


@pytest.mark.parametrize("index", range(len(DOCUMENTED_BUCKETS) - 1))
def test_a_duration_on_a_bound_is_in_that_bucket_and_just_above_in_the_next(index: int) -> None:
    # `le` is inclusive: exactly 0.25 s is "within 250 ms", as the latency alert counts it.
    bound = float(DOCUMENTED_BUCKETS[index])
    metrics = Metrics(Settings())
    observe(metrics, "GET", "/user_hash", 200, bound)
    observe(metrics, "GET", "/user_hash", 200, bound * 1.001)
    counts = bucket_counts(metrics)
    assert counts[DOCUMENTED_BUCKETS[index]] == 1
    assert counts[DOCUMENTED_BUCKETS[index + 1]] == 2
    if index:
        assert counts[DOCUMENTED_BUCKETS[index - 1]] == 0


def test_hashes_are_counted() -> None:
    metrics = Metrics(Settings())
    for _ in range(3):
        metrics.count_hash()
    assert value(rendered(metrics), HASHES) == 3


def test_each_service_has_its_own_registry() -> None:
    first, second = Metrics(Settings()), Metrics(Settings())  # the global one would refuse this
    first.count_hash()
    assert value(rendered(first), HASHES) == 1
    assert value(rendered(second), HASHES) == 0
    assert not any(name.startswith("user_hasher") for name in aioprometheus.REGISTRY.collectors)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(200, "2xx"), (204, "2xx"), (301, "3xx"), (404, "4xx"), (499, "4xx")],
        *[(500, "5xx"), (503, "5xx"), (101, "5xx"), (600, "5xx"), (0, "5xx")],
    ],
)
def test_status_class(status: int, expected: str) -> None:
    assert status_class(status) == expected


def test_the_nine_standard_methods_keep_their_names() -> None:
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    metrics = Metrics(Settings())
    for method in methods:
        observe(metrics, method, "unmatched", 404, 0.001)
    assert by_response(rendered(metrics), RESPONSES) == {
        (method, "unmatched", "4xx"): 1 for method in methods
    }


@pytest.mark.parametrize("method", ["BREW", "get", "PROPFIND", "X" * 100])
def test_methods_outside_the_standard_set_are_one_label_value(method: str) -> None:
    metrics = Metrics(Settings())
    observe(metrics, method, "/user_hash", 405, 0.001)
    observe(metrics, "DELETE", "/user_hash", 405, 0.001)
    responses = {
        (labels["method"], labels["route"], labels["status_class"]): v
        for (name, items), v in samples(rendered(metrics)).items()
        if name == RESPONSES and (labels := dict(items))
    }
    assert responses == {("other", "/user_hash", "4xx"): 1, ("DELETE", "/user_hash", "4xx"): 1}


def test_refusals_are_rendered_by_reason_as_the_admission_counts_them() -> None:
    admission = Admission(max_in_flight=1)
    metrics = Metrics(Settings(), shed_counts=admission.shed)
    admission.shed["in_flight"] = 5
    admission.shed["connections"] = 2
    admission.shed["saturated"] = 3
    text = rendered(metrics)
    shed = {
        dict(labels)["reason"]: count
        for (name, labels), count in samples(text).items()
        if name == SHED
    }
    assert shed == {"in_flight": 5.0, "saturated": 3.0, "connections": 2.0}
    assert f"# TYPE {SHED} counter" in text
    help_text = "Requests and connections refused with a 503 to protect the pod, by reason."
    assert f"# HELP {SHED} {help_text}\n" in text
    admission.shed["in_flight"] += 1  # read at each scrape, not copied when built
    assert 'reason="in_flight"} 6' in rendered(metrics)
