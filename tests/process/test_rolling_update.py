"""A rolling update behind a real load balancer, the way a Service sees it.

HAProxy plays kube-proxy: it health-checks /readyz every 200 ms and stops
routing to a backend that fails once. Retries are off, so every request the
proxy cannot serve reaches the client as a failure. Two old pods are replaced by
a new one while the load runs, as `maxSurge: 1, maxUnavailable: 0` would.

The roll is a scenario of the zero-downtime rehearsal (rehearsal/report.py) with this
target: the same open-loop load, the same steady stretch and event window, the same
gates and the same summary row as the rehearsal on the cluster and `make rollout-check`.
"""

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proving.contract import CONTRACT_SALT
from proving.openloop import LoadPlan, LoadRun, Target
from proving.service import ServiceProcess, answers_ready, free_port
from proving.waiting import wait_until
from rehearsal.report import (
    Event,
    Gate,
    Rehearsal,
    Role,
    Scenario,
    gates,
    scenario_rows,
    scenario_summary,
)
from tests.support.needs import require_tool

pytestmark = pytest.mark.slow

StartService = Callable[..., ServiceProcess]
# The open-loop load through the proxy: both client kinds, a rate the 2-core CI machine
# serves with room to spare, bounded even if nobody stopped it.
LOAD = LoadPlan.bounded(rate=200, seconds=60)
# The event windows here are short; this floor only proves the load really ran.
MIN_ROLLOUT_REQUESTS = 50
HAPROXY_CONFIG = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    # No retries or redispatch: a request sent to a pod that refuses it is a failure.
    retries 0

frontend service
    bind 127.0.0.1:{port}
    default_backend pods

backend pods
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Like a readiness probe with periodSeconds 0.2, failureThreshold 2 and a timeout
    # generous enough that a pod busy with this very load is not taken for dead.
    timeout check 2s
    default-server inter 200ms fall 2 rise 1
{servers}
"""


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[list[int], str], int]]:
    binary = require_tool("haproxy", "apt-get install haproxy")
    processes: list[subprocess.Popen[bytes]] = []

    def start(backend_ports: list[int], down_at_start: str) -> int:
        port = free_port()
        servers = "\n".join(
            f"    server pod{n} 127.0.0.1:{backend} check"
            for n, backend in enumerate(backend_ports)
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
        log = (tmp_path / "haproxy.log").open("wb")
        processes.append(
            subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
        )
        assert wait_until(lambda: answers_ready(port), timeout=15), "haproxy did not come up"
        # HAProxy assumes a server up until its checks fail; traffic must not start
        # before the proxy has seen the not-yet-started surge pod as down.
        log_path = tmp_path / "haproxy.log"
        assert wait_until(lambda: f"{down_at_start} is DOWN" in log_path.read_text(), timeout=15)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _served_hashes(service: ServiceProcess) -> int:
    # LOG_LEVEL=DEBUG below: every request is access-logged.
    return service.output.count('"route": "/user_hash"')


def _roll(
    start_service: StartService,
    haproxy: Callable[[list[int], str], int],
    drain: str,
    scenario: Scenario,
) -> tuple[Rehearsal, list[int]]:
    """Runs `scenario` (its times are set here): a steady stretch once both old pods
    serve, then the event window from the surge pod's start to 50 answers after the
    last old pod exited."""
    env = {
        "USER_SALT": CONTRACT_SALT,
        "DRAIN_SECONDS": drain,
        "GRACEFUL_TIMEOUT_SECONDS": "5",
        "LOG_LEVEL": "DEBUG",
    }
    old = [start_service(**env), start_service(**env)]
    new_port = free_port()
    port = haproxy([old[0].port, old[1].port, new_port], "pods/pod2")
    new = start_service(wait_ready=False, PORT=str(new_port), **env)  # the surge pod
    exit_codes = []
    started_at = time.time()
    with LoadRun(Target("127.0.0.1", port, CONTRACT_SALT), LOAD) as load:
        scenario.start = load.elapsed()
        assert wait_until(lambda: all(_served_hashes(pod) > 0 for pod in old), timeout=15)
        scenario.event_start = load.elapsed()
        new.wait_ready()
        scenario.events.append(Event(load.elapsed(), "surge pod ready", pod="pod2"))
        assert wait_until(lambda: _served_hashes(new) > 0, timeout=15)
        for number, pod in enumerate(old):
            scenario.events.append(Event(load.elapsed(), "SIGTERM", pod=f"pod{number}"))
            pod.send_signal(signal.SIGTERM)
            exit_codes.append(pod.wait_exit(timeout=30))
            scenario.events.append(Event(load.elapsed(), "exited", pod=f"pod{number}"))
        served_before = load.answered()
        assert wait_until(lambda: load.answered() >= served_before + 50, timeout=15)
        records = load.stop()
        scenario.end = load.elapsed()
    rehearsal = Rehearsal(
        target=f"HAProxy on 127.0.0.1:{port} before python -m user_hasher processes",
        rate=LOAD.rate,
        saturation=None,
        started_at=started_at,
        min_rollout_requests=MIN_ROLLOUT_REQUESTS,
        not_ready_source="HAProxy's /readyz checks (not observed here)",
        scenarios=[scenario],
        records=records,
    )
    print("\n".join(scenario_rows([scenario_summary(records, scenario)])))
    return rehearsal, exit_codes


def _verdict(rehearsal: Rehearsal) -> dict[str, Gate]:
    return {gate.name: gate for gate in gates(rehearsal)}


def test_rolling_update_behind_a_load_balancer_drops_nothing(
    start_service: StartService, haproxy: Callable[[list[int], str], int]
) -> None:
    scenario = Scenario("haproxy-roll-with-drain", Role.ROLLOUT, 0.0, 0.0, 0.0)
    rehearsal, exit_codes = _roll(start_service, haproxy, "2", scenario)
    verdict = _verdict(rehearsal)
    for name in (
        f"0 failed requests in {scenario.name}",
        f"at least {MIN_ROLLOUT_REQUESTS} requests during the rollouts",
        "0 failed requests outside the scenarios",
    ):
        assert verdict[name].passed, f"{name}: {verdict[name].detail}"
    assert exit_codes == [0, 0]


def test_negative_control_without_a_drain_the_load_balancer_drops_requests(
    start_service: StartService, haproxy: Callable[[list[int], str], int]
) -> None:
    """Same roll with DRAIN_SECONDS=0: the pod stops listening before the proxy
    notices, so requests fail. This is what the drain is for, and proves the
    zero above is not the checker's blindness."""
    scenario = Scenario("haproxy-roll-no-drain", Role.NEGATIVE_CONTROL, 0.0, 0.0, 0.0)
    rehearsal, exit_codes = _roll(start_service, haproxy, "0", scenario)
    gate = _verdict(rehearsal)[f"negative control {scenario.name} records failures"]
    assert gate.passed, gate.detail
    assert exit_codes == [0, 0]
