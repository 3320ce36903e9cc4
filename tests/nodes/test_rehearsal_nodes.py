"""The node rehearsal (`python -m rehearsal --nodes --attach`) on the three-node cluster: one
open-loop load through the Service's ClusterIP while nodes are drained, upgraded in turn,
their kube-proxy and the API server stopped (the controller manager restarted as leader
election would), and one node dies. Its gates: 0 failed in every drain, upgrade, pause (their
returns included) and the rollout, the PDB never violated, the pods spread over nodes and
zones as deployed, after a scale-up and after a rollout; for the node death, failures only
toward the dead node's pod, a lost share at most its share of endpoints, the window ending
in time and its pod replaced within the toleration. Its outputs are checked too."""

import json
import subprocess
import sys
import time

from matplotlib.image import imread

from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from tests.nodes.conftest import report

OUT = REPO / "build" / "rehearsal-nodes"
# About 6 minutes of load plus a deploy here; bounded on a busy machine.
REHEARSAL_TIMEOUT_SECONDS = 900
SCENARIOS = {
    "drain m02": "disruption",
    "cluster upgrade": "disruption",
    "scale 3 -> 6 -> 3": "disruption",
    "kube-proxy stopped 30 s": "disruption",
    "API server stopped 60 s": "disruption",
    "API server stopped mid-rollout": "rollout",
    "node death m03": "fault",
}
# What a client sees from a pod whose node died: its SYNs and requests unanswered.
NODE_DEATH_ERRORS = {"timeout", "unreachable"}


def test_the_node_rehearsal_loses_nothing_but_the_dead_nodes_share(
    node_cluster: LocalCluster,
) -> None:
    (OUT / "summary.json").unlink(missing_ok=True)  # never judge an earlier run's
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rehearsal", "--nodes", "--attach", "--out", str(OUT)],
        cwd=REPO,
        env=node_cluster.env(),
        capture_output=True,
        text=True,
        timeout=REHEARSAL_TIMEOUT_SECONDS,
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr[-6000:]
    assert (OUT / "summary.json").exists(), output
    data = json.loads((OUT / "summary.json").read_text())
    failing = [gate for gate in data["gates"] if not gate["passed"]]
    assert not failing, (failing, output)
    assert result.returncode == 0, output
    assert "RESULT: PASS" in result.stdout

    scenarios = {s["name"]: s for s in data["scenarios"]}
    assert {name: s["role"] for name, s in scenarios.items()} == SCENARIOS
    for name, scenario in scenarios.items():
        if scenario["gated"]:
            assert scenario["failed"] == 0, (name, scenario["errors_by_kind"])
            assert min(scenario["requests_by_client"].values()) >= 100, scenario
    gates = {gate["name"] for gate in data["gates"]}
    assert "0 failed requests in API server stopped 60 s" in gates
    # Both API-server stops: the controller manager restarted as leader election would
    # (the stand-in), and nothing lost on the API server's return either.
    for name in ("API server stopped 60 s", "API server stopped mid-rollout"):
        what = [event["what"] for event in scenarios[name]["events"]]
        assert any(w.startswith("kube-controller-manager exits") for w in what), what
        assert any(w.startswith("kube-controller-manager started again") for w in what), what
        assert scenarios[name]["measurements"]["failed_after_return"] == 0
        assert scenarios[name]["measurements"]["requests_while_stopped"] > 0
    assert "the PDB never violated in cluster upgrade" in gates
    assert "node death: every failed request went to the dead node's pod (conntrack)" in gates
    # The node death lost requests (the run can see failures), of the kinds a dead host
    # gives, and the dead node's events are marked for the plot.
    death = scenarios["node death m03"]
    window = death["measurements"]
    assert death["failed"] > 0, death
    assert set(death["errors_by_kind"]) <= NODE_DEATH_ERRORS, death
    assert {event.get("node") for event in death["events"]} >= {"m03"}
    assert window["lost_share"] <= window["predicted_share"]
    assert data["nodes"]["m02"]["zone"] == "zone-b"
    assert imread(OUT / "rollout.png").shape[0] == 950  # with the pod lanes
    # m03 is gone; the app serves on the other two nodes.
    nodes = {n["metadata"]["name"] for n in node_cluster.get_json("nodes")["items"]}
    assert nodes == {"minikube", "m02"}

    rows = "; ".join(
        f"{s['name']}: {s['requests']:,} req, {s['failed']} failed {s['errors_by_kind'] or ''}, "
        f"p50/p99 during {s['during']['p50_ms']}/{s['during']['p99_ms']} ms"
        for s in data["scenarios"]
    )
    report(
        f"node rehearsal: {seconds:.0f} s, {data['requests']:,} requests at "
        f"{data['rate_per_s']}/s; {rows}"
    )
    report(f"node death window: {json.dumps(window)}")
