"""The check that a stopped local cluster left nothing on the machine (tests/cluster's
`cluster` fixture runs it after every stop): what counts as left behind, and the snapshot
it compares, taken with the real `ip` and `iptables-save`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proving.local_cluster import (
    LocalCluster,
    cluster_processes,
    host_network_state,
    left_behind,
)
from proving.waiting import wait_for
from tests.support.needs import require

# What a CI machine held before the start: a killed run's bridge, device, routes and rule.
KILLED_RUN = frozenset(
    {
        "-A FORWARD -i cni0 ! -o cni0 -m comment --comment kcluster -j DROP",
        "10.244.0.0/24 dev cni0 proto kernel scope link src 10.244.0.1",
        "10.96.0.0/16 dev kube-svc0 scope link",
        "cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UNKNOWN",
        "blackhole 10.244.0.0/16",
    }
)
# Another system's kube-proxy on a workstation: not this cluster's to remove.
OTHER_KUBE_PROXY = frozenset({":KUBE-SERVICES - "})


def test_a_clean_start_and_stop_leaves_nothing() -> None:
    assert left_behind(frozenset(), frozenset()) == []


def test_a_killed_runs_leftovers_cleared_by_the_start_are_not_blamed_on_this_run() -> None:
    assert left_behind(KILLED_RUN, frozenset()) == []


def test_a_killed_runs_leftovers_that_survive_the_stop_are_reported() -> None:
    problems = left_behind(KILLED_RUN, frozenset({"blackhole 10.244.0.0/16"}))
    assert problems == ["still there: blackhole 10.244.0.0/16"]


def test_whatever_the_run_added_is_reported_even_among_a_killed_runs_leftovers() -> None:
    after = KILLED_RUN | {"-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-X"}
    problems = left_behind(OTHER_KUBE_PROXY, after)
    assert "added: -A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-X" in problems
    assert "added: blackhole 10.244.0.0/16" in problems
    assert len(problems) == len(after)


def test_another_systems_kube_proxy_chains_may_stay() -> None:
    assert left_behind(OTHER_KUBE_PROXY, OTHER_KUBE_PROXY) == []


@pytest.fixture
def cluster_named_bridge() -> Iterator[str]:
    """A real, empty bridge whose name a cluster's would carry; removed afterwards."""
    tools = os.geteuid() == 0 and shutil.which("ip") and shutil.which("iptables-save")
    require(None if tools else "needs root, ip and iptables-save", "this test")
    # A running cluster's routes and rules would be in both snapshots.
    running = cluster_processes()
    require(f"a local cluster runs: {running[:1]}" if running else None, "this test")
    name = f"kcluster{os.getpid() % 10_000_000}"[:15]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=True, timeout=30)


def test_the_snapshot_sees_a_real_link_come_and_go(cluster_named_bridge: str) -> None:
    with_bridge = host_network_state()
    subprocess.run(["ip", "link", "del", cluster_named_bridge], check=True, timeout=30)
    without = host_network_state()
    subprocess.run(["ip", "link", "add", cluster_named_bridge, "type", "bridge"], check=True)

    assert [line.split(":")[0] for line in with_bridge - without] == [cluster_named_bridge]
    assert left_behind(without, with_bridge) == [
        f"added: {line}" for line in sorted(with_bridge - without)
    ]
    assert left_behind(with_bridge, without) == []


def test_a_component_stopped_and_started_again_runs_its_own_command_under_its_pid_file(
    tmp_path: Path,
) -> None:
    """The controller manager's restart (the rehearsal's stand-in for leader election) on a
    real process: stopped by its PID file, started again with the same command line, in a
    session of its own, appending to its log, the PID file naming the new process."""
    (tmp_path / "pids").mkdir()
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "component.log"
    log.write_text("before\n")
    cluster = LocalCluster(bundle=tmp_path, state=tmp_path)
    command = [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(300)"]

    def started(times: int) -> None:
        wait_for(lambda: log.read_text().count("started") == times, 10, f"start {times} logged")

    first = cluster.start_component("component", command)
    try:
        assert (tmp_path / "pids" / "component").read_text().strip() == str(first)
        started(1)
        assert os.getsid(first) == first
        assert cluster.stop_component("component") == command
        assert not Path(f"/proc/{first}").exists() or _state(first) == "Z"
        second = cluster.start_component("component", command)
        assert second != first
        assert (tmp_path / "pids" / "component").read_text().strip() == str(second)
        started(2)
        assert log.read_text().startswith("before\n")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(cluster.pid("component"), signal.SIGKILL)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
