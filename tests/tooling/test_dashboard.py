"""The Grafana dashboard is well-formed and asks about the metrics this service exposes.
(That each expression returns data from a real Prometheus is in test_prometheus_server.py.)"""

import json
import re

from tests.metrics_text import DASHBOARD, FAMILIES

# The families and their histogram series, plus Prometheus's own per-target `up`.
KNOWN_NAMES = {
    *FAMILIES,
    *(
        f"user_hasher_http_request_duration_seconds_{suffix}"
        for suffix in ("bucket", "sum", "count")
    ),
    "up",
}
PROMQL_WORDS = {"sum", "rate", "or", "vector", "histogram_quantile", "count"}


def test_panels_query_only_exposed_metrics_through_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["title"]) == ("user-hasher", "user_hasher")
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Strip matchers, strings, ranges and grouping; left: metric names and PromQL.
            bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^]]*\]|\bby \([^)]*\)', "", target["expr"])
            names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS
            assert names <= KNOWN_NAMES, f"{panel['title']}: unknown names {names - KNOWN_NAMES}"


def test_the_on_call_panels_are_there() -> None:
    expressions = " ".join(
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    )
    assert "sum by (status_class) (rate(user_hasher_http_responses_total" in expressions
    assert 'status_class="5xx"' in expressions
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in expressions
    assert "rate(user_hasher_hashes_generated_total" in expressions
    assert "sum by (pod) (up{" in expressions
