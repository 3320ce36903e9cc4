"""Rolling updates behind a real load balancer, the way a Service sees them: the rehearsal's
local target (`python -m rehearsal --mode local`, rehearsal/local.py), run once for real.

HAProxy plays kube-proxy: it health-checks /readyz every 200 ms and stops routing to a
backend that fails twice. Retries are off, so every request the proxy cannot serve reaches
the client as a failure. Two pods are replaced one at a time, as `maxSurge: 1,
maxUnavailable: 0` would, under the same open-loop load, the same steady stretch and event
window and the same gates as the rehearsal on the cluster and `make rollout-check`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from proving.manifests import REPO
from rehearsal.local import SALT
from tests.support.needs import require_tool
from tests.support.plots import red_pixels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The CLI's output folder, its summary.json and its stdout."""
    haproxy = require_tool("haproxy", "apt-get install haproxy")
    out = tmp_path_factory.mktemp("rehearsal")
    finished = subprocess.run(
        [sys.executable, "-m", "rehearsal", "--mode", "local", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PATH": f"{Path(haproxy).parent}:{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(finished.stdout, finished.stderr)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), finished.stdout


def scenarios(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {scenario["name"]: scenario for scenario in data["scenarios"]}


def test_rollouts_behind_a_load_balancer_drop_nothing(
    rehearsed: tuple[Path, dict[str, Any], str],
) -> None:
    _, data, stdout = rehearsed
    assert stdout.splitlines()[-1] == "RESULT: PASS"
    by_name = scenarios(data)
    assert {name: s["role"] for name, s in by_name.items()} == {
        "rollout": "rollout",
        "SIGKILL": "fault",
        "rollout DRAIN_SECONDS=0": "rollout",
        "rollout without drain": "negative-control",
    }
    for name in ("rollout", "rollout DRAIN_SECONDS=0"):
        rollout = by_name[name]
        assert rollout["failed"] == 0
        assert min(rollout["requests_by_client"].values()) > 0
        assert rollout["during"]["requests"] > 0
        # Both old pods were sent SIGTERM, and the proxy took each out of rotation.
        assert len(rollout["sigterm_to_not_ready_s"]) == 2
        assert all(seconds is not None for seconds in rollout["sigterm_to_not_ready_s"].values())
    assert by_name["rollout"]["revisions_seen"] == ["local-1", "local-2"]
    gates = {gate["name"]: gate for gate in data["gates"]}
    exited = gates["every pod sent SIGTERM exited 0 (its graceful shutdown)"]
    assert exited["passed"], exited["detail"]
    assert data["passed"] is True


def test_negative_control_without_a_drain_the_load_balancer_drops_requests(
    rehearsed: tuple[Path, dict[str, Any], str],
) -> None:
    """The same roll with DRAIN_SECONDS=0: the pod stops listening before the proxy notices,
    so requests fail. This is what the drain is for, and proves the zeros above are not the
    checker's blindness. A SIGKILL, which no drain can help, loses requests too."""
    _, data, _ = rehearsed
    by_name = scenarios(data)
    for name in ("rollout without drain", "SIGKILL"):
        assert by_name[name]["failed"] > 0
        # The proxy answers 503 for a backend that refused; a cut connection is empty.
        assert set(by_name[name]["errors_by_kind"]) <= {"5xx", "empty-response", "reset"}


def test_the_outputs_show_the_run(rehearsed: tuple[Path, dict[str, Any], str]) -> None:
    out, _, _ = rehearsed
    assert imread(out / "rollout.png").shape[:2] == (750, 1400)
    assert red_pixels(out / "rollout.png") > 0
    # Every pod's log and the proxy's are kept.
    logs = {path.name: path.read_text() for path in (out / "logs").iterdir()}
    assert {"haproxy.log", "pod-0.log", "pod-1.log"} <= set(logs)
    # Whatever happened to them, no pod logged the salt or a query string.
    for name, text in logs.items():
        assert SALT not in text, name
        assert "user_id=" not in text, name
