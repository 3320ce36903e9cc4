"""The zero-downtime rehearsal (`python -m rehearsal --attach`) on the session cluster: one
open-loop load through the Service's ClusterIP while the app is rolled, scaled, evicted and
broken, its gates (0 failed requests in every gated scenario with both client kinds, at
least 20,000 requests in the rollouts, the negative control losing requests) and its
outputs; then the app is back to this build as deployed, for `make undeploy`.

Prometheus scrapes the pods and evaluates the SLO rules (k8s/monitoring/prometheusrule.yaml)
all the while; afterwards every recording rule has data, the server-side availability SLI
counted no 5xx and no alert fired in the gated scenarios, and the negative control shows
what an SLI measured in the pod cannot see: the requests its clients lost."""

import datetime
import itertools
import json
import subprocess
import sys
import time
from typing import Any

from matplotlib.image import imread

from proving.local_cluster import LocalCluster
from proving.manifests import MANIFEST, REPO, app_container, load_documents, only
from tests.cluster.conftest import (
    APP,
    NAMESPACE,
    DeployedApp,
    report,
    running_image,
    scraped_targets,
    wait_steady,
)
from tests.cluster.prometheus import ClusterPrometheus
from tests.support.prometheus_rules import alert_names, recording_rules

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
# Discovery is a watch on the API and scrapes run every second. Generous for a busy machine.
SCRAPE_WAIT_SECONDS = 90
USER_HASH = 'user_hasher_http_responses_total{namespace="user-hasher", route="/user_hash"}'


def plain_values(env: list[dict[str, Any]]) -> dict[str, str]:
    """The env entries with a value of their own (DRAIN_SECONDS among them)."""
    return {var["name"]: var["value"] for var in env if "value" in var}


def test_the_rehearsal_loses_no_request_and_its_control_does(
    cluster: LocalCluster,
    app: DeployedApp,
    steady: list[dict[str, Any]],
    prometheus: ClusterPrometheus,
) -> None:
    # The SLO rules run from the first request: every pod scraped, the rules loaded.
    cluster.wait_for(lambda: scraped_targets(prometheus, steady), SCRAPE_WAIT_SECONDS, "targets")
    (group,) = prometheus.rule_groups_loaded()
    assert {rule["name"] for rule in group["rules"]} >= alert_names()
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

    old, new = scenarios["rollout new build"]["revisions_seen"]
    assert new == f"{old}-rehearsal"
    assert scenarios["scale 3 -> 2"]["revisions_seen"] == [new]

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


def selector(record: str, labels: dict[str, str]) -> str:
    return record + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def firing_in(
    prometheus: ClusterPrometheus, windows: dict[str, tuple[float, float]]
) -> dict[str, set[str]]:
    """Per window, the alerts Prometheus had firing at any evaluation in it."""
    first = min(start for start, _ in windows.values())
    last = max(end for _, end in windows.values())
    series = prometheus.query_at(f'ALERTS{{alertstate="firing"}}[{int(last - first) + 2}s]', last)
    return {
        name: {
            item["metric"]["alertname"]
            for item in series
            if any(start <= float(at) <= end for at, _ in item["values"])
        }
        for name, (start, end) in windows.items()
    }


def test_the_slo_rules_saw_no_error_and_the_clients_lost_requests_the_pods_never_saw(
    prometheus: ClusterPrometheus,
) -> None:
    data = json.loads((OUT / "summary.json").read_text())
    # Whole seconds (the summary's resolution): windows may be off by up to a second.
    zero = datetime.datetime.fromisoformat(data["started_at"]).timestamp()
    windows = {s["name"]: (zero + s["start_s"], zero + s["end_s"]) for s in data["scenarios"]}
    gated = [s["name"] for s in data["scenarios"] if s["gated"]]
    (control,) = (s for s in data["scenarios"] if s["role"] == "negative-control")
    load_end = max(end for _, end in windows.values())

    # Evaluated without an error, every recording rule wrote its series, per SLO.
    (group,) = prometheus.rule_groups_loaded()
    unhealthy = {rule["name"]: rule.get("lastError") for rule in group["rules"]}
    assert {n: e for n, e in unhealthy.items() if e} == {}
    assert {rule["health"] for rule in group["rules"]} == {"ok"}
    rules = recording_rules()
    empty = [
        selector(*rule) for rule in rules if not prometheus.query_at(selector(*rule), load_end)
    ]
    assert empty == []

    # The pods counted no 5xx for /user_hash in any gated scenario, and the SLI says so.
    counted = prometheus.counted_between(USER_HASH, windows, "status_class")
    server_5xx = {name: counted[name].get("5xx", 0.0) for name in windows}
    assert {name: server_5xx[name] for name in gated} == {name: 0.0 for name in gated}
    gated_start = min(windows[name][0] for name in gated)
    gated_end = max(windows[name][1] for name in gated)
    span = f"{int(gated_end - gated_start)}s"
    worst = {
        slo: prometheus.query_at(
            f'max_over_time(slo:sli_error:ratio_rate5m{{slo="{slo}"}}[{span}])', gated_end
        )
        for slo in ("availability", "latency")
    }
    (availability,) = worst["availability"]
    assert float(availability["value"][1]) == 0.0

    # No alert fired during a gated scenario but the latency SLO's: on this shared 2-core
    # machine the load itself keeps several % of responses over 50 ms (reported below),
    # which burns a 1 % budget several times over, so those alerts are right, and the pods'
    # speed is not what the rehearsal proves. Every other alert is gated.
    firing = firing_in(prometheus, windows)
    latency_alerts = {a for a in alert_names() if a.startswith("UserHasherLatency")}
    assert {name: firing[name] - latency_alerts for name in gated} == {n: set() for n in gated}

    # The negative control: its clients lost requests (refused, reset) that reached no
    # app, so the server-side SLI cannot count them. Reported side by side, not gated.
    assert control["failed"] > 0
    served = sum(counted[control["name"]].values())
    (latency,) = worst["latency"]
    report(
        f"SLO rules on the rehearsal: {len(rules) - len(empty)}/{len(rules)} recording rules "
        f"with data; server-side 5xx per gated scenario "
        f"{ {name: int(server_5xx[name]) for name in gated} }; availability SLI (5m) max "
        f"{float(availability['value'][1]):g}, latency SLI (5m, >50 ms) max "
        f"{float(latency['value'][1]):.4f} over the gated scenarios; alerts firing in them: "
        f"{sorted(set().union(*(firing[name] for name in gated))) or 'none'}; "
        f"over the whole load: {sorted(set().union(*firing.values())) or 'none'}"
    )
    report(
        f"no-drain control ({control['duration_s']:.0f} s): clients {control['failed']} failed "
        f"of {control['requests']:,} {control['errors_by_kind']}; server side "
        f"{int(server_5xx[control['name']])} 5xx of {served:,.0f} /user_hash responses "
        f"counted {dict(sorted((k, int(v)) for k, v in counted[control['name']].items()))}"
    )
