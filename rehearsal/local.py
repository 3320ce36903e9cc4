"""The rehearsal against local `python -m user_hasher` processes: no cluster needed.

It runs scenarios through the same report as the cluster rehearsal, with stand-ins
named as such:
- a pod is a local process on its own loopback port, one per scenario;
- the Service stopping routing to a terminating pod is the load stopping
  ENDPOINT_REMOVAL_SECONDS after the signal (each scenario's load goes to its one
  process, and the processes share the load's clock);
- the pod's endpoint turning not ready is its /readyz no longer answering 200.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

from proving.openloop import LoadPlan, LoadRun, RequestRecord, Target, measure_saturation
from proving.service import ServiceProcess, answers_ready, http_get
from rehearsal.observe import revisions
from rehearsal.report import Event, Rehearsal, Role, Scenario

SALT = "rehearsal-salt"
SATURATION_CONNECTIONS = 8
SATURATION_SECONDS = 2.0
RATE_SHARE_OF_SATURATION = 0.4  # well below saturation, so queueing is not the story
STEADY_SECONDS = 2.5
DRAIN_SECONDS = 3.0
# Shorter than the drain, as a Service's endpoint removal is: the drain exists to
# outlast it.
ENDPOINT_REMOVAL_SECONDS = 1.5
GRACEFUL_TIMEOUT_SECONDS = 5.0
# The event windows here are short; this floor only proves the load really ran.
MIN_ROLLOUT_REQUESTS = 50
NOT_READY_SOURCE = "local stand-in: the process's /readyz stops answering 200"


@dataclass(frozen=True)
class LocalScenario:
    name: str
    role: Role
    signal: signal.Signals
    drain_seconds: float


SCENARIOS = (
    LocalScenario("sigterm-with-drain", Role.ROLLOUT, signal.SIGTERM, DRAIN_SECONDS),
    LocalScenario("sigkill", Role.FAULT, signal.SIGKILL, DRAIN_SECONDS),
    LocalScenario("sigterm-without-drain", Role.NEGATIVE_CONTROL, signal.SIGTERM, 0.0),
)


def _start(log_dir: Path, name: str, drain_seconds: float) -> ServiceProcess:
    env = {
        "USER_SALT": SALT,
        # Each scenario's process a build of its own, as the cluster's rollouts see them.
        "APP_REVISION": f"local-{name}",
        "DRAIN_SECONDS": str(drain_seconds),
        "GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_TIMEOUT_SECONDS),
    }
    return ServiceProcess(log_dir / f"{name}.log", env).start().wait_ready()


def _measure_rate(log_dir: Path) -> tuple[float, float]:
    service = _start(log_dir, "saturation", DRAIN_SECONDS)
    try:
        target = Target("127.0.0.1", service.port, SALT)
        # The same mix of client kinds as the load: new connections cost far more.
        saturation = measure_saturation(
            target, SATURATION_CONNECTIONS, SATURATION_SECONDS, keep_alive_share=0.5
        )
    finally:
        service.stop()
    if saturation.errors or not saturation.requests:
        raise RuntimeError(f"saturation probe failed: {saturation}")
    return saturation.rate, saturation.rate * RATE_SHARE_OF_SATURATION


def _run_scenario(
    spec: LocalScenario, service: ServiceProcess, rate: float, origin: float
) -> tuple[Scenario, list[RequestRecord]]:
    target = Target("127.0.0.1", service.port, SALT)
    # Bounded by its plan even if nobody stopped it.
    plan = LoadPlan(
        rate=rate,
        duration=STEADY_SECONDS + ENDPOINT_REMOVAL_SECONDS + 10,
        max_requests=int(rate * (STEADY_SECONDS + ENDPOINT_REMOVAL_SECONDS + 10)) + 1,
    )
    serving = revisions(http_get(service.metrics_port, "/metrics")[2].decode())
    with LoadRun(target, plan, clock_origin=origin) as run:
        start = run.elapsed()
        time.sleep(STEADY_SECONDS)
        signalled = run.elapsed()
        service.send_signal(spec.signal)
        pod = f"local-{spec.name}"
        events = [Event(signalled, f"{pod} {spec.signal.name}")]
        not_ready = None
        while run.elapsed() < signalled + ENDPOINT_REMOVAL_SECONDS:
            if not_ready is None and not answers_ready(service.port):
                not_ready = run.elapsed() - signalled
            time.sleep(0.01)
        events.append(Event(run.elapsed(), "endpoint removed (stand-in: load stops)"))
    exit_code = service.wait_exit(timeout=DRAIN_SECONDS + GRACEFUL_TIMEOUT_SECONDS + 10)
    end = run.elapsed()
    events.append(Event(end, f"{pod} exited ({exit_code})"))
    scenario = Scenario(
        name=spec.name,
        role=spec.role,
        start=start,
        event_start=signalled,
        end=end,
        events=events,
        revisions_seen=serving,
        sigterm_to_not_ready={pod: not_ready},
    )
    return scenario, run.records


def rehearse_locally(log_dir: Path) -> Rehearsal:
    """Runs SCENARIOS one after another; each process's log lands in log_dir."""
    log_dir.mkdir(parents=True, exist_ok=True)
    saturation, rate = _measure_rate(log_dir)
    origin, started_at = time.monotonic(), time.time()
    rehearsal = Rehearsal(
        target="local python -m user_hasher processes",
        rate=rate,
        saturation=saturation,
        started_at=started_at,
        min_rollout_requests=MIN_ROLLOUT_REQUESTS,
        not_ready_source=NOT_READY_SOURCE,
    )
    for spec in SCENARIOS:
        service = _start(log_dir, spec.name, spec.drain_seconds)
        try:
            scenario, records = _run_scenario(spec, service, rate, origin)
        finally:
            service.stop()
        rehearsal.scenarios.append(scenario)
        rehearsal.records.extend(records)
    return rehearsal
