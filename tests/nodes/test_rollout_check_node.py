"""`make rollout-check NODE=m02` on the three-node cluster (after the rehearsal, which took
m03 away): the load generator as a Job in the app's namespace, kept off m02, reaching the
Service by its DNS name while m02 is cordoned, drained and uncordoned; 0 failed, the pods
that ran on m02 replaced, the node schedulable again, the warning printed."""

import json
import time

from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from tests.nodes.conftest import report

SUMMARY = REPO / "build" / "rollout-check" / "summary.json"
RATE, SECONDS = 100, 50
NODE = "m02"


def test_make_rollout_check_drains_a_node_without_a_failed_request(
    node_cluster: LocalCluster,
) -> None:
    namespaces = node_cluster.get_json("namespaces")["items"]
    if "user-hasher" not in {ns["metadata"]["name"] for ns in namespaces}:
        node_cluster.make("minikube-deploy")  # run alone, without the rehearsal before it
    deployed = node_cluster.get_json("pods", "--namespace", "user-hasher")["items"]
    if not any(pod["spec"].get("nodeName") == NODE for pod in deployed):
        # The rehearsal left no app pod on m02: move one there, as a drain needs one.
        node_cluster.kubectl("cordon", "minikube")
        node_cluster.kubectl("rollout", "restart", "deployment/user-hasher", "-n", "user-hasher")
        node_cluster.kubectl(
            "rollout",
            "status",
            "deployment/user-hasher",
            "-n",
            "user-hasher",
            "--timeout=240s",
            timeout=300,
        )
        node_cluster.kubectl("uncordon", "minikube")
    SUMMARY.unlink(missing_ok=True)
    started = time.monotonic()
    result = node_cluster.make(
        "rollout-check", check=False, NODE=NODE, CHECK_RATE=str(RATE), CHECK_SECONDS=str(SECONDS)
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"WARNING: --node {NODE} cordons and drains node {NODE}" in result.stdout
    data = json.loads(SUMMARY.read_text())
    assert data["node"] == NODE
    assert data["failed"] == 0, data["gates"]
    assert data["requests"] == RATE * SECONDS
    (scenario,) = data["scenarios"]
    assert scenario["name"] == f"drain {NODE}"
    node = node_cluster.get_json("node", NODE)
    assert not node["spec"].get("unschedulable"), "the node was left cordoned"
    report(
        f"make rollout-check NODE={NODE}: {seconds:.1f} s; {data['requests']:,} requests at "
        f"{RATE}/s, {data['failed']} failed; the drain took {data['rollout_s']:.1f} s; p50/p99 "
        f"during {scenario['during']['p50_ms']}/{scenario['during']['p99_ms']} ms"
    )
