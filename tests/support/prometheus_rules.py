"""The PrometheusRule's rule groups as a rule file a test Prometheus loads (`rule_files`).

The Prometheus Operator turns the object's `spec` into exactly such a file; here each group
is evaluated every `evaluation_interval` (a test scrapes every second and cannot wait for
the production interval) so recording rules have data within seconds of the first scrapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proving.manifests import MONITORING_DIR, load_documents

PROMETHEUS_RULE = MONITORING_DIR / "prometheusrule.yaml"
# A recording rule every SLO panel of the dashboard reads; present once the rules ran.
SLO_RECORDING_RULE = "slo:error_budget_remaining:ratio"


def rule_groups() -> list[dict[str, Any]]:
    (rule,) = load_documents(PROMETHEUS_RULE)
    return rule["spec"]["groups"]


def recorded_names() -> set[str]:
    """Every series the recording rules write (what a live check expects data for)."""
    return {record for record, _ in recording_rules()}


def recording_rules() -> list[tuple[str, dict[str, str]]]:
    """Each recording rule as (record, its labels): a selector its series must match."""
    return [
        (rule["record"], rule.get("labels", {}))
        for group in rule_groups()
        for rule in group["rules"]
        if "record" in rule
    ]


def alert_names() -> set[str]:
    return {r["alert"] for group in rule_groups() for r in group["rules"] if "alert" in r}


def write_rule_file(directory: Path, evaluation_interval: str = "1s") -> Path:
    """Writes the rules to `directory`; the path to put under `rule_files`."""
    groups = [{**group, "interval": evaluation_interval} for group in rule_groups()]
    path = directory / "user-hasher.rules.yaml"
    path.write_text(json.dumps({"groups": groups}))  # JSON is YAML
    return path
