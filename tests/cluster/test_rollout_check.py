"""`make rollout-check` on the session cluster, as on any real one: the load generator as a
Job in the app's namespace, reaching the Service by its DNS name through CoreDNS and
kube-proxy, under the enforced NetworkPolicy, while `kubectl rollout restart` runs."""

import json
import time
from collections.abc import Callable
from typing import Any

from tests.cluster.conftest import NAMESPACE, DeployedApp, report, wait_steady
from tests.k8s.manifests import REPO
from tests.support.local_cluster import LocalCluster

SUMMARY = REPO / "build" / "rollout-check" / "summary.json"
# 10 s steady, a rollout of about 20 s here, and at least 10 s after it.
RATE, SECONDS = 200, 60


def test_make_rollout_check_loses_no_request_from_inside_the_cluster(
    cluster: LocalCluster,
    app: DeployedApp,
    steady: list[dict[str, Any]],
    run_make: Callable[..., Any],
) -> None:
    pods_before = {pod["metadata"]["name"] for pod in steady}
    SUMMARY.unlink(missing_ok=True)
    started = time.monotonic()

    result = run_make("rollout-check", CHECK_RATE=str(RATE), CHECK_SECONDS=str(SECONDS))

    seconds = time.monotonic() - started
    assert "RESULT: PASS" in result.stdout, result.stdout[-4000:]
    data = json.loads(SUMMARY.read_text())
    (scenario,) = data["scenarios"]
    assert data["target"].startswith(f"http://user-hasher.{NAMESPACE}.svc.cluster.local.:80 ")
    assert data["failed"] == 0
    # The open loop kept its schedule from inside the cluster: all its requests were sent.
    assert data["requests"] == RATE * SECONDS
    # A rollout of 3 pods takes 15 s or more here (5 s minReadySeconds each).
    assert data["requests_while_rolling"] >= RATE * 15
    assert set(scenario["requests_by_client"]) == {"keep-alive", "new-connection"}
    assert all(gate["passed"] for gate in data["gates"])
    # The Job and its ConfigMap are gone; every pod of the app was replaced.
    leftovers = cluster.kubectl(
        "get", "jobs,configmaps", "--namespace", NAMESPACE, "-o", "name"
    ).stdout
    assert "rollout-check" not in leftovers
    pods_after = {pod["metadata"]["name"] for pod in wait_steady(cluster)}
    assert not pods_before & pods_after
    report(
        f"make rollout-check (Job in the cluster, by DNS name, NetworkPolicy on): {seconds:.1f} s; "
        f"{data['requests']:,} requests at {RATE}/s, {data['requests_while_rolling']:,} during "
        f"the {data['rollout_s']:.1f} s rollout restart, 0 failed; p50/p99 steady "
        f"{scenario['steady']['p50_ms']}/{scenario['steady']['p99_ms']} ms, during "
        f"{scenario['during']['p50_ms']}/{scenario['during']['p99_ms']} ms"
    )
