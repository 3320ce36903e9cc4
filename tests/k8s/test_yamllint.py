"""yamllint, with the repo's .yamllint.yaml, over every YAML file of the Kubernetes work."""

import subprocess
import sys
from pathlib import Path

from proving.manifests import REPO

LINTED = [
    "k8s",
    "user_hasher.yaml",
    "tests/k8s/prometheus_rules_test.yaml",
    "tests/k8s/prometheus_rules_slow_burn_test.yaml",
    "rehearsal/rollout-check-job.yaml",
    ".yamllint.yaml",
]


def yamllint(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "--format", "parsable", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kubernetes_yaml_is_lint_clean() -> None:
    result = yamllint(*LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_config_still_catches_mistakes(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("metadata:\n  name: a\n  name: b\nspec:   {replicas: yes}\n")
    result = yamllint(str(broken))
    assert result.returncode == 1
    assert "duplication of key" in result.stdout
    assert "truthy value" in result.stdout
