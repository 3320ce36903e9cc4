"""The zero-downtime harness's driver: scenarios run one after another under one load, on
any target.

A target is a Fleet: the pods behind the address the load goes to, however they run (a
Deployment behind a Service on the cluster, `python -m user_hasher` processes behind HAProxy
on this machine). Each scenario starts from a steady fleet (its pods ready and serving), holds
a steady stretch, then runs its event (`act`) and waits until the fleet is steady again.
Every event is stamped on the load's clock, as the records are, so report.py can lay the
requests over the scenario windows; the scenarios together cover the run, so no failed
request falls between them unseen (report.gates).

Who drives it: the cluster rehearsals (scenarios.py, nodes.py), the local one (local.py, also
tests/process/test_rolling_update.py) and `make rollout-check` (rollout_check.py), whose load
runs in the cluster and is read back when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proving.waiting import wait_for
from rehearsal.report import Event, Rehearsal, Role, Scenario

# How often a wait for the fleet asks it again.
POLL_SECONDS = 0.25


def log(message: str, tag: str = "rehearsal") -> None:
    print(f"{tag}: {message}", file=sys.stderr, flush=True)


class Fleet(Protocol):
    """The pods a scenario disturbs, as whatever runs them sees them."""

    def steady_pods(self) -> Sequence[Any] | None:
        """The pods when the fleet is steady (each ready and serving, none going); None
        otherwise."""

    def revisions(self, pods: Sequence[Any]) -> dict[str, list[str]]:
        """Per pod, the builds it reports (the revision label of user_hasher_build_info);
        empty when the target cannot see them."""


@dataclass(kw_only=True)
class Stage:
    """Runs scenarios against `fleet` while a load runs; `clock` is the load's (seconds since
    its start, LoadRun.elapsed)."""

    fleet: Fleet
    clock: Callable[[], float]
    rehearsal: Rehearsal
    steady_seconds: float
    settle_timeout: float
    # Exceptions a wait counts as "not yet" (a kubectl call that failed once, ...).
    transient: tuple[type[BaseException], ...] = ()
    tag: str = "rehearsal"  # what its log lines start with

    @property
    def current(self) -> Scenario:
        return self.rehearsal.scenarios[-1]

    def event(self, what: str, pod: str | None = None, node: str | None = None) -> None:
        at = self.clock()
        self.current.events.append(Event(at, what, pod=pod, node=node))
        log(f"{at:7.1f} s  {what}", self.tag)

    def wait(self, produce: Callable[[], Any], what: str) -> Any:
        """Polls until `produce` returns something truthy and returns it; bounded by
        settle_timeout."""
        return wait_for(produce, self.settle_timeout, what, POLL_SECONDS, self.transient)

    def wait_steady(self) -> Sequence[Any]:
        return self.wait(self.fleet.steady_pods, "the app steady")

    def scenario(
        self, name: str, role: Role, act: Callable[[Sequence[Any]], None]
    ) -> dict[str, list[str]]:
        """From a steady fleet, a steady stretch, act(pods), until steady again; returns each
        pod's revisions afterwards. It starts where the previous scenario ended."""
        start = self.rehearsal.scenarios[-1].end if self.rehearsal.scenarios else 0.0
        self.rehearsal.scenarios.append(Scenario(name, role, start, start, start))
        log(f"{self.clock():7.1f} s  --- {name} ({role})", self.tag)
        before = self.wait_steady()
        seen = set().union(*self.fleet.revisions(before).values())
        time.sleep(self.steady_seconds)
        self.current.event_start = self.clock()
        act(before)
        after = self.wait_steady()
        revisions = self.fleet.revisions(after)
        self.current.revisions_seen = sorted(seen.union(*revisions.values()))
        self.current.end = self.clock()
        log(f"{self.current.end:7.1f} s  steady again", self.tag)
        return revisions
