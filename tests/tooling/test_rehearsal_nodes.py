"""The node rehearsal's own logic (rehearsal/nodes.py, rehearsal/conntrack.py) and its marks
in the report and the plot; the run itself is tests/nodes."""

import itertools
import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from proving.openloop import Client, Error, RequestRecord
from rehearsal import conntrack
from rehearsal.nodes import fewest_ready, node_ready_changes, spread
from rehearsal.plot import plot_rehearsal
from rehearsal.report import Event, Rehearsal, Role, Scenario, human_summary, summary
from rehearsal.rollout_check import job_manifest
from rehearsal.rollout_check import main as rollout_check_main

SERVICE = "10.96.12.34"


def entry_line(proto: str, state: str, dst: str, sport: int, dport: int, pod: str) -> str:
    """One line of /proc/net/nf_conntrack: the original tuple, then the reply tuple."""
    number = "6" if proto == "tcp" else "17"
    return (
        f"ipv4     2 {proto}      {number} 117 {state} src=10.244.0.1 dst={dst} sport={sport} "
        f"dport={dport} src={pod} dst=10.244.0.1 sport=8000 dport={sport} mark=0 zone=0 use=2"
    )


TABLE = "\n".join(
    [
        entry_line("tcp", "SYN_SENT", SERVICE, 40001, 80, "10.244.3.5"),
        entry_line("tcp", "ESTABLISHED", SERVICE, 40002, 80, "10.244.2.7"),
        entry_line("tcp", "TIME_WAIT", SERVICE, 40003, 443, "10.244.2.7"),
        entry_line("tcp", "TIME_WAIT", "10.96.0.10", 40004, 80, "10.244.0.3"),
        entry_line("udp", "", SERVICE, 40005, 80, "10.244.3.5"),
    ]
)


def test_conntrack_entries_name_the_pod_each_service_connection_went_to() -> None:
    assert conntrack.parse_table(TABLE, SERVICE, 80) == [
        conntrack.Entry(40001, "10.244.3.5", "SYN_SENT"),
        conntrack.Entry(40002, "10.244.2.7", "ESTABLISHED"),
    ]


def sampler_with(*sightings: tuple[int, str, float, float]) -> conntrack.ConntrackSampler:
    sampler = conntrack.ConntrackSampler(SERVICE, 80, clock=lambda: 0.0)
    for sport, pod, first, last in sightings:
        entry = conntrack.Entry(sport, pod, "SYN_SENT")
        sampler.sightings.setdefault(sport, {})[pod] = conntrack.Sighting(entry, first, last)
    return sampler


def test_failures_are_matched_to_the_dead_pod_by_source_port_and_time() -> None:
    sampler = sampler_with(
        (40001, "10.244.3.5", 10.0, 130.0),  # a SYN to the dead pod, kept 120 s
        (40002, "10.244.2.7", 0.0, 200.0),  # a live pod's connection
        (40009, "10.244.3.5", 300.0, 310.0),  # the dead pod, but long after
    )
    result = conntrack.attribute(
        [
            (10.0, "10.244.0.1:40001"),
            (60.0, "10.244.0.1:40001"),  # a later connect that matched the stale entry
            (20.0, "10.244.0.1:40002"),
            (20.0, "10.244.0.1:40009"),
            (20.0, ""),
        ],
        sampler,
        {"10.244.3.5"},
        timeout=5.0,
    )
    assert (result.dead, result.live, result.unknown) == (2, 1, 2)
    assert "10.244.2.7" in result.examples[0]


def test_the_sampler_reads_this_machines_table() -> None:
    if not conntrack.CONNTRACK_TABLE.exists():
        pytest.skip("no /proc/net/nf_conntrack on this kernel")
    sampler = conntrack.ConntrackSampler("127.0.0.1", 1, clock=lambda: 1.0)
    sampler.sample_once()
    assert sampler.samples == 1


def test_spread_is_the_skew_over_domains_empty_ones_included() -> None:
    assert spread({"a": 1, "b": 1, "c": 1}) == 0
    assert spread({"a": 2, "b": 1, "c": 0}) == 2
    assert spread({}) == 0


def test_fewest_ready_endpoints_in_a_window() -> None:
    readiness = {
        "p1": [(0.0, True), (10.0, False)],  # evicted at 10
        "p2": [(0.0, True)],
        "p3": [(0.0, True)],
        "p4": [(12.0, True)],  # its replacement, ready at 12
    }
    assert fewest_ready(readiness, 5.0, 20.0) == 2
    assert fewest_ready(readiness, 13.0, 20.0) == 3
    assert fewest_ready(readiness, 1.0, 9.0) == 3


class NodeEvent:
    def __init__(self, seconds: float, name: str, ready: str) -> None:
        self.seconds = seconds
        self.object = {
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }


def test_node_readiness_changes_on_the_loads_clock() -> None:
    events = [
        NodeEvent(100.0, "m03", "True"),
        NodeEvent(101.0, "m02", "True"),
        NodeEvent(110.0, "m03", "True"),
        NodeEvent(150.0, "m03", "Unknown"),
    ]
    assert node_ready_changes(events, "m03", origin=100.0) == [(0.0, True), (50.0, False)]


def node_rehearsal() -> Rehearsal:
    rehearsal = Rehearsal(
        target="test",
        rate=100,
        saturation=250,
        started_at=1_700_000_000,
        min_rollout_requests=100,
        not_ready_source="test",
        negative_control_required=False,
    )
    death = Scenario("node death m03", Role.FAULT, 0.0, 5.0, 20.0)
    death.events = [Event(5.0, "m03 dies (kill-node.sh)", node="m03")]
    death.measurements = {"failure_window_s": 12.5, "lost_share": 0.1}
    drain = Scenario("drain m02", Role.DISRUPTION, 20.0, 22.0, 30.0)
    drain.events = [Event(22.0, "cordon + drain m02", node="m02")]
    rehearsal.scenarios = [death, drain]
    rehearsal.records = [
        RequestRecord(n / 100, 0.002, list(Client)[n % 2], 200, None) for n in range(3000)
    ] + [RequestRecord(6.0, 5.0, Client.NEW_CONNECTION, None, Error.TIMEOUT, "TimeoutError")]
    rehearsal.node_zones = {"minikube": "zone-a", "m02": "zone-b", "m03": "zone-c"}
    rehearsal.pod_nodes = {"app-a": "minikube", "app-b": "m02", "app-c": "m03", "app-d": "m02"}
    rehearsal.pod_ready = {
        "app-a": [(0.0, True)],
        "app-b": [(0.0, True), (23.0, False)],
        "app-c": [(0.0, True), (50.0 / 3, False)],
        "app-d": [(25.0, True)],
    }
    return rehearsal


def test_the_node_run_needs_no_negative_control_and_reports_its_measurements() -> None:
    rehearsal = node_rehearsal()
    data = summary(rehearsal)
    names = {gate["name"] for gate in data["gates"]}
    assert "a negative control ran" not in names
    (death, _) = data["scenarios"]
    assert death["measurements"]["failure_window_s"] == 12.5
    assert death["events"][0]["node"] == "m03"
    assert data["nodes"]["m02"] == {"zone": "zone-b", "pods": ["app-b", "app-d"]}
    assert "node death m03: failure_window_s: 12.5" in human_summary(data, [])
    # The single-node run still demands its control.
    rehearsal.negative_control_required = True
    assert "a negative control ran" in {gate["name"] for gate in summary(rehearsal)["gates"]}


def test_the_plot_has_pod_lanes_coloured_by_node(tmp_path: Path) -> None:
    path = tmp_path / "nodes.png"
    plot_rehearsal(node_rehearsal(), path)
    image = imread(path)
    assert image.shape[0] == 950  # three panels: latency, rate, pod lanes
    # The node colours are drawn (minikube's, m02's, m03's).
    colours = {tuple(round(c * 255) for c in pixel[:3]) for pixel in itertools.chain(*image)}
    assert {(0x1B, 0x9E, 0x77), (0x75, 0x70, 0xB3), (0xE7, 0x29, 0x8A)} <= colours


def test_the_rollout_checks_job_keeps_off_the_node_it_drains() -> None:
    job = json.loads(job_manifest("img", "check", "svc.", 80, 100, 50, avoid_node="m02"))
    affinity = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["m02"]}
    ]
    plain = json.loads(job_manifest("img", "check", "svc.", 80, 100, 50))
    assert "affinity" not in plain["spec"]["template"]["spec"]


def test_the_rollout_check_warns_before_it_drains_a_node(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No cluster answers on this context: the warning comes first all the same.
    code = rollout_check_main(
        ["--context", "no-such-context", "--node", "m02", "--out", "/dev/null"]
    )
    assert code == 1
    assert "WARNING: --node m02 cordons and drains node m02" in capsys.readouterr().err
