import asyncio
import logging

import pytest

from user_hasher.lifecycle import Lifecycle, Phase


def events(caplog: pytest.LogCaptureFixture) -> list[dict]:
    """The lifecycle's log records as the fields an operator filters on."""
    return [
        {
            key: getattr(record, key)
            for key in ("levelname", "event", "reason", "drain_seconds")
            if hasattr(record, key)
        }
        for record in caplog.records
        if record.name == "user_hasher.lifecycle"
    ]


async def settle() -> None:
    """Lets every task that can run without waiting for time run."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_phases_in_order() -> None:
    lifecycle = Lifecycle(drain_seconds=1)
    assert lifecycle.phase is Phase.STARTING
    assert not lifecycle.ready
    lifecycle.mark_started()
    assert lifecycle.ready
    lifecycle.begin_shutdown("test")
    assert lifecycle.draining
    assert not lifecycle.ready
    lifecycle.mark_started()  # a late startup hook must not make a draining pod ready again
    assert lifecycle.draining


def test_each_step_is_logged_with_its_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    lifecycle = Lifecycle(drain_seconds=7.5)
    lifecycle.mark_started()
    lifecycle.mark_started()  # already serving: nothing to say
    lifecycle.begin_shutdown("SIGTERM")
    lifecycle.begin_shutdown("SIGINT")
    assert events(caplog) == [
        {"levelname": "INFO", "event": "ready"},
        {"levelname": "INFO", "event": "draining", "reason": "SIGTERM", "drain_seconds": 7.5},
        {"levelname": "WARNING", "event": "drain_cut_short", "reason": "SIGINT"},
    ]


async def test_drained_waits_for_shutdown_then_the_drain(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    lifecycle = Lifecycle(drain_seconds=0)
    waiter = asyncio.create_task(lifecycle.drained())
    await settle()
    assert not waiter.done(), "the drain must not end before shutdown begins"
    lifecycle.begin_shutdown("test")
    await settle()
    assert waiter.done(), "a drain of 0 s ends as soon as shutdown begins"
    assert events(caplog)[-1] == {"levelname": "INFO", "event": "drained"}


async def test_second_signal_cuts_the_drain_short() -> None:
    lifecycle = Lifecycle(drain_seconds=3600)
    waiter = asyncio.create_task(lifecycle.drained())
    lifecycle.begin_shutdown("SIGTERM")
    await settle()
    assert not waiter.done()
    lifecycle.begin_shutdown("SIGTERM")
    await settle()
    assert waiter.done()
