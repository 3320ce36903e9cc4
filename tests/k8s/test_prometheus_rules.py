"""The PrometheusRule's alerts: valid for promtool, and each one proven to fire and to
stay quiet by promtool unit tests (tests/k8s/prometheus_rules_test.yaml)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from proving.manifests import MONITORING_DIR, REPO, Doc, load_documents
from tests.support.needs import require_tool

RULE = MONITORING_DIR / "prometheusrule.yaml"
UNIT_TESTS = Path(__file__).with_name("prometheus_rules_test.yaml")
# The file name prometheus_rules_test.yaml lists under rule_files.
RULES_FILE_NAME = "user-hasher.rules.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "Debian package prometheus")


def rule_spec() -> Doc:
    (rule,) = load_documents(RULE)
    return rule["spec"]


def alerts() -> list[Doc]:
    return [r for group in rule_spec()["groups"] for r in group["rules"] if "alert" in r]


def run_promtool(promtool: str, spec: Doc, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Writes `spec` where the unit tests expect it, then checks and tests it."""
    (workdir / RULES_FILE_NAME).write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(UNIT_TESTS, workdir / UNIT_TESTS.name)
    check = subprocess.run(
        [promtool, "check", "rules", RULES_FILE_NAME],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in check.stdout
    return subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rules_pass_promtool_check_and_unit_tests(promtool: str, tmp_path: Path) -> None:
    result = run_promtool(promtool, rule_spec(), tmp_path)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fail_when_a_threshold_changes(promtool: str, tmp_path: Path) -> None:
    spec = rule_spec()
    for rule in spec["groups"][0]["rules"]:
        if rule["alert"] == "UserHasherHigh5xxRatio":
            assert "> 0.01" in rule["expr"]
            rule["expr"] = rule["expr"].replace("> 0.01", "> 0.1")
    result = run_promtool(promtool, spec, tmp_path)
    assert result.returncode == 1
    assert "alertname: UserHasherHigh5xxRatio" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for alert in alerts():
        name = alert["alert"]
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name} needs a test where it fires and one where not"


def test_every_alert_tells_on_call_what_and_how_bad() -> None:
    readme = (REPO / "README.md").read_text()
    for alert in alerts():
        assert alert["labels"]["severity"] in {"page", "warning"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]
        assert alert["alert"] in readme, f"README has no runbook note for {alert['alert']}"
