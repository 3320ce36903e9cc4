"""Polling until a condition holds: every wait is bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(TimeoutError):
    """A condition did not hold within its time."""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Polls predicate until it is true or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_for(
    produce: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.5,
    transient: tuple[type[BaseException], ...] = (),
) -> T:
    """Polls until `produce` returns something truthy, and returns it; raises WaitTimeoutError
    naming `what` when the time is up. An exception of a `transient` kind counts as
    "not yet" (and is named in the timeout's message)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = produce()
            if value:
                return value
        except transient as error:
            last_error = error
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"not within {timeout:.0f} s: {what} (last error: {last_error})")
        time.sleep(interval)
