import asyncio

from user_hasher.lifecycle import Lifecycle, Phase


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


async def test_drained_waits_for_shutdown_then_the_drain() -> None:
    lifecycle = Lifecycle(drain_seconds=0.2)
    waiter = asyncio.create_task(lifecycle.drained())
    await asyncio.sleep(0.5)
    assert not waiter.done(), "the drain must not end before shutdown begins"
    lifecycle.begin_shutdown("test")
    await asyncio.wait_for(waiter, timeout=10)


async def test_second_signal_cuts_the_drain_short() -> None:
    lifecycle = Lifecycle(drain_seconds=3600)
    waiter = asyncio.create_task(lifecycle.drained())
    lifecycle.begin_shutdown("SIGTERM")
    await asyncio.sleep(0.1)
    assert not waiter.done()
    lifecycle.begin_shutdown("SIGTERM")
    await asyncio.wait_for(waiter, timeout=10)
