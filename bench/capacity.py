"""Pod sizing from the benchmark's measurements: docs/capacity.md explains it and
k8s/base/50-deployment.yaml uses the resulting numbers; re-derive them on other hardware with
`make bench`.

Policy (the choices), then what follows from the measurements:
- Latency objective: p99 under 50 ms. A pod's capacity is the highest open-loop rate
  measured on one core that keeps it (one process, one event loop: a pod never uses
  more than one core, so this is also per pod).
- A pod runs at no more than OPERATING_SHARE of that capacity when the HPA is at its
  target, so it can absorb a surge of 1/OPERATING_SHARE while the HPA adds pods (its
  sync, metrics-server's scrape window, a pod start and minReadySeconds: tens of seconds).
  A fifth, not more: it is also the pod's CPU request, which must fit a default minikube
  (cluster fit, below).
- CPU: limit one core (all one event loop can use; a lower limit would throttle the loop
  and show up as latency). Request what a pod uses at the operating point, and put the
  HPA's target at 100% of it: CPU use grows in step with the request rate, so the HPA
  adds pods exactly when a pod passes its operating point.
- Memory: request the RSS after traffic with headroom; the limit leaves room for open
  connections on top, which the benchmark measures per connection.
- Probes: a readiness probe must not fail on a pod that is merely busy (that would take
  load off it onto pods just as busy, and can empty the Service): its timeout must be at
  least PROBE_TIMEOUT_MARGIN times /readyz's worst latency on a pod saturated by many
  connections, where the probe waits behind every request queued on the one event loop.
  The Deployment's timeout is READINESS_TIMEOUT_SECONDS; the benchmark says whether it
  still covers what it measures.
- Cluster fit: the smallest cluster the project is run on is a default `minikube start`.
  Its CPU left after the control plane and the metrics-server addon (which the HPA needs)
  must hold, at once, every pod a rollout step has: the HPA's minimum, the surge pod, and
  the old pod still draining (a terminating pod keeps its request until it exits), plus
  `make rollout-check`'s load Job. A pod that does not fit waits Pending and the rollout
  stalls behind it. The load Job, a test client, requests little and may use an idle core
  up to its limit. A production cluster keeps the same numbers; there the fit is trivial.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

P99_OBJECTIVE_MS = 50.0
OPERATING_SHARE = 0.2
CPU_LIMIT_MILLICORES = 1000
CPU_REQUEST_MILLICORES = round(OPERATING_SHARE * CPU_LIMIT_MILLICORES)
HPA_TARGET_UTILIZATION_PERCENT = 100
MEMORY_LIMIT_MIB = 256
MEMORY_REQUEST_HEADROOM = 1.5
PROBE_TIMEOUT_MARGIN = 2
READINESS_TIMEOUT_SECONDS = 5
# A default `minikube start`: 2 CPUs; its control-plane pods request 750m of them
# (kube-apiserver 250m, kube-controller-manager 200m, kube-scheduler 100m, etcd 100m,
# CoreDNS 100m), and the metrics-server addon 100m.
MINIKUBE_CPU_MILLICORES = 2000
MINIKUBE_CONTROL_PLANE_MILLICORES = 750
MINIKUBE_METRICS_SERVER_MILLICORES = 100
ROLLOUT_CHECK_CPU_REQUEST_MILLICORES = 100


def minikube_spare_millicores(min_replicas: int, max_surge: int, pod_millicores: int) -> int:
    """CPU a default minikube has left during a rollout step of the HPA's minimum under
    `make rollout-check`'s load Job: the running pods, the surge pods and as many old pods
    still draining; negative means a pod waits Pending."""
    free = MINIKUBE_CPU_MILLICORES - MINIKUBE_CONTROL_PLANE_MILLICORES
    free -= MINIKUBE_METRICS_SERVER_MILLICORES
    pods = min_replicas + 2 * max_surge
    return free - pods * pod_millicores - ROLLOUT_CHECK_CPU_REQUEST_MILLICORES


@dataclass(frozen=True)
class Capacity:
    rps_per_pod_at_p99_objective: float
    rps_per_pod_at_hpa_target: float
    cpu_request_millicores: int
    cpu_limit_millicores: int
    hpa_target_utilization_percent: int
    memory_request_mib: int
    memory_limit_mib: int
    connections_within_memory_limit: int
    readiness_timeout_seconds: int
    readiness_timeout_needed_seconds: int
    lines: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def derive_capacity(summary: dict) -> Capacity:
    rows = summary["latency"]
    within = [row["rate"] for row in rows if 0 < row["p99_ms"] < P99_OBJECTIVE_MS]
    capacity = max(within, default=0.0)
    at_target = OPERATING_SHARE * capacity
    target_percent = HPA_TARGET_UTILIZATION_PERCENT

    memory, connections = summary["memory"], summary["connections"]
    loaded_mib = max(memory["rss_after_traffic_mib"], memory["rss_after_unknown_paths_mib"])
    request_mib = 32 * math.ceil(loaded_mib * MEMORY_REQUEST_HEADROOM / 32)
    per_connection_kib = max(connections["kib_per_connection"], 0.1)
    covered = int((MEMORY_LIMIT_MIB - request_mib) * 1024 / per_connection_kib)

    worst_probe_ms = summary["probe_under_saturation"]["max_ms"]
    needed = max(1, math.ceil(PROBE_TIMEOUT_MARGIN * worst_probe_ms / 1000))

    lines = [
        f"one pod (one core) keeps p99 < {P99_OBJECTIVE_MS:.0f} ms up to {capacity:.0f} req/s "
        f"(highest measured open-loop rate that did)",
        f"HPA target {target_percent}% of a {CPU_REQUEST_MILLICORES}m request = "
        f"{OPERATING_SHARE:.0%} of a core: about {at_target:.0f} req/s per pod before it "
        f"scales out, {1 / OPERATING_SHARE:.0f}x surge headroom up to the one-core limit",
        f"CPU: request {CPU_REQUEST_MILLICORES}m, limit {CPU_LIMIT_MILLICORES}m",
        f"memory: request {request_mib}Mi ({loaded_mib:.0f} MiB after traffic, "
        f"x{MEMORY_REQUEST_HEADROOM}), limit {MEMORY_LIMIT_MIB}Mi: room above the request for "
        f"{covered:,} open connections at {per_connection_kib:.1f} KiB each",
        f"readiness timeout {READINESS_TIMEOUT_SECONDS} s; it needs at least {needed} s: "
        f"{PROBE_TIMEOUT_MARGIN}x the slowest /readyz ({worst_probe_ms:.0f} ms) while "
        f"{summary['probe_under_saturation']['connections']} connections saturate the pod",
    ]
    return Capacity(
        rps_per_pod_at_p99_objective=capacity,
        rps_per_pod_at_hpa_target=at_target,
        cpu_request_millicores=CPU_REQUEST_MILLICORES,
        cpu_limit_millicores=CPU_LIMIT_MILLICORES,
        hpa_target_utilization_percent=target_percent,
        memory_request_mib=request_mib,
        memory_limit_mib=MEMORY_LIMIT_MIB,
        connections_within_memory_limit=covered,
        readiness_timeout_seconds=READINESS_TIMEOUT_SECONDS,
        readiness_timeout_needed_seconds=needed,
        lines=lines,
    )
