"""checkov over user_hasher.yaml: no failed check, and each skipped one carries its reason
beside the resource (a `checkov.io/skipN: CHECK=reason` annotation).

It scans user_hasher.yaml, the k8s/ fragments joined, as `kubectl apply -f` would take it."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proving.manifests import MANIFEST, REPO

CHECKOV = REPO / ".venv-checkov/bin/checkov"
# Installing checkov into its venv takes ~35 s on a fresh machine; a no-op after that.
INSTALL_TIMEOUT_SECONDS = 900
# A scan of k8s/ takes ~5 s.
SCAN_TIMEOUT_SECONDS = 300
# Accepted findings (see the annotations in k8s/base/50-deployment.yaml).
EXPECTED_SKIPS = {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"}


@pytest.fixture(scope="module")
def checkov() -> Path:
    """`make checkov-venv`: the pinned checkov in its own venv (requirements/checkov.lock)."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "checkov-venv"],
        cwd=REPO,
        check=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )
    return CHECKOV


def scan(checkov: Path, directory: Path) -> dict[str, Any]:
    # --skip-download: never call the vendor's API (there is no network for it anyway).
    result = subprocess.run(
        [
            str(checkov),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT_SECONDS,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    report = json.loads(result.stdout)
    print(f"checkov {directory.name}: {report['summary']}")
    return report


def manifest_only(tmp_path: Path, text: str) -> Path:
    """A directory holding just the manifest (checkov scans directories)."""
    directory = tmp_path / "manifest"
    directory.mkdir()
    (directory / MANIFEST.name).write_text(text)
    return directory


def test_checkov_is_clean(checkov: Path, tmp_path: Path) -> None:
    report = scan(checkov, manifest_only(tmp_path, MANIFEST.read_text()))
    summary = report["summary"]
    assert summary["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 80
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 40, f"{check['check_id']} is skipped without a real reason"


def test_checkov_catches_a_weakened_deployment(checkov: Path, tmp_path: Path) -> None:
    text = MANIFEST.read_text()
    assert text.count("readOnlyRootFilesystem: true") == 1
    weakened = text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")

    report = scan(checkov, manifest_only(tmp_path, weakened))
    assert {c["check_id"] for c in report["results"]["failed_checks"]} == {"CKV_K8S_22"}
