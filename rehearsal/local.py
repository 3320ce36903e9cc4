"""The rehearsal on this machine: local `python -m user_hasher` processes behind HAProxy, no
cluster needed (`python -m rehearsal --mode local`; tests/process/test_rolling_update.py).

The same harness as on the cluster (stage.Stage, the report and its gates) with another
target, its stand-ins named as such:
- a pod is a local process on a loopback port of its own;
- the Service is HAProxy (proving/haproxy.py): it checks each pod's /readyz every 200 ms and
  stops routing to one that failed twice; nothing retries;
- a rollout is what `maxSurge: 1, maxUnavailable: 0` does to REPLICAS pods: one new pod,
  ready and serving, then one old pod sent SIGTERM and waited for, until none is left;
- the pod's endpoint turning not ready is HAProxy logging its server DOWN.

One open-loop load (both client kinds) runs through the proxy for the whole run.
"""

from __future__ import annotations

import math
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proving.haproxy import LoadBalancer
from proving.openloop import LoadPlan, LoadRun, Target, measure_saturation
from proving.service import ServiceProcess, answers_ready, http_get
from proving.waiting import wait_for
from rehearsal.observe import hashes_generated, revisions
from rehearsal.report import Gate, Rehearsal, Role
from rehearsal.stage import Stage, log

SALT = "rehearsal-salt"
REPLICAS = 2
# Each pod the run starts has a slot of its own: 2 to begin, 2 per rollout, 1 per kill.
SLOTS = 12
SATURATION_CONNECTIONS = 8
SATURATION_SECONDS = 2.0
RATE_SHARE_OF_SATURATION = 0.4  # well below saturation, so queueing is not the story
# A rate the 2-core CI machine serves through the proxy with room to spare.
RATE_CAP = 200.0
KEEP_ALIVE_SHARE = 0.5
LOAD_BOUND_SECONDS = 180.0
STEADY_SECONDS = 2.5
# Longer than the proxy takes to check a pod out of rotation (2 failed checks 200 ms apart):
# the drain exists to outlast it.
DRAIN_SECONDS = 2.0
GRACEFUL_TIMEOUT_SECONDS = 5.0
EXIT_TIMEOUT_SECONDS = DRAIN_SECONDS + GRACEFUL_TIMEOUT_SECONDS + 10
SETTLE_TIMEOUT_SECONDS = 30.0
# The event windows here are short; this floor only proves the load really ran.
MIN_ROLLOUT_REQUESTS = 500
NOT_READY_SOURCE = (
    "local stand-in: HAProxy's log line taking the pod's server DOWN (two failed /readyz "
    "checks), polled every 10 ms after the signal"
)


@dataclass
class LocalPod:
    name: str  # pod-N, N its slot
    slot: int
    revision: str
    service: ServiceProcess

    def served(self) -> bool:
        """It has answered a /user_hash: the proxy routes to it."""
        return hashes_generated(http_get(self.service.metrics_port, "/metrics")[2].decode()) > 0


@dataclass
class LocalFleet:
    """The pods behind the proxy. `live`: started and not yet signalled."""

    balancer: LoadBalancer
    log_dir: Path
    live: list[LocalPod] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)  # pods sent SIGTERM
    _next_slot: int = 0

    def start_pod(self, revision: str, drain_seconds: float) -> LocalPod:
        slot = self._next_slot
        if slot >= len(self.balancer.slot_ports):
            raise RuntimeError(f"all {len(self.balancer.slot_ports)} proxy slots used")
        self._next_slot += 1
        name = f"pod-{slot}"
        env = {
            "PORT": str(self.balancer.slot_ports[slot]),
            "USER_SALT": SALT,
            "APP_REVISION": revision,
            "DRAIN_SECONDS": str(drain_seconds),
            "GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_TIMEOUT_SECONDS),
        }
        service = ServiceProcess(self.log_dir / f"{name}.log", env).start()
        pod = LocalPod(name, slot, revision, service)
        self.live.append(pod)
        return pod

    def steady_pods(self) -> list[LocalPod] | None:
        if len(self.live) != REPLICAS:
            return None
        for pod in self.live:
            if not answers_ready(pod.service.port) or self.balancer.down(pod.slot):
                return None
            if not pod.served():
                return None
        return list(self.live)

    def revisions(self, pods: Sequence[LocalPod]) -> dict[str, list[str]]:
        return {
            pod.name: revisions(http_get(pod.service.metrics_port, "/metrics")[2].decode())
            for pod in pods
        }

    def stop_all(self) -> None:
        for pod in self.live:
            pod.service.stop()


@dataclass(kw_only=True)
class LocalStage(Stage):
    """The harness's Stage on local processes: the events are what a Deployment's rollout
    and a crash do to pods."""

    fleet: LocalFleet
    # A pod's port that does not answer yet (or any more) is "not yet", not an error.
    transient: tuple[type[BaseException], ...] = (OSError,)

    def _signal(self, pod: LocalPod, signum: signal.Signals) -> None:
        """Sends the signal and records when the proxy took the pod out of rotation."""
        self.fleet.live.remove(pod)
        signalled = self.clock()
        pod.service.send_signal(signum)
        self.event(f"{signum.name} {pod.name}", pod=pod.name)
        wait_for(
            lambda: self.fleet.balancer.down(pod.slot),
            self.settle_timeout,
            f"the proxy taking {pod.name} out of rotation",
            interval=0.01,
        )
        self.current.sigterm_to_not_ready[pod.name] = self.clock() - signalled
        self.event(f"{pod.name} not ready", pod=pod.name)

    def roll(self, revision: str, drain_seconds: float) -> None:
        """Replaces every pod, one at a time, with a pod of `revision` (maxSurge 1,
        maxUnavailable 0)."""
        for old in list(self.fleet.live):
            new = self.fleet.start_pod(revision, drain_seconds)
            self.event(f"{new.name} started ({revision})")
            self.wait(
                lambda new=new: answers_ready(new.service.port) and new.served(),
                f"{new.name} serving",
            )
            self.event(f"{new.name} ready and serving", pod=new.name)
            self._signal(old, signal.SIGTERM)
            code = old.service.wait_exit(timeout=EXIT_TIMEOUT_SECONDS)
            self.fleet.exit_codes[old.name] = code
            self.event(f"{old.name} exited ({code})", pod=old.name)

    def kill(self, revision: str, drain_seconds: float) -> None:
        """SIGKILL one pod; a new one replaces it, as the kubelet restarts a container."""
        victim = self.fleet.live[0]
        self._signal(victim, signal.SIGKILL)
        victim.service.wait_exit(timeout=EXIT_TIMEOUT_SECONDS)
        replacement = self.fleet.start_pod(revision, drain_seconds)
        self.event(f"{replacement.name} started ({revision})")


def rehearse_locally(log_dir: Path, haproxy: str | None = None) -> Rehearsal:
    """The run: each pod's log and the proxy's land in log_dir. `haproxy`: its binary (by
    default the one on PATH)."""
    haproxy = haproxy or shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("rehearsal: the local mode needs haproxy (apt-get install haproxy)")
    log_dir.mkdir(parents=True, exist_ok=True)
    with LoadBalancer(haproxy, log_dir / "haproxy.log", SLOTS) as balancer:
        fleet = LocalFleet(balancer, log_dir)
        try:
            # The proxy starts with the first pods ready behind it.
            for _ in range(REPLICAS):
                fleet.start_pod("local-1", DRAIN_SECONDS)
            for pod in fleet.live:
                pod.service.wait_ready()
            balancer.start(up=[pod.slot for pod in fleet.live])
            return _rehearse(balancer, fleet)
        finally:
            fleet.stop_all()


def _rehearse(balancer: LoadBalancer, fleet: LocalFleet) -> Rehearsal:
    target = Target("127.0.0.1", balancer.port, SALT)
    saturation = measure_saturation(
        target, SATURATION_CONNECTIONS, SATURATION_SECONDS, keep_alive_share=KEEP_ALIVE_SHARE
    )
    if saturation.errors or not saturation.requests:
        raise RuntimeError(f"saturation probe through the proxy failed: {saturation}")
    rate = min(saturation.rate * RATE_SHARE_OF_SATURATION, RATE_CAP)
    log(f"saturation through HAProxy: {saturation.rate:,.0f} req/s; load {rate:,.0f} req/s")
    plan = LoadPlan(
        rate=rate,
        duration=LOAD_BOUND_SECONDS,
        max_requests=math.ceil(rate * LOAD_BOUND_SECONDS),
        keep_alive_share=KEEP_ALIVE_SHARE,
    )
    with LoadRun(target, plan) as run:
        rehearsal = Rehearsal(
            target=f"HAProxy on 127.0.0.1:{balancer.port} before python -m user_hasher processes",
            rate=rate,
            saturation=saturation.rate,
            started_at=time.time() - run.elapsed(),
            min_rollout_requests=MIN_ROLLOUT_REQUESTS,
            not_ready_source=NOT_READY_SOURCE,
        )
        stage = LocalStage(
            fleet=fleet,
            clock=run.elapsed,
            rehearsal=rehearsal,
            steady_seconds=STEADY_SECONDS,
            settle_timeout=SETTLE_TIMEOUT_SECONDS,
        )
        after = stage.scenario(
            "rollout", Role.ROLLOUT, lambda _: stage.roll("local-2", DRAIN_SECONDS)
        )
        rehearsal.checks.append(
            Gate(
                "every pod reports revision local-2 after the rollout",
                all(found == ["local-2"] for found in after.values()),
                f"/metrics build_info revision per pod: {after}",
            )
        )
        stage.scenario("SIGKILL", Role.FAULT, lambda _: stage.kill("local-2", DRAIN_SECONDS))
        stage.scenario(
            "rollout DRAIN_SECONDS=0", Role.ROLLOUT, lambda _: stage.roll("local-3", 0.0)
        )
        stage.scenario(
            "rollout without drain", Role.NEGATIVE_CONTROL, lambda _: stage.roll("local-4", 0.0)
        )
        # Nothing is scheduled after this: the last scenario ends where the load does.
        rehearsal.records = run.stop()
        rehearsal.scenarios[-1].end = run.elapsed()
    codes = fleet.exit_codes
    rehearsal.checks.append(
        Gate(
            "every pod sent SIGTERM exited 0 (its graceful shutdown)",
            bool(codes) and set(codes.values()) == {0},
            f"exit codes {codes}",
        )
    )
    return rehearsal
