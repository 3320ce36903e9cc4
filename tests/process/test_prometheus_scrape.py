"""A real Prometheus server scrapes a real service: PromQL sees what was sent, and every
expression of the Grafana dashboard returns data."""

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proving.prometheus import PrometheusServer
from proving.service import ServiceProcess
from proving.waiting import wait_until
from tests.conftest import SALT
from tests.metrics_text import (
    DASHBOARD,
    EXPECTED_HASHES,
    EXPECTED_RESPONSES,
    EXPECTED_STATUSES,
    IDENTITY_ENV,
    IDENTITY_LABELS,
    KNOWN_TRAFFIC,
    send,
)
from tests.support.needs import require_tool
from tests.support.prometheus_rules import SLO_RECORDING_RULE, write_rule_file

pytestmark = pytest.mark.slow

PROBE_ROUTES = ("/healthz", "/readyz")  # what the dashboard leaves out of traffic panels
DATA_TIMEOUT_SECONDS = 30.0  # scrapes are every second; this is slack for a busy machine
# Grafana replaces $__rate_interval from the scrape interval before sending a query;
# one minute covers this whole test, so every rate() spans the traffic.
RATE_INTERVAL = "1m"
ROUNDS = 2
HASHES_SUM = "sum(user_hasher_hashes_generated_total)"


def dashboard_variables() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {
        variable["name"]: variable["current"]["value"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] != "datasource"
    }
    return {"__rate_interval": RATE_INTERVAL, **variables}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard's variables filled in as Grafana would)."""
    variables = dashboard_variables()

    def fill(match: re.Match[str]) -> str:
        return variables[match.group(1) or match.group(2)]

    return [
        (panel["title"], re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, target["expr"]))
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    ]


@pytest.fixture
def scraped_service(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> Iterator[tuple[ServiceProcess, PrometheusServer]]:
    binary = require_tool("prometheus", "Debian package prometheus")
    service = start_service(USER_SALT=SALT, **IDENTITY_ENV)
    # The target labels Kubernetes service discovery would add (namespace, pod).
    target_labels = {"namespace": dashboard_variables()["namespace"], "pod": "user-hasher-test-0"}
    static_target = {"targets": [f"127.0.0.1:{service.metrics_port}"], "labels": target_labels}
    config = {
        # The SLO panels read recording rules, as they do where the PrometheusRule runs.
        "rule_files": [str(write_rule_file(tmp_path))],
        "scrape_configs": [{"job_name": "user_hasher", "static_configs": [static_target]}],
    }
    prometheus = PrometheusServer(binary, tmp_path, config)
    try:
        prometheus.start()
        # Twice, with a scrape in between: a series is born with the first request that
        # needs it, and rate() sees only increases after a series' first sample.
        for sent_before in range(ROUNDS):
            assert send(service.port, KNOWN_TRAFFIC) == EXPECTED_STATUSES
            expected = [float(EXPECTED_HASHES * (sent_before + 1))]
            assert wait_until(
                lambda expected=expected: prometheus.values(HASHES_SUM) == expected,
                DATA_TIMEOUT_SECONDS,
            ), prometheus.log
        assert wait_until(lambda: prometheus.values(SLO_RECORDING_RULE), DATA_TIMEOUT_SECONDS), (
            prometheus.log
        )
        yield service, prometheus
    finally:
        prometheus.stop()


def test_promql_sees_the_known_traffic(
    scraped_service: tuple[ServiceProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped_service
    assert prometheus.values(HASHES_SUM) == [ROUNDS * EXPECTED_HASHES]

    probes = "|".join(PROBE_ROUTES)
    by_class = {
        item["metric"]["status_class"]: float(item["value"][1])
        for item in prometheus.query(
            f'sum by (status_class) (user_hasher_http_responses_total{{route!~"{probes}"}})'
        )
    }
    expected: Counter[str] = Counter()
    for (_, route, status_class), count in EXPECTED_RESPONSES.items():
        if route not in PROBE_ROUTES:
            expected[status_class] += ROUNDS * count
    assert by_class == dict(expected)

    (p99,) = prometheus.values(
        "histogram_quantile(0.99, sum by (le) "
        "(rate(user_hasher_http_request_duration_seconds_bucket[1m])))"
    )
    assert math.isfinite(p99)
    assert 0 < p99 <= 5.0  # the largest finite bucket bound

    (build_info,) = prometheus.query("user_hasher_build_info")
    assert IDENTITY_LABELS.items() <= build_info["metric"].items()


def test_every_dashboard_expression_returns_data(
    scraped_service: tuple[ServiceProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped_service
    expressions = dashboard_expressions()
    assert len(expressions) >= 6
    for title, expr in expressions:
        assert "$" not in expr, f"{title}: unresolved variable in {expr}"
        values = prometheus.values(expr)
        assert values, f"{title}: no data for {expr}"
        assert all(math.isfinite(v) for v in values), f"{title}: {expr} gave {values}"


def test_scrape_health_as_prometheus_sees_it(
    scraped_service: tuple[ServiceProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped_service
    assert prometheus.values("up") == [1.0]
    (samples_scraped,) = prometheus.values("scrape_samples_scraped")
    print(f"Prometheus scraped {samples_scraped:.0f} samples per scrape")
    # 7 response series x (15 buckets + count + sum + 1 counter) + hashes + build_info,
    # plus the readiness polls of start-up: bounded and small.
    assert 100 <= samples_scraped <= 200
