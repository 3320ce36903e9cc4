"""`make rollout-check` on the session cluster, as on any real one: the load generator as a
Job in the app's namespace, reaching the Service by its DNS name through CoreDNS and
kube-proxy, under the enforced NetworkPolicy, while `kubectl rollout restart` runs.

The policy engine here is kube-router (the bundle's stand-in; docs/testing.md, "Zero downtime
from inside a cluster, in CI"). Around a pod change it rejects some of the Job's packets to app
pods, and once (1 of 12,000 requests, 1 of 9 runs) a new connection was refused. A rejection by the
policy engine reaches the client as an ICMP port unreachable for its SYN; an app that is not
listening answers with a TCP reset instead. Both are "connection refused" to the client, so
this test captures the ICMP on the pod bridge, and excuses a refused request only when the
rejection of that very connection's SYN was captured: the ICMP message quotes the SYN's source
address and port, and the check's summary names the address each failed request's connection
left from (proving/capture.py). Every other failure fails the test, and `make rollout-check`
itself stays strict (it exits 1 either way)."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proving.capture import REJECTED_SYN_FILTER, Capture, rejected_connections
from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from tests.cluster.conftest import NAMESPACE, DeployedApp, report, wait_steady
from tests.support.needs import require_tool

SUMMARY = REPO / "build" / "rollout-check" / "summary.json"
# 10 s steady, a rollout of about 20 s here, and at least 10 s after it.
RATE, SECONDS = 200, 60
# A rejected SYN's ICMP, sent to a pod but not to the node.
POLICY_REJECTED_SYN = f"{REJECTED_SYN_FILTER} and dst net 10.244.0.0/24 and not dst host 10.244.0.1"
CAPTURE_LIMIT = 10_000  # packets; tcpdump stops by itself after them


@pytest.fixture
def policy_rejections(tmp_path: Path) -> Iterator[Capture]:
    """Each SYN the policy engine rejects, captured on the pod bridge while the test runs."""
    require_tool("tcpdump", "Debian package tcpdump; it tells rejections apart")
    with Capture("cni0", POLICY_REJECTED_SYN, tmp_path, CAPTURE_LIMIT) as capture:
        yield capture


def test_make_rollout_check_loses_no_request_from_inside_the_cluster(
    cluster: LocalCluster,
    app: DeployedApp,
    steady: list[dict[str, Any]],
    policy_rejections: Capture,
) -> None:
    pods_before = {pod["metadata"]["name"] for pod in steady}
    SUMMARY.unlink(missing_ok=True)
    started = time.monotonic()

    result = cluster.make(
        "rollout-check", check=False, CHECK_RATE=str(RATE), CHECK_SECONDS=str(SECONDS)
    )

    seconds = time.monotonic() - started
    time.sleep(1)  # the last packets reach the file
    rejected_syns = rejected_connections(policy_rejections.text())
    assert SUMMARY.exists(), result.stdout[-4000:]
    data = json.loads(SUMMARY.read_text())
    (scenario,) = data["scenarios"]
    if data["failed"] == 0:
        assert result.returncode == 0, result.stdout[-4000:]
        assert "RESULT: PASS" in result.stdout
    else:
        # Every failed request is listed, each a new connection refused whose own SYN the
        # policy engine was captured rejecting (the same source address and port).
        assert len(data["failures"]) == data["failed"], result.stdout[-4000:]
        unexcused = [
            failure
            for failure in data["failures"]
            if failure["error"] != "refused"
            or failure["client"] != "new-connection"
            or failure["source"] not in rejected_syns
        ]
        assert unexcused == [], (unexcused, rejected_syns, result.stdout[-4000:])
        assert result.returncode != 0, "make rollout-check passed with failed requests"
        report(
            f"make rollout-check: {data['failed']} new connection(s) refused by the policy "
            f"engine (kube-router), not by the app, each matched to its rejected SYN: "
            f"{[failure['source'] for failure in data['failures']]}"
        )
    assert data["target"].startswith(f"http://user-hasher.{NAMESPACE}.svc.cluster.local.:80 ")
    # The open loop kept its schedule from inside the cluster: all its requests were sent.
    assert data["requests"] == RATE * SECONDS
    # A rollout of 3 pods takes 15 s or more here (5 s minReadySeconds each).
    assert data["requests_while_rolling"] >= RATE * 15
    assert set(scenario["requests_by_client"]) == {"keep-alive", "new-connection"}
    gates = {gate["name"]: gate["passed"] for gate in data["gates"]}
    assert [name for name, passed in gates.items() if not passed] in ([], ["0 failed requests"])
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
        f"the {data['rollout_s']:.1f} s rollout restart, {data['failed']} failed; "
        f"SYNs the policy engine rejected: {len(rejected_syns)}; p50/p99 steady "
        f"{scenario['steady']['p50_ms']}/{scenario['steady']['p99_ms']} ms, during "
        f"{scenario['during']['p50_ms']}/{scenario['during']['p99_ms']} ms"
    )
