"""The zero-downtime rehearsal (`python -m rehearsal --attach`) on the session cluster: one
open-loop load through the Service's ClusterIP while the app is rolled, scaled, evicted and
broken, its gates (0 failed requests in every gated scenario with both client kinds, at
least 20,000 requests in the rollouts, the negative control losing requests) and its
outputs; then the app is back to this build as deployed, for `make undeploy`."""

import itertools
import json
import subprocess
import sys
import time
from typing import Any

from matplotlib.image import imread

from proving.local_cluster import LocalCluster
from proving.manifests import MANIFEST, REPO, app_container, load_documents, only
from tests.cluster.conftest import APP, NAMESPACE, DeployedApp, report, running_image, wait_steady

OUT = REPO / "build" / "rehearsal"
# The rehearsal takes about 4 minutes of load plus a deploy before and after; this bounds
# it on a busy machine (each of its own waits is bounded too).
REHEARSAL_TIMEOUT_SECONDS = 900
SCENARIOS = {
    "rollout restart": "rollout",
    "rollout new build": "rollout",
    "scale 3 -> 2": "disruption",
    "eviction": "disruption",
    "force delete": "fault",
    "SIGKILL": "fault",
    "rollout DRAIN_SECONDS=0": "rollout",
    "restart without drain": "negative-control",
}
# What a client sees from a pod that stops without a drain: nothing listens, its connection
# closes under a request, or its address is gone before kube-proxy stops sending to it
# (unanswered, or unreachable once ARP gives up). Never an answer that is wrong or a 5xx.
NO_DRAIN_ERRORS = {"refused", "reset", "empty-response", "timeout", "unreachable"}


def plain_values(env: list[dict[str, Any]]) -> dict[str, str]:
    """The env entries with a value of their own (DRAIN_SECONDS among them)."""
    return {var["name"]: var["value"] for var in env if "value" in var}


def test_the_rehearsal_loses_no_request_and_its_control_does(
    cluster: LocalCluster, app: DeployedApp, steady: list[dict[str, Any]]
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rehearsal", "--attach", "--out", str(OUT)],
        cwd=REPO,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=REHEARSAL_TIMEOUT_SECONDS,
        check=False,
    )
    seconds = time.monotonic() - started
    print(result.stderr[-8000:], result.stdout, sep="\n")
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    assert result.stdout.splitlines()[-1] == "RESULT: PASS"

    data = json.loads((OUT / "summary.json").read_text())
    assert data["passed"] is True
    assert all(gate["passed"] for gate in data["gates"]), data["gates"]
    scenarios = {s["name"]: s for s in data["scenarios"]}
    assert {name: s["role"] for name, s in scenarios.items()} == SCENARIOS
    # Together the scenarios cover the load from its first request to its last.
    ends = [(s["start_s"], s["end_s"]) for s in data["scenarios"]]
    assert ends[0][0] == 0
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(ends))

    for s in data["scenarios"]:
        assert s["steady"]["requests"] > 0, s["name"]
        assert s["during"]["requests"] > 0, s["name"]
        assert s["sigterm_to_not_ready_s"], f"{s['name']} stopped no pod"
        if s["gated"]:
            assert s["failed"] == 0, s["failure_samples"]
            assert min(s["requests_by_client"].values()) > 500, s["requests_by_client"]
            # Each stopped pod's endpoint was seen turning not ready, and its app drained.
            assert None not in s["sigterm_to_not_ready_s"].values(), s["sigterm_to_not_ready_s"]
    for name in ("rollout restart", "rollout new build", "rollout DRAIN_SECONDS=0"):
        assert len(scenarios[name]["sigterm_to_not_ready_s"]) == 3, name
    rollout_requests = sum(
        s["during"]["requests"] for s in data["scenarios"] if s["role"] == "rollout"
    )
    assert rollout_requests >= 20_000

    old, new = scenarios["rollout new build"]["versions_seen"]
    assert new == f"{old}-rehearsal"
    assert scenarios["scale 3 -> 2"]["versions_seen"] == [new]

    control = scenarios["restart without drain"]
    assert control["failed"] > 0
    assert set(control["errors_by_kind"]) <= NO_DRAIN_ERRORS, control["errors_by_kind"]

    assert imread(OUT / "rollout.png").shape[:2] == (750, 1400)

    # Left as `make minikube-deploy` deploys this build: its image and the manifest's drain.
    wait_steady(cluster)
    assert running_image(cluster) == app.image_ref
    deployment = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)
    wanted = app_container(only(load_documents(MANIFEST), "Deployment"))["env"]
    assert plain_values(app_container(deployment)["env"]) == plain_values(wanted)

    not_ready = [
        seconds * 1000
        for s in data["scenarios"]
        if s["gated"]
        for seconds in s["sigterm_to_not_ready_s"].values()
    ]
    report(
        f"rehearsal ({seconds:.0f} s, load {max(end for _, end in ends):.0f} s): "
        f"{data['requests']:,} requests at {data['rate_per_s']:,.0f}/s "
        f"({data['rate_per_s'] / data['saturation_per_s']:.0%} of {data['saturation_per_s']:,}/s "
        f"through the ClusterIP), {rollout_requests:,} during rollouts, 0 failed in gated "
        f"scenarios; SIGTERM to not ready {min(not_ready):+.0f}..{max(not_ready):+.0f} ms; "
        f"without drain {control['failed']} failed {control['errors_by_kind']}; "
        f"p99 during/steady median {data['p99_during_over_steady_median']}x"
    )
