"""`docker stop` is how Kubernetes ends a pod: SIGTERM to PID 1, SIGKILL after the grace period.

With an exec-form entrypoint the service gets the SIGTERM, drains and exits 0. With a shell
wrapper as PID 1 the signal is ignored and the stop ends in SIGKILL (exit 137): this catches it.
"""

import math
import threading
import time
from collections.abc import Callable

import pytest

from proving.contract import CONTRACT_SALT
from proving.docker import HARDENED_RUN_ARGS, Container
from proving.openloop import LoadPlan, LoadRun, Target, keep_alive_closes
from proving.waiting import wait_until
from user_hasher.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]

StartContainer = Callable[..., Container]
# Both client kinds at a rate the container serves with room to spare; bounded by itself.
LOAD = LoadPlan.bounded(rate=200, seconds=60)


def test_docker_stop_under_load_drains_drops_nothing_and_exits_0(
    start_container: StartContainer,
) -> None:
    # The image's defaults, as a pod without overrides runs them.
    drain = Settings.model_fields["DRAIN_SECONDS"].default
    graceful = Settings.model_fields["GRACEFUL_TIMEOUT_SECONDS"].default
    # Like terminationGracePeriodSeconds: SIGKILL only after drain + graceful shutdown + 1 s.
    grace_seconds = math.ceil(drain + graceful + 1)
    container = start_container(*HARDENED_RUN_ARGS, USER_SALT=CONTRACT_SALT)

    stop_result: list[float] = []
    stopper = threading.Thread(
        target=lambda: stop_result.append(container.stop(grace_seconds)), daemon=True
    )
    readyz_during_drain: list[int] = []
    with LoadRun(Target("127.0.0.1", container.port, CONTRACT_SALT), LOAD) as load:
        assert wait_until(lambda: load.answered() >= 50, timeout=15), "load never got going"
        stopped_at = time.monotonic()
        stopper.start()
        assert wait_until(
            lambda: (
                readyz_during_drain.append(container.get("/readyz")[0])
                or readyz_during_drain[-1] == 503
            ),
            timeout=drain / 2,
        ), "SIGTERM did not reach the service: /readyz never turned 503"
        # A Service stops routing to the pod once it is unready; the load here stops
        # inside the drain window the same way, well before the listener closes.
        time.sleep(max(0.0, stopped_at + drain / 2 - time.monotonic()))
        records = load.stop()
    stopper.join(timeout=grace_seconds + 60)
    assert stop_result, "docker stop did not return"
    stop_seconds = stop_result[0]
    state = container.inspect()["State"]

    failures = [record for record in records if not record.ok]
    closes = keep_alive_closes(records)
    print(
        f"load: {len(records) - len(failures)} ok, {len(failures)} failed, "
        f"{closes} keep-alive answers said Connection: close; docker stop took "
        f"{stop_seconds:.2f} s, exit code {state['ExitCode']}"
    )
    assert failures == []
    assert closes > 0
    assert state["ExitCode"] == 0, "not 0: killed (137) instead of a graceful exit?"
    assert not state["OOMKilled"]
    assert stop_seconds <= drain + graceful + 1
    # It drained (kept serving, unready) rather than dying at once.
    assert stop_seconds >= drain - 0.5
    assert '"event": "drained"' in container.logs()


def test_negative_control_a_shell_wrapper_as_pid_1_ends_in_sigkill(
    start_container: StartContainer,
) -> None:
    """The exit-code check above means something: a shell-form CMD (`sh -c ...`) is caught."""
    grace_seconds = 3  # short: the outcome (SIGKILL, 137) is the point, not the wait
    container = start_container(
        "--entrypoint",
        "/bin/sh",
        *HARDENED_RUN_ARGS,
        command=["-c", "/opt/venv/bin/python -m user_hasher"],
    )
    stop_seconds = container.stop(grace_seconds)
    state = container.inspect()["State"]
    print(f"shell as PID 1: docker stop took {stop_seconds:.2f} s, exit code {state['ExitCode']}")
    assert state["ExitCode"] == 137
    assert stop_seconds >= grace_seconds
    assert '"event": "draining"' not in container.logs()
