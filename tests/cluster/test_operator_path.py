"""The operator's path, walked as the README's user walks it, on a node as full as a default
minikube's (the session cluster: minikube's control-plane requests reserved, a metrics-server
stand-in running): `make minikube-deploy`, `make smoke`, `make rollout` and `make undeploy`
with only docker, kubectl, minikube (the stand-in), make, bash, curl and the basic text tools
on PATH (no Python, no git), and `make rollout-check` (a verification tool, run with the dev
venv) between them. Every step works, no pod ever waits unschedulable, and the check loses
no request. It runs last: the cluster is empty again after test_undeploy.py."""

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proving.kubectl import WatchEvent
from proving.local_cluster import MAKE_TIMEOUT_SECONDS, LocalCluster
from proving.manifests import REPO, package_version
from proving.minikube_stand_in import operator_path
from tests.cluster.conftest import APP, NAMESPACE, report, running_image

CHECK_SUMMARY = REPO / "build" / "rollout-check" / "summary.json"
# 10 s steady, a rollout of about 20 s here, and at least 10 s after it.
CHECK_RATE, CHECK_SECONDS = 200, 60


@dataclass(frozen=True)
class Step:
    stdout: str
    seconds: float


def unschedulable(events: list[WatchEvent]) -> dict[str, str]:
    """Each pod the scheduler could not place at some point, with its reason's message."""
    found = {}
    for event in events:
        for condition in event.object.get("status", {}).get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                found[event.object["metadata"]["name"]] = condition.get("message", "")
    return found


@pytest.fixture
def operator_make(cluster: LocalCluster, tmp_path: Path) -> Any:
    """make TARGET as the operator runs it: their PATH and the cluster's kubeconfig, nothing
    else of this machine's environment. stdout and stderr together in .stdout."""
    env = {
        "PATH": operator_path(tmp_path / "bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "KUBECONFIG": str(cluster.kubeconfig),
        # Only the minikube stand-in reads it: which local cluster it stands for.
        "KC_STATE": str(cluster.state),
    }

    def run(target: str) -> Step:
        started = time.monotonic()
        result = subprocess.run(
            ["make", "--no-print-directory", target],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=MAKE_TIMEOUT_SECONDS,
        )
        assert result.returncode == 0, f"make {target}:\n{result.stdout[-6000:]}"
        return Step(result.stdout, time.monotonic() - started)

    return run


def test_the_operator_path_on_a_default_minikube(cluster: LocalCluster, operator_make: Any) -> None:
    (node,) = cluster.get_json("nodes")["items"]
    allocatable = node["status"]["allocatable"]["cpu"]
    stand_in = cluster.pods("kube-system", "app=metrics-server-stand-in")
    assert [pod["status"]["phase"] for pod in stand_in] == ["Running"]
    assert cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, (
        "the app is still deployed: this test walks the path from an empty cluster"
    )

    with cluster.watch("pods", NAMESPACE) as pods:
        deploy = operator_make("minikube-deploy")
        ref = running_image(cluster)
        assert ref.startswith(f"{APP}:{package_version()}-")
        assert f"deploy: {APP} runs {ref} on 3 replicas" in deploy.stdout
        assert "minikube stand-in:" in deploy.stdout

        smoke = operator_make("smoke")
        assert "smoke: PASS http://127.0.0.1:" in smoke.stdout

        rollout = operator_make("rollout")
        assert f"deploy: {ref} runs already; restarting its pods" in rollout.stdout

        CHECK_SUMMARY.unlink(missing_ok=True)
        check = cluster.make(
            "rollout-check",
            check=False,
            CHECK_RATE=str(CHECK_RATE),
            CHECK_SECONDS=str(CHECK_SECONDS),
        )
        assert CHECK_SUMMARY.exists(), check.stdout[-4000:]
        summary = json.loads(CHECK_SUMMARY.read_text())

        undeploy = operator_make("undeploy")
        assert f'namespace "{NAMESPACE}" deleted' in undeploy.stdout
        events = pods.snapshot()

    waiting = unschedulable(events)
    report(
        f"operator path (node allocatable cpu {allocatable}, metrics-server stand-in 100m): "
        f"make minikube-deploy {deploy.seconds:.1f} s, smoke {smoke.seconds:.1f} s, "
        f"rollout {rollout.seconds:.1f} s, rollout-check {summary['requests']:,} requests "
        f"({summary['failed']} failed, rollout {summary['rollout_s']:.1f} s), "
        f"undeploy {undeploy.seconds:.1f} s; pods ever unschedulable: {len(waiting)}"
    )
    assert waiting == {}, f"pods waited Pending, unschedulable: {waiting}"
    assert summary["failed"] == 0, check.stdout[-4000:]
    assert check.returncode == 0, check.stdout[-4000:]
    assert summary["requests"] == CHECK_RATE * CHECK_SECONDS
