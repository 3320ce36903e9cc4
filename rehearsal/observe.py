"""What the cluster did during a rehearsal, seen from outside the app: its pods, its
Deployment and its Service's EndpointSlices through watches, each pod's log through
`kubectl logs --follow --timestamps`, and each pod's /metrics.

Times here are on the load's clock (LoadRun.elapsed): a watch event counts from when it
reached this machine, a log line from the container runtime's timestamp on it (the
moment the runtime read the line from the app's stdout).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proving.kubectl import Watch, WatchEvent, stop_process
from proving.local_cluster import LocalCluster
from proving.service import http_get
from proving.steady import steady_pods

# How often the log follower looks for containers it does not follow yet.
FOLLOW_POLL_SECONDS = 0.5
SCRAPE_TIMEOUT_SECONDS = 5.0
SCRAPE_ATTEMPTS = 3
SCRAPE_RETRY_SECONDS = 1.0


def build_info_labels(metrics_text: str, label: str) -> list[str]:
    """The values of one label of user_hasher_build_info in a /metrics answer."""
    return sorted(
        {
            sample.labels[label]
            for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples
            if sample.name == "user_hasher_build_info"
        }
    )


def hashes_generated(metrics_text: str) -> float:
    """user_hasher_hashes_generated_total in a /metrics answer: the pod has answered
    /user_hash once it is above 0."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "user_hasher_hashes_generated_total"
    )


def revisions(metrics_text: str) -> list[str]:
    """The revision label(s) of user_hasher_build_info: the build's own reference (the image
    sets APP_REVISION to its commit), which tells two builds of one version apart."""
    return build_info_labels(metrics_text, "revision")


def pod_revision(pod_ip: str, metrics_port: int) -> list[str]:
    """Which build the pod itself says it runs, from /metrics on its metrics port (scraped
    from the node, which the NetworkPolicy always admits).

    A scrape that does not connect or answer in time is tried again, a bounded number of
    times: a pod just restarted by a scenario (SIGKILL) on this shared machine has timed out
    once, which is no evidence about the build it runs."""
    for attempt in range(1, SCRAPE_ATTEMPTS + 1):
        try:
            status, _, body = http_get(
                metrics_port, "/metrics", SCRAPE_TIMEOUT_SECONDS, host=pod_ip
            )
            break
        except OSError:  # TimeoutError and refused connections alike
            if attempt == SCRAPE_ATTEMPTS:
                raise
            time.sleep(SCRAPE_RETRY_SECONDS)
    if status != 200:
        raise RuntimeError(f"/metrics on {pod_ip}:{metrics_port} answered {status}")
    return revisions(body.decode())


# --- Reading watch events ------------------------------------------------------------------


def restart_count(pod: dict[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return statuses[0].get("restartCount", 0) if statuses else 0


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an RFC 3339 time as Kubernetes and the container runtime write it
    (the runtime's nanoseconds are cut to the microseconds Python keeps)."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        whole, rest = text.split(".", 1)
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{whole}.{digits[:6]}{rest[len(digits) :]}"
    return datetime.datetime.fromisoformat(text).timestamp()


def draining_at(log_text: str) -> float | None:
    """Epoch seconds of the app's first "draining" line (the SIGTERM reaching it) in
    `kubectl logs --timestamps` output; None when it never drained."""
    for line in log_text.splitlines():
        stamp, _, message = line.partition(" ")
        if not message.startswith("{"):
            continue
        try:
            if json.loads(message).get("event") == "draining":
                return parse_timestamp(stamp)
        except json.JSONDecodeError:
            continue
    return None


def endpoint_readiness(events: Iterable[WatchEvent]) -> dict[str, list[tuple[float, bool]]]:
    """Per pod, each change of its endpoint's readiness across the Service's EndpointSlices,
    in arrival order: (arrival time, ready). An endpoint that leaves every slice counts
    as not ready."""
    slices: dict[str, dict[str, bool]] = {}  # slice name -> pod -> ready
    history: dict[str, list[tuple[float, bool]]] = {}
    for event in events:
        name = event.object["metadata"]["name"]
        if event.type == "DELETED":
            slices.pop(name, None)
        else:
            slices[name] = {
                endpoint["targetRef"]["name"]: bool(endpoint["conditions"].get("ready"))
                for endpoint in event.object.get("endpoints") or []
                if (endpoint.get("targetRef") or {}).get("kind") == "Pod"
            }
        merged: dict[str, bool] = {}
        for pods in slices.values():
            for pod, ready in pods.items():
                merged[pod] = merged.get(pod, False) or ready
        for pod in set(history) | set(merged):
            ready = merged.get(pod, False)
            changes = history.setdefault(pod, [])
            if not changes or changes[-1][1] != ready:
                changes.append((event.seconds, ready))
    return history


def turned_not_ready(changes: list[tuple[float, bool]], after: float) -> float | None:
    """The first time at or after `after` that a ready endpoint turned not ready."""
    was_ready = False
    for at, ready in changes:
        if at >= after and was_ready and not ready:
            return at
        was_ready = ready
    return None


def deletion_seen(events: Iterable[WatchEvent]) -> dict[str, tuple[float, float]]:
    """Per pod whose deletion a pod watch saw: (arrival of the first object showing it,
    epoch second the API server accepted it). The API server sets deletionTimestamp to
    that second plus the grace period."""
    seen: dict[str, tuple[float, float]] = {}
    for event in events:
        metadata = event.object["metadata"]
        if metadata["name"] not in seen and "deletionTimestamp" in metadata:
            accepted = parse_timestamp(metadata["deletionTimestamp"]) - metadata.get(
                "deletionGracePeriodSeconds", 0
            )
            seen[metadata["name"]] = (event.seconds, accepted)
    return seen


class Latest:
    """The newest version of each object a Watch has seen, deleted ones dropped."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.objects: dict[str, dict[str, Any]] = {}
        self._consumed = 0

    def refresh(self) -> dict[str, dict[str, Any]]:
        events = self.watch.snapshot()
        for event in events[self._consumed :]:
            name = event.object["metadata"]["name"]
            if event.type == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = event.object
        self._consumed = len(events)
        return self.objects


# --- The observer --------------------------------------------------------------------------


@dataclass
class Observer:
    """Watches the app's pods, Deployment and EndpointSlices from now on, and follows the
    log of every container of the app that runs, into log_dir. Stop it with stop()."""

    cluster: LocalCluster
    namespace: str
    deployment: str
    pod_selector: str
    service: str
    log_dir: Path
    pods: Watch = field(init=False)
    deployments: Watch = field(init=False)
    slices: Watch = field(init=False)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pods = self.cluster.watch("pods", self.namespace, self.pod_selector)
        self.deployments = self.cluster.watch("deployments", self.namespace)
        selector = f"kubernetes.io/service-name={self.service}"
        self.slices = self.cluster.watch("endpointslices", self.namespace, selector)
        self._pod_state, self._deployment_state = Latest(self.pods), Latest(self.deployments)
        self._followers: dict[str, tuple[subprocess.Popen[bytes], Path, str]] = {}
        self._stopping = threading.Event()
        self._follow_thread = threading.Thread(target=self._follow_new_containers, daemon=True)
        self._follow_thread.start()

    # --- state now ---------------------------------------------------------------------

    def live_pods(self) -> dict[str, dict[str, Any]]:
        return dict(self._pod_state.refresh())

    def steady_pods(self) -> list[dict[str, Any]] | None:
        """The pods when the app is steady (proving.steady), as the watches last showed it;
        None otherwise."""
        deployment = self._deployment_state.refresh().get(self.deployment)
        return steady_pods(deployment, self.live_pods().values())

    def replicas(self) -> int | None:
        """The Deployment's replica count, as the watch last showed it."""
        deployment = self._deployment_state.refresh().get(self.deployment)
        return None if deployment is None else deployment["spec"]["replicas"]

    # --- logs --------------------------------------------------------------------------

    def _follow_new_containers(self) -> None:
        state = Latest(self.pods)  # its own: this runs beside the caller's thread
        while not self._stopping.wait(FOLLOW_POLL_SECONDS):
            for name, pod in list(state.refresh().items()):
                statuses = pod.get("status", {}).get("containerStatuses") or []
                if not statuses or "running" not in statuses[0].get("state", {}):
                    continue
                container_id = statuses[0].get("containerID", "")
                if container_id and container_id not in self._followers:
                    self._follow(name, container_id, restart_count(pod))

    def _follow(self, pod: str, container_id: str, restarts: int) -> None:
        path = self.log_dir / f"{pod}-{restarts}.log"
        follow = ["logs", "--follow", "--timestamps", "--namespace", self.namespace, pod]
        with path.open("wb") as log:
            process = self.cluster.client.popen(*follow, stdout=log, stderr=subprocess.STDOUT)
        self._followers[container_id] = (process, path, pod)

    def draining_times(self) -> dict[str, float]:
        """Per pod, epoch seconds of its app's "draining" line (its SIGTERM), if any."""
        times: dict[str, float] = {}
        for _, path, pod in list(self._followers.values()):
            at = draining_at(path.read_text(errors="replace"))
            if at is not None and pod not in times:
                times[pod] = at
        return times

    def stop(self) -> None:
        self._stopping.set()
        self._follow_thread.join(timeout=10)
        for process, _, _ in self._followers.values():
            if process.poll() is None:
                process.terminate()  # all at once: each then has its time to go
        for process, _, _ in self._followers.values():
            stop_process(process)
        for watch in (self.pods, self.deployments, self.slices):
            watch.stop()
