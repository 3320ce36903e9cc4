"""The Grafana dashboard is well-formed and asks about the metrics this service exposes and
the SLO recording rules of k8s/monitoring/prometheusrule.yaml. The SLO row's arithmetic is
checked here with promtool against those rules; that every expression returns data from a
real Prometheus scraping the real service is in tests/process/test_prometheus_scrape.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proving.manifests import MONITORING_DIR
from tests.metrics_text import DASHBOARD, FAMILIES
from tests.support.needs import require_tool
from tests.support.prometheus_rules import recorded_names, rule_groups

# The families and their histogram series, plus Prometheus's own per-target `up`.
KNOWN_METRICS = {
    *FAMILIES,
    *(
        f"user_hasher_http_request_duration_seconds_{suffix}"
        for suffix in ("bucket", "sum", "count")
    ),
    "up",
}
PROMQL_WORDS = {"sum", "rate", "or", "vector", "histogram_quantile", "count", "on", "group_left"}
SLO_ROW = "SLOs over 30 days"
NAMESPACE = "user-hasher"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def metric_names(expr: str) -> set[str]:
    # Strip matchers, strings, ranges and grouping; left: metric names and PromQL.
    bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^]]*\]|\b(by|on|group_left) \([^)]*\)', "", expr)
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS


def panels_below(row_title: str) -> list[dict[str, Any]]:
    """The panels Grafana shows under the row with this title (up to the next row)."""
    below: list[dict[str, Any]] = []
    inside = False
    for panel in sorted(
        dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])
    ):
        if panel["type"] == "row":
            inside = panel["title"] == row_title
        elif inside:
            below.append(panel)
    return below


def test_panels_query_only_exposed_metrics_through_the_datasource_variable() -> None:
    board = dashboard()
    assert (board["uid"], board["title"]) == ("user-hasher", "user_hasher")
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    titles = [panel["title"] for panel in board["panels"]]
    assert len(titles) == len(set(titles))
    known = KNOWN_METRICS | recorded_names()
    for panel in board["panels"]:
        if panel["type"] == "row":
            assert panel["targets"] == []
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names <= known, f"{panel['title']}: unknown names {names - known}"
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


def test_the_on_call_panels_are_there() -> None:
    expressions = " ".join(
        target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]
    )
    assert "sum by (status_class) (rate(user_hasher_http_responses_total" in expressions
    assert 'status_class="5xx"' in expressions
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in expressions
    assert "rate(user_hasher_hashes_generated_total" in expressions
    assert "sum by (pod) (up{" in expressions


def test_the_slo_row_reads_every_recorded_window_and_the_budget() -> None:
    slo_panels = panels_below(SLO_ROW)
    assert [panel["title"] for panel in slo_panels] == [
        "SLI: availability and latency (5m)",
        "Error budget remaining (30 days)",
        "Burn rate: availability",
        "Burn rate: latency",
    ]
    used = set().union(*(metric_names(t["expr"]) for panel in slo_panels for t in panel["targets"]))
    assert used == {
        "slo:sli_error:ratio_rate5m",
        "slo:objective:ratio",
        "slo:error_budget_remaining:ratio",
        "slo:error_budget:ratio",
    }
    # The burn-rate panels select the windows by name: every ratio the rules record.
    windows = {name for name in recorded_names() if name.startswith("slo:sli_error:ratio_rate")}
    for panel in slo_panels[2:]:
        (target,) = panel["targets"]
        pattern = re.search(r'__name__=~"([^"]+)"', target["expr"])
        assert pattern is not None
        assert {name for name in windows if re.fullmatch(pattern.group(1), name)} == windows


def promtool_expectation(expr: str, samples: list[tuple[str, float]]) -> dict[str, Any]:
    """The panel's expression as Grafana sends it; promtool compares values exactly, so
    they are rounded to 4 decimals (which drops the metric name, as any function does)."""
    filled = expr.replace("$namespace", NAMESPACE)
    return {
        "expr": f"round(({filled}), 0.0001)",
        "eval_time": "1h",
        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
    }


def test_the_slo_row_shows_the_sli_the_budget_and_the_burn_rates(tmp_path: Path) -> None:
    """An hour of 1 % 5xx and 2 % slower than 50 ms: 10x and 2x burns in every window."""
    promtool = require_tool("promtool", "Debian package prometheus")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    panels = {panel["title"]: panel for panel in panels_below(SLO_ROW)}
    sli, objective = (t["expr"] for t in panels["SLI: availability and latency (5m)"]["targets"])
    (remaining,) = (t["expr"] for t in panels["Error budget remaining (30 days)"]["targets"])
    (availability_burn,) = (t["expr"] for t in panels["Burn rate: availability"]["targets"])
    (latency_burn,) = (t["expr"] for t in panels["Burn rate: latency"]["targets"])
    windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]

    def by_slo(availability: float, latency: float) -> list[tuple[str, float]]:
        return [
            (f'{{namespace="{NAMESPACE}", slo="availability"}}', availability),
            (f'{{namespace="{NAMESPACE}", slo="latency"}}', latency),
        ]

    def burns(slo: str, rate: float) -> list[tuple[str, float]]:
        return [(f'{{namespace="{NAMESPACE}", slo="{slo}", window="{w}"}}', rate) for w in windows]

    selector = f'namespace="{NAMESPACE}", route="/user_hash"'
    responses = f"user_hasher_http_responses_total{{{selector}, status_class="
    durations = "user_hasher_http_request_duration_seconds"
    unit_test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{responses}"2xx"}}',
                        "values": "0+990x60",
                    },
                    {
                        "series": f'{responses}"5xx"}}',
                        "values": "0+10x60",
                    },
                    {
                        "series": f"{durations}_count{{{selector}}}",
                        "values": "0+1000x60",
                    },
                    {
                        "series": f'{durations}_bucket{{{selector}, le="0.05"}}',
                        "values": "0+980x60",
                    },
                ],
                "promql_expr_test": [
                    promtool_expectation(
                        sli,
                        [
                            (f'{{namespace="{NAMESPACE}", slo="availability", window="5m"}}', 0.99),
                            (f'{{namespace="{NAMESPACE}", slo="latency", window="5m"}}', 0.98),
                        ],
                    ),
                    promtool_expectation(objective, by_slo(0.999, 0.99)),
                    # 1 % failed of a 0.1 % budget: spent 10 times over; 2 % of 1 %: twice.
                    promtool_expectation(remaining, by_slo(-9, -1)),
                    promtool_expectation(availability_burn, burns("availability", 10)),
                    promtool_expectation(latency_burn, burns("latency", 2)),
                ],
            }
        ],
    }
    (tmp_path / "dashboard_test.yaml").write_text(yaml.safe_dump(unit_test, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", "dashboard_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("panel_title", ["Burn rate: availability", "Burn rate: latency"])
def test_burn_rate_panels_mark_the_alerting_factors(panel_title: str) -> None:
    spec = yaml.safe_load((MONITORING_DIR / "rules" / "spec.yaml").read_text())
    factors = {pair["factor"] for burn in spec["burn_alerts"] for pair in burn["windows"]}
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == panel_title]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, *sorted(factors)]
