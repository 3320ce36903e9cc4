"""The rehearsal on three nodes in three zones (`python -m rehearsal --nodes`,
`make rehearse-nodes`): what only a cluster of several nodes can show.

The local cluster of ../shared/kube (first node `minikube`, zone-a) gets two workers,
m02 (zone-b) and m03 (zone-c), each in a network namespace of its own with its own
containerd, kubelet and kube-proxy. The app is deployed the way people do (`make
minikube-deploy`), and ONE open-loop load (keep-alive and new connections) goes to the
Service's ClusterIP from this machine, that is from the first node's network, through its
kube-proxy, for the whole run, while the scenarios run back to back, on the harness of
rehearsal/stage.py (a steady stretch, the event, until steady again) as scenarios.py's
ClusterStage drives it on the cluster:

- drain m02: `kubectl drain` of a worker holding an app pod (evictions, the PDB, kubectl's
  retries), then uncordon: 0 failed, ready endpoints never below what the PDB allows;
- cluster upgrade: cordon, drain and uncordon every node in turn: the same gates;
- scale 3 -> 6 -> 3: the new pods keep the spread over nodes and zones; 0 failed;
- kube-proxy stopped (SIGSTOP) 30 s on the first node, the one the load enters by: its
  rules stay in place, 0 failed;
- the API server stopped 60 s at steady state: 0 failed;
- the API server stopped 30 s in the middle of a rollout: the rollout waits, then completes;
  0 failed, and the new revision spread over the three nodes again;
- a node dies (kill-node.sh, its cable cut and every process killed): requests to its pod
  fail until the control plane takes the pod out of the endpoints. Measured: the window,
  the share lost against the dead node's share of the endpoints, and which pod each failed
  connection was sent to (this machine's conntrack table, rehearsal/conntrack.py); gated on
  "failures only toward the dead node's pod", "lost share at most its share of endpoints",
  the window's end, and its pod replaced in time. Then the node is removed (remove-node.sh).

The negative control (no drain) stays in the single-node run (`make rehearse`), where it is
cheap and already proves the checker sees failures; this run's own proof that it can see
failures is the node death, which must lose requests toward the dead pod.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proving.docker import build_image, engine_problem
from proving.kubectl import Watch
from proving.local_cluster import ClusterError, LocalCluster, bundle_problem, started
from proving.manifests import MANIFEST, load_documents, only
from proving.openloop import LoadRun, in_window, summarize
from proving.steady import is_ready
from rehearsal import conntrack
from rehearsal.observe import Observer, endpoint_readiness, turned_not_ready
from rehearsal.report import Gate, Rehearsal, Role
from rehearsal.scenarios import (
    SETTLE_TIMEOUT_SECONDS,
    Act,
    App,
    ClusterStage,
    ServiceLoad,
    short,
)
from rehearsal.stage import log

FIRST_NODE = "minikube"
# (name, index, zone) of the workers add-node.sh adds; the first node becomes zone-a.
WORKERS = (("m02", 2, "zone-b"), ("m03", 3, "zone-c"))
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Short steady stretches: seven scenarios back to back must fit CI's budget.
STEADY_SECONDS = 3.0
LOAD_BOUND_SECONDS = 900.0
# Requests per second at most: three nodes' kubelets, kube-proxies and containerds, the
# control plane and the load share this machine's cores; at 40% of the measured saturation
# (about 700/s) a drain left two pods on one node answering in seconds, their probes timed
# out and the app fell over under its own load, which proves nothing about nodes.
RATE_CAP = 200.0
# The rollout in this run is the one under the API-server pause (the rollouts themselves
# are the single-node run's subject, with its 20,000-request floor).
MIN_ROLLOUT_REQUESTS = 2_000
PROXY_PAUSE_SECONDS = 30.0
API_PAUSE_STEADY_SECONDS = 60.0
API_PAUSE_ROLLOUT_SECONDS = 30.0
SCALE_UP_REPLICAS = 6
DRAIN_TIMEOUT_SECONDS = 240
# Load after the node is gone: failed connects leave conntrack entries (SYN_SENT) that a
# later connection from the same source port still follows to the dead pod.
TAIL_SECONDS = 20.0
# Bounds for the node death, from the control plane's defaults (kube-controller-manager's
# node-monitor grace period 40 s, checked every 5 s) plus this app's tolerationSeconds (30 s,
# k8s/base/50-deployment.yaml) and a pod start: with the default 300 s toleration the
# replacement would come after about 340 s.
REPLACED_WITHIN_SECONDS = 150.0
PDB_REFUSAL = "violate the pod's disruption budget"
# After the API server comes back: kubectl's watches (which end when their connection is
# lost) list again, and the controllers act on what they missed (the node lifecycle
# controller checks every 5 s, a kubelet syncs pod statuses every 10 s). The scenario
# runs on this long, so whatever that costs falls inside it.
API_RESYNC_SECONDS = 10.0
API_SETTLE_SECONDS = 15.0
# kube-controller-manager's --leader-elect-renew-deadline default (api_server_away).
LEADER_RENEW_DEADLINE_SECONDS = 10.0


def add_workers(cluster: LocalCluster) -> dict[str, str]:
    """The two workers, each in a zone of its own; returns each node's zone."""
    for name, index, zone in WORKERS:
        log(f"adding node {name} ({zone})")
        cluster.add_node(name, index, zone)
    return node_zones(cluster)


def node_zones(cluster: LocalCluster) -> dict[str, str]:
    return {
        node["metadata"]["name"]: node["metadata"]["labels"].get(ZONE_LABEL, "-")
        for node in cluster.get_json("nodes")["items"]
    }


def spread(counts: dict[str, int]) -> int:
    """The skew: most pods in one domain minus fewest in another (0 for none)."""
    return max(counts.values()) - min(counts.values()) if counts else 0


def node_ready_changes(events: list[Any], node: str, origin: float) -> list[tuple[float, bool]]:
    """Changes of one node's Ready condition in a node watch, on the load's clock."""
    changes: list[tuple[float, bool]] = []
    for event in events:
        if event.object["metadata"]["name"] != node:
            continue
        conditions = event.object.get("status", {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if not changes or changes[-1][1] != ready:
            changes.append((event.seconds - origin, ready))
    return changes


def fewest_ready(
    readiness: dict[str, list[tuple[float, bool]]], start: float, end: float
) -> int | None:
    """The fewest ready endpoints at any moment in [start, end) (times on one clock)."""
    changes = sorted(
        (at, pod, ready) for pod, history in readiness.items() for at, ready in history
    )
    state: dict[str, bool] = {}
    fewest: int | None = None
    for at, pod, ready in changes:
        if at >= end:
            break
        if at >= start and fewest is None:
            fewest = sum(state.values())
        state[pod] = ready
        if at >= start:
            fewest = min(fewest if fewest is not None else math.inf, sum(state.values()))
    if fewest is None:
        fewest = sum(state.values())
    return int(fewest)


@dataclass
class NodeDeath:
    """What the node-death scenario recorded while it ran; judged once the load ended."""

    node: str
    kill_at: float
    dead_pods: dict[str, str]  # pod -> its IP
    endpoints_at_kill: int
    not_ready_at: float | None = None
    endpoints_gone_at: float | None = None
    replaced_at: float | None = None
    removed_at: float | None = None


@dataclass(kw_only=True)
class NodeStage(ClusterStage):
    """The cluster's Stage with the node scenarios."""

    nodes: Watch | None = None
    max_unavailable: int = 1
    service_ip: str = ""
    zones: dict[str, str] = field(default_factory=dict)
    death: NodeDeath | None = None
    sampler: conntrack.ConntrackSampler | None = None
    # scenario name -> (SIGSTOP, SIGCONT) of the API server, on the load's clock
    stopped_windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    # scenario name -> extra gates to judge once the readiness history is complete
    pdb_scenarios: list[str] = field(default_factory=list)

    # --- placement ------------------------------------------------------------------

    def placed(self) -> dict[str, str]:
        """Each live (not terminating) pod's node."""
        return {
            name: pod["spec"].get("nodeName", "")
            for name, pod in self.observer.live_pods().items()
            if "deletionTimestamp" not in pod["metadata"]
        }

    def spread_gate(self, when: str, nodes: list[str] | None = None) -> dict[str, Any]:
        """Gate: the pods spread over the nodes and the zones with a skew of at most 1."""
        nodes = nodes or sorted(self.zones)
        per_node = dict.fromkeys(nodes, 0)
        per_zone = dict.fromkeys({self.zones[node] for node in nodes}, 0)
        for node in self.placed().values():
            per_node[node] = per_node.get(node, 0) + 1
            per_zone[self.zones.get(node, "-")] = per_zone.get(self.zones.get(node, "-"), 0) + 1
        passed = spread(per_node) <= 1 and spread(per_zone) <= 1
        self.rehearsal.checks.append(
            Gate(
                f"pods spread over nodes and zones {when} (skew at most 1)",
                passed,
                f"per node {per_node}, per zone {per_zone}",
            )
        )
        return {"per_node": per_node, "per_zone": per_zone}

    # --- node actions ---------------------------------------------------------------

    def drain(self, node: str) -> int:
        """kubectl drain (cordon, evict with retries while the PDB refuses), then uncordon;
        returns how many evictions the PDB refused (and kubectl retried)."""
        self.event(f"cordon + drain {node}", node=node)
        result = self.cluster.kubectl(
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            f"--timeout={DRAIN_TIMEOUT_SECONDS}s",
            timeout=DRAIN_TIMEOUT_SECONDS + 60,
            check=False,
        )
        output = result.stdout + result.stderr
        with (self.log_dir / "drain.log").open("a") as drain_log:
            drain_log.write(f"--- kubectl drain {node} (exit {result.returncode})\n{output}")
        if result.returncode != 0:
            raise ClusterError(f"kubectl drain {node} exited {result.returncode}:\n{output}")
        refused = output.count(PDB_REFUSAL)
        self.event(f"{node} drained ({refused} evictions refused by the PDB, retried)", node=node)
        self.cluster.kubectl("uncordon", node)
        self.event(f"uncordon {node}", node=node)
        return refused

    def drain_one(self, node: str) -> Act:
        def act(before: Sequence[dict[str, Any]]) -> None:
            if node not in {pod["spec"]["nodeName"] for pod in before}:
                raise ClusterError(f"{node} holds no pod of the app: {self.placed()}")
            self.current.measurements["pdb_refusals_retried"] = self.drain(node)
            self.wait_steady()
            # After an uncordon nothing moves pods back: the replacement stays where it
            # landed (beside another pod) until the next rollout spreads the new revision.
            self.current.measurements["pods_per_node_after"] = _count(self.placed().values())

        return act

    def upgrade(self, before: Sequence[dict[str, Any]]) -> None:
        """Every node in turn, the first node last (a control plane is upgraded first in a
        real cluster, but here the first node also holds the cluster's DNS)."""
        refused = 0
        for node in [*sorted(n for n in self.zones if n != FIRST_NODE), FIRST_NODE]:
            refused += self.drain(node)
        self.current.measurements["pdb_refusals_retried"] = refused
        self.wait_steady()
        self.current.measurements["pods_per_node_after"] = _count(self.placed().values())

    def scale_up(self, before: Sequence[dict[str, Any]]) -> None:
        replicas = len(before)
        self.event(f"kubectl scale --replicas={SCALE_UP_REPLICAS}")
        self.kubectl(
            "scale", f"deployment/{self.app.deployment}", f"--replicas={SCALE_UP_REPLICAS}"
        )
        self.wait(lambda: self.observer.replicas() == SCALE_UP_REPLICAS, "6 replicas wanted")
        self.wait_steady()
        self.event(f"{SCALE_UP_REPLICAS} pods ready")
        self.current.measurements["scaled_up"] = self.spread_gate(
            f"after a scale-up to {SCALE_UP_REPLICAS}"
        )
        self.event(f"kubectl scale --replicas={replicas}")
        self.kubectl("scale", f"deployment/{self.app.deployment}", f"--replicas={replicas}")
        self.wait(lambda: self.observer.replicas() == replicas, f"{replicas} replicas wanted")

    def pause(self, component: str, seconds: float, node: str | None = None) -> Act:
        where = node or FIRST_NODE

        def act(before: Sequence[dict[str, Any]]) -> None:
            with self.cluster.paused(component, node) as pid:
                self.event(f"SIGSTOP {component} on {where} (pid {pid})", node=where)
                time.sleep(seconds)
            self.event(f"SIGCONT {component} on {where}", node=where)

        return act

    def api_server_away(self, seconds: float) -> None:
        """The API server stopped (SIGSTOP) for `seconds`, the controller manager treated as
        one with leader election is (a stand-in, below); returns once the watches listed again.

        Stand-in: the bundle runs kube-controller-manager with --leader-elect=false. One with
        leader election (the default: kubeadm, minikube, managed control planes) that cannot
        renew its lease for --leader-elect-renew-deadline (10 s) exits ("leaderelection
        lost") and its kubelet starts it again; the new one's node lifecycle controller
        takes "now" as every node's last heartbeat (node_lifecycle_controller.go: "Missing
        timestamp for Node ... Assuming now"). The one that never exits instead counts the
        whole outage against the nodes: past its 40 s grace period it marks them NotReady on
        the API server's return, before the kubelets renew their leases, and their pods'
        endpoints go with them (measured: 407 new connections refused once). So here the
        controller manager is killed at the renew deadline and started again, with its own
        command line, once the API server is back (a restart while it is away would only
        crash-loop, as it does on a real control plane)."""
        restarts = self.watch_restarts()
        command: list[str] | None = None
        try:
            with self.cluster.paused("kube-apiserver") as pid:
                self.event(f"SIGSTOP kube-apiserver (pid {pid})", node=FIRST_NODE)
                stopped = self.run.elapsed()
                time.sleep(min(seconds, LEADER_RENEW_DEADLINE_SECONDS))
                command = self.cluster.stop_component("kube-controller-manager")
                self.event("kube-controller-manager exits (stand-in: lease lost)", node=FIRST_NODE)
                time.sleep(max(0.0, seconds - (self.run.elapsed() - stopped)))
            self.stopped_windows[self.current.name] = (stopped, self.run.elapsed())
            self.event("SIGCONT kube-apiserver", node=FIRST_NODE)
        finally:
            # Whatever failed meanwhile, the cluster gets its controller manager back.
            if command is not None:
                pid = self.cluster.start_component("kube-controller-manager", command)
                self.event(f"kube-controller-manager started again (pid {pid})", node=FIRST_NODE)
        self.resynced(restarts)

    def watches(self) -> list[Watch]:
        observer = self.observer
        return [observer.pods, observer.deployments, observer.slices] + (
            [self.nodes] if self.nodes else []
        )

    def watch_restarts(self) -> list[int]:
        return [watch.restarts for watch in self.watches()]

    def resynced(self, before: list[int]) -> None:
        """Until every watch that lost its connection listed again (bounded): the steady
        check must not read what the watches showed before the pause."""
        deadline = time.monotonic() + API_RESYNC_SECONDS
        while time.monotonic() < deadline:
            if all(now > then for now, then in zip(self.watch_restarts(), before, strict=True)):
                self.event("watches listed again")
                return
            time.sleep(0.5)
        self.event("watches not restarted (kubectl kept its connections)")

    def api_pause_steady(self, before: Sequence[dict[str, Any]]) -> None:
        self.api_server_away(API_PAUSE_STEADY_SECONDS)
        time.sleep(API_SETTLE_SECONDS)
        self.event("controllers caught up")

    def api_pause_mid_rollout(self, before: Sequence[dict[str, Any]]) -> None:
        old = {pod["metadata"]["name"] for pod in before}
        self.event("kubectl rollout restart")
        self.kubectl("rollout", "restart", f"deployment/{self.app.deployment}")
        self.wait(
            lambda: any(
                name not in old and is_ready(pod) for name, pod in self.observer.live_pods().items()
            ),
            "a new pod ready",
        )
        self.api_server_away(API_PAUSE_ROLLOUT_SECONDS)
        paused_at, resumed = self.stopped_windows[self.current.name]
        new_during_pause = sum(
            1
            for name, pod in self.observer.live_pods().items()
            if name not in old and is_ready(pod)
        )
        self.kubectl(
            "rollout",
            "status",
            f"deployment/{self.app.deployment}",
            "--timeout=300s",
            timeout=360,
        )
        completed = self.run.elapsed()
        self.event("rollout complete")
        self.wait_gone(old)
        self.current.measurements["api_paused_s"] = round(resumed - paused_at, 1)
        self.current.measurements["rollout_completed_after_sigcont_s"] = round(
            completed - resumed, 1
        )
        self.rehearsal.checks.append(
            Gate(
                "the rollout waited for the API server and completed after it came back",
                completed > resumed,
                f"{new_during_pause} new pod(s) ready when it came back; complete "
                f"{completed - resumed:.1f} s after SIGCONT",
            )
        )

    def node_death(self, victim: str) -> Act:
        def act(before: Sequence[dict[str, Any]]) -> None:
            dead = {
                pod["metadata"]["name"]: pod["status"]["podIP"]
                for pod in before
                if pod["spec"]["nodeName"] == victim
            }
            if not dead:
                raise ClusterError(f"{victim} holds no pod of the app: {self.placed()}")
            kill_at = self.run.elapsed()
            self.cluster.kill_node(victim)
            self.event(f"{victim} dies (kill-node.sh)", node=victim)
            death = self.death = NodeDeath(victim, kill_at, dead, len(before))
            origin = self.run.origin

            def not_ready() -> float | None:
                changes = node_ready_changes(
                    self.nodes.snapshot() if self.nodes else [], victim, origin
                )
                return next((at for at, ready in changes if at >= kill_at and not ready), None)

            death.not_ready_at = self.wait(not_ready, f"{victim} NotReady")
            self.event(f"{victim} NotReady", node=victim)

            def endpoints_gone() -> float | None:
                readiness = endpoint_readiness(self.observer.slices.snapshot())
                times = [turned_not_ready(readiness.get(pod, []), kill_at + origin) for pod in dead]
                return None if None in times else max(t for t in times if t is not None) - origin

            death.endpoints_gone_at = self.wait(endpoints_gone, "the dead pods' endpoints gone")
            self.event(f"{', '.join(map(short, dead))} not ready in the EndpointSlice")

            def replaced() -> bool:
                ready = [
                    name
                    for name, pod in self.observer.live_pods().items()
                    if "deletionTimestamp" not in pod["metadata"]
                    and pod["spec"].get("nodeName") != victim
                    and is_ready(pod)
                ]
                return len(ready) >= len(before)

            self.wait(replaced, "the dead node's pods replaced")
            death.replaced_at = self.run.elapsed()
            self.event("replacements ready on the other nodes")
            self.cluster.remove_node(victim)
            death.removed_at = self.run.elapsed()
            self.event(f"{victim} removed (remove-node.sh)", node=victim)
            # Pods bound to a deleted Node are deleted by the pod garbage collector after
            # its quarantine (about 40 s); an operator who removed the node does it at once.
            stuck = [
                name
                for name, pod in self.observer.live_pods().items()
                if pod["spec"].get("nodeName") == victim
            ]
            if stuck:
                self.kubectl("delete", "pod", *stuck, "--grace-period=0", "--force", "--wait=false")
                self.event(f"force delete the dead node's pods {', '.join(map(short, stuck))}")
            self.zones.pop(victim, None)

        return act

    # --- judged after the run -------------------------------------------------------

    def record_pod_lanes(self) -> None:
        """Each pod's endpoint readiness and node, for the plot's pod lanes."""
        origin = self.run.origin
        self.rehearsal.pod_ready = {
            pod: [(at - origin, ready) for at, ready in changes]
            for pod, changes in endpoint_readiness(self.observer.slices.snapshot()).items()
        }
        for watched in self.observer.pods.snapshot():
            if node := watched.object.get("spec", {}).get("nodeName"):
                self.rehearsal.pod_nodes[watched.object["metadata"]["name"]] = node

    def judge_pdb(self) -> None:
        """Per drain scenario: the fewest ready endpoints while it ran, gated against what
        the PDB allows (the replica count less maxUnavailable)."""
        origin = self.run.origin
        readiness = {
            pod: [(at - origin, ready) for at, ready in changes]
            for pod, changes in endpoint_readiness(self.observer.slices.snapshot()).items()
        }
        for scenario in self.rehearsal.scenarios:
            fewest = fewest_ready(readiness, scenario.event_start, scenario.end)
            scenario.measurements["fewest_ready_endpoints"] = fewest
            if scenario.name in self.pdb_scenarios:
                floor = 3 - self.max_unavailable
                self.rehearsal.checks.append(
                    Gate(
                        f"the PDB never violated in {scenario.name}",
                        fewest is not None and fewest >= floor,
                        f"fewest ready endpoints {fewest} (3 replicas, maxUnavailable "
                        f"{self.max_unavailable}: at least {floor})",
                    )
                )

    def judge_api_outage(self, records: list[Any]) -> None:
        """Both API-server stops are gated 0 failed over the whole scenario (their role's
        gate); this splits the count into while it was stopped and after its return, where
        the node lifecycle controller acts on what it missed (api_server_away)."""
        for scenario in self.rehearsal.scenarios:
            if scenario.name not in self.stopped_windows:
                continue
            stopped, resumed = self.stopped_windows[scenario.name]
            away = summarize(records, stopped, resumed)
            after = summarize(records, resumed, scenario.end)
            scenario.measurements["requests_while_stopped"] = away.requests
            scenario.measurements["failed_while_stopped"] = away.failed
            scenario.measurements["failed_after_return"] = after.failed
            scenario.measurements["errors_after_return"] = after.errors_by_kind

    def judge_failures(self, records: list[Any], timeout: float) -> None:
        """Per scenario with failed requests: which node's pods their connections went to
        (conntrack), so a failure is never without a place."""
        if self.sampler is None:
            return
        node_of_ip: dict[str, str] = {}
        for event in self.observer.pods.snapshot():
            ip = event.object.get("status", {}).get("podIP")
            if ip and (node := event.object.get("spec", {}).get("nodeName")):
                node_of_ip[ip] = node
        for scenario in self.rehearsal.scenarios:
            failed = [r for r in in_window(records, scenario.start, scenario.end) if not r.ok]
            if not failed:
                continue
            by_node: dict[str, int] = {}
            for record in failed:
                port = conntrack.source_port(record.source)
                pods = (
                    set()
                    if port is None
                    else self.sampler.pods_for(port, record.intended, record.intended + timeout)
                )
                where = ",".join(sorted({node_of_ip.get(ip, ip) for ip in pods})) or "unknown"
                by_node[where] = by_node.get(where, 0) + 1
            scenario.measurements["failed_by_node"] = dict(sorted(by_node.items()))
            first, last = failed[0].intended, failed[-1].intended
            scenario.measurements["failed_between_s"] = [round(first, 1), round(last, 1)]

    def judge_node_death(self, records: list[Any], timeout: float) -> None:
        death, sampler = self.death, self.sampler
        if death is None or sampler is None:
            return
        scenario = next(s for s in self.rehearsal.scenarios if s.name.startswith("node death"))
        window = in_window(records, scenario.start, scenario.end)
        failures = [r for r in window if not r.ok]
        attribution = conntrack.attribute(
            ((r.intended, r.source) for r in failures),
            sampler,
            set(death.dead_pods.values()),
            timeout,
        )
        share = len(death.dead_pods) / death.endpoints_at_kill
        kill = death.kill_at
        first = min((r.intended for r in failures), default=None)
        last = max((r.intended for r in failures), default=None)
        during = in_window(records, kill, last + 1e-6) if last is not None else []
        lost = len(failures) / len(during) if during else 0.0
        gone = death.endpoints_gone_at
        after_gone = sum(1 for r in failures if gone is not None and r.intended >= gone)
        syn_sent = conntrack.syn_sent_timeout() or 120

        def since_kill(at: float | None) -> float | None:
            return None if at is None else round(at - kill, 1)

        scenario.measurements.update(
            {
                "node": f"{death.node} ({', '.join(map(short, death.dead_pods))} of "
                f"{death.endpoints_at_kill} pods)",
                "node_not_ready_after_s": since_kill(death.not_ready_at),
                "endpoints_not_ready_after_s": since_kill(gone),
                "replacements_ready_after_s": since_kill(death.replaced_at),
                "node_removed_after_s": since_kill(death.removed_at),
                "first_failure_after_s": since_kill(first),
                "last_failure_after_s": since_kill(last),
                "failure_window_s": None
                if first is None or last is None
                else round(last - first, 1),
                "requests_in_window": len(during),
                "failed": len(failures),
                "lost_share": round(lost, 4),
                "predicted_share": round(share, 4),
                "failed_after_endpoint_removal": after_gone,
                "failed_to_dead_pod_by_conntrack": attribution.dead,
                "conntrack_samples": sampler.samples,
            }
        )
        self.rehearsal.checks += [
            Gate(
                "node death: every failed request went to the dead node's pod (conntrack)",
                attribution.live == 0 and attribution.unknown == 0 and bool(failures),
                f"{attribution.dead} of {len(failures)} to {sorted(death.dead_pods.values())}, "
                f"{attribution.live} to other pods, {attribution.unknown} unmatched"
                + (f"; e.g. {'; '.join(attribution.examples[:3])}" if attribution.examples else ""),
            ),
            Gate(
                "node death: lost share at most the dead node's share of endpoints",
                lost <= share,
                f"{len(failures)} of {len(during)} requests from the kill to the last failure "
                f"({lost:.1%}) vs {len(death.dead_pods)} of {death.endpoints_at_kill} "
                f"endpoints ({share:.1%})",
            ),
            Gate(
                "node death: no failure later than the conntrack SYN_SENT timeout plus the "
                "client's timeout after the endpoints were removed",
                gone is not None and (last is None or last <= gone + syn_sent + timeout),
                f"last failure {since_kill(last)} s after the kill, endpoints removed "
                f"{since_kill(gone)} s after it; {after_gone} failed after the removal "
                f"(connections that matched a stale SYN_SENT entry, {syn_sent} s)",
            ),
            Gate(
                f"node death: its pods replaced within {REPLACED_WITHIN_SECONDS:.0f} s "
                "(tolerationSeconds 30, not the default 300)",
                death.replaced_at is not None
                and death.replaced_at - kill <= REPLACED_WITHIN_SECONDS,
                f"replacements ready {since_kill(death.replaced_at)} s after the kill",
            ),
        ]


def _count(nodes: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node] = counts.get(node, 0) + 1
    return dict(sorted(counts.items()))


def _rehearse_nodes(cluster: LocalCluster, log_dir: Path) -> Rehearsal:
    app = App.from_manifest()
    zones = node_zones(cluster)
    if len(zones) < 1 + len(WORKERS):
        raise ClusterError(f"the node rehearsal needs three nodes, the cluster has {zones}")
    log(f"nodes and zones: {zones}; deploying this build (make minikube-deploy)")
    cluster.make("minikube-deploy")
    observer = Observer(
        cluster, app.namespace, app.deployment, app.pod_selector, app.service, log_dir
    )
    nodes = cluster.client.watch("nodes")
    stage: NodeStage | None = None
    sampler: conntrack.ConntrackSampler | None = None
    try:
        cluster.wait_for(observer.steady_pods, SETTLE_TIMEOUT_SECONDS, "the app steady")
        load = ServiceLoad.measured(cluster, app, rate_cap=RATE_CAP)
        plan = load.plan(LOAD_BOUND_SECONDS)
        pdb = only(load_documents(MANIFEST), "PodDisruptionBudget")
        with LoadRun(load.target, plan) as run:
            sampler = conntrack.ConntrackSampler(load.cluster_ip, app.service_port, run.elapsed)
            sampler.start()
            rehearsal = load.rehearsal(
                app,
                run,
                MIN_ROLLOUT_REQUESTS,
                ", three nodes in three zones",
                negative_control_required=False,
            )
            rehearsal.node_zones = dict(zones)
            stage = NodeStage(
                cluster=cluster,
                app=app,
                observer=observer,
                run=run,
                rehearsal=rehearsal,
                log_dir=log_dir,
                steady_seconds=STEADY_SECONDS,
                nodes=nodes,
                max_unavailable=int(pdb["spec"]["maxUnavailable"]),
                service_ip=load.cluster_ip,
                zones=dict(zones),
                pdb_scenarios=["drain m02", "cluster upgrade"],
                sampler=sampler,
            )
            log(f"load: {load.rate:,.0f} req/s open loop, both client kinds")
            stage.spread_gate("as deployed")
            stage.scenario("drain m02", Role.DISRUPTION, stage.drain_one("m02"))
            stage.scenario("cluster upgrade", Role.DISRUPTION, stage.upgrade)
            stage.scenario("scale 3 -> 6 -> 3", Role.DISRUPTION, stage.scale_up)
            stage.scenario(
                "kube-proxy stopped 30 s",
                Role.DISRUPTION,
                stage.pause("kube-proxy", PROXY_PAUSE_SECONDS),
            )
            stage.scenario("API server stopped 60 s", Role.DISRUPTION, stage.api_pause_steady)
            stage.scenario(
                "API server stopped mid-rollout",
                Role.ROLLOUT,
                stage.api_pause_mid_rollout,
            )
            stage.spread_gate("after a rollout (the new revision spreads on its own)")
            stage.scenario("node death m03", Role.FAULT, stage.node_death("m03"))
            time.sleep(TAIL_SECONDS)
            # Nothing is scheduled after this: the last scenario ends where the load does.
            rehearsal.scenarios[-1].end = run.elapsed()
        rehearsal.records = run.records
        stage.record_terminations()
        stage.record_pod_lanes()
        sampler.stop()
        failed = sorted((r for r in run.records if not r.ok), key=lambda r: r.intended)
        stage.judge_pdb()
        stage.judge_api_outage(run.records)
        stage.judge_failures(failed, plan.timeout)
        stage.judge_node_death(run.records, plan.timeout)
        return rehearsal
    finally:
        if sampler is not None:
            sampler.stop()
        observer.stop()
        nodes.stop()


def rehearse_nodes(out: Path, attach: bool) -> Rehearsal:
    """With attach, on the running cluster that $KC_STATE names, which has its three nodes
    already (left running, without m03, which the node death takes away); otherwise on a
    cluster of its own (start, two add-node.sh), stopped at the end whatever happens."""
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if attach:
        return _rehearse_nodes(LocalCluster.attach(), log_dir)
    problem = bundle_problem() or engine_problem()
    if problem is not None:
        raise SystemExit(f"rehearsal: no local cluster can run here: {problem}")
    log("building the image (make image)")
    image = build_image()
    log(f"starting the local cluster with {image.ref}")
    with started(images=[image.ref], log=log_dir / "start-cluster.log") as cluster:
        try:
            add_workers(cluster)
            return _rehearse_nodes(cluster, log_dir)
        finally:
            keep_cluster_logs(cluster, log_dir / "cluster")
            log("stopping the local cluster (and its nodes)")


def keep_cluster_logs(cluster: LocalCluster, dest: Path) -> None:
    """Every component's log (the controller manager's node lifecycle decisions among them)
    copied out of the state directory, which the stop removes."""
    for logs in [cluster.state / "logs", *sorted(cluster.state.glob("nodes/*/logs"))]:
        if logs.is_dir():
            name = "minikube" if logs.parent == cluster.state else logs.parent.name
            shutil.copytree(logs, dest / name, dirs_exist_ok=True)
