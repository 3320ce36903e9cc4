"""What a rehearsal recorded, and what it means: summary.json, the gates, the verdict.

Every time here is in seconds on one clock, the load generator's (LoadRun.elapsed):
request records, scenario windows and events alike, so they line up without
conversion. `Rehearsal.started_at` ties that clock's zero to the wall clock.
"""

from __future__ import annotations

import datetime
import enum
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proving.openloop import Client, RequestRecord, Summary, in_window, summarize

# A gated scenario whose requests all succeeded proves something only if both client
# kinds were there; this many of each is the least that counts as "there".
MIN_REQUESTS_PER_CLIENT = 10
FAILURE_SAMPLES = 20


class Role(enum.StrEnum):
    ROLLOUT = "rollout"  # gated; its requests count toward the rehearsal's request floor
    DISRUPTION = "disruption"  # gated: a voluntary disruption such as a scale-down
    FAULT = "fault"  # reported, not gated: no drain can save requests from a killed pod
    NEGATIVE_CONTROL = "negative-control"  # must fail requests, or the checker is blind


GATED_ROLES = (Role.ROLLOUT, Role.DISRUPTION)


@dataclass(frozen=True)
class Event:
    at: float
    what: str  # "make rollout (restart)", "SIGTERM x2k4q", "rollout complete", ...
    # What happened to one pod (its SIGTERM, its endpoint turning not ready), as opposed
    # to what the rehearsal did: the plot marks these instead of labelling each.
    pod: str | None = None
    # The node an action was about (cordon, drain, death, return): the plot marks these
    # in a colour of their own.
    node: str | None = None


@dataclass
class Scenario:
    """A steady-state stretch [start, event_start), then the event window
    [event_start, end) in which the scenario's events happen."""

    name: str
    role: Role
    start: float
    event_start: float
    end: float
    events: list[Event] = field(default_factory=list)
    # The builds the pods reported before and after the event: the revision label of
    # user_hasher_build_info (two builds of one version differ there).
    revisions_seen: list[str] = field(default_factory=list)
    # Per pod: seconds from its SIGTERM to its endpoint turning not ready (None: never
    # seen); how it was observed is the rehearsal's `not_ready_source`.
    sigterm_to_not_ready: dict[str, float | None] = field(default_factory=dict)
    # What the scenario measured beyond the requests (the node-death window, where pods
    # landed, the fewest ready endpoints): reported as is, in summary.json and the summary.
    measurements: dict[str, Any] = field(default_factory=dict)

    @property
    def gated(self) -> bool:
        return self.role in GATED_ROLES


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class Rehearsal:
    target: str  # where the load went, in words
    rate: float  # requests per second of the open loop
    saturation: float | None  # closed-loop requests per second it was derived from
    started_at: float  # epoch seconds at zero on the records' clock
    min_rollout_requests: int  # the floor for the rollout scenarios' event windows together
    not_ready_source: str  # how sigterm_to_not_ready was observed
    scenarios: list[Scenario] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    # What the scenarios checked on the cluster itself (the PDB refused a second eviction,
    # every pod reports the new build's revision): gates like the others.
    checks: list[Gate] = field(default_factory=list)
    # The multi-node run leaves the negative control to the single-node one (docs/testing.md).
    negative_control_required: bool = True
    # Where each pod ran and each node's zone, and each pod's endpoint readiness over time
    # ((seconds, ready) changes): the plot's pod lanes, coloured by node.
    pod_nodes: dict[str, str] = field(default_factory=dict)
    node_zones: dict[str, str] = field(default_factory=dict)
    pod_ready: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)


# --- Per scenario -----------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _window(summary: Summary) -> dict[str, Any]:
    return {
        "requests": summary.requests,
        "failed": summary.failed,
        "p50_ms": _ms(summary.p50),
        "p99_ms": _ms(summary.p99),
        # Of the latency, the part spent before the request was sent (client side).
        "p99_wait_ms": _ms(summary.p99_wait),
    }


def p99_ratio(records: list[RequestRecord], scenario: Scenario) -> float | None:
    steady = summarize(records, scenario.start, scenario.event_start).p99
    during = summarize(records, scenario.event_start, scenario.end).p99
    return None if not steady or during is None else during / steady


def scenario_summary(records: list[RequestRecord], scenario: Scenario) -> dict[str, Any]:
    whole = summarize(records, scenario.start, scenario.end)
    window = in_window(records, scenario.start, scenario.end)
    failures = sorted((r for r in window if not r.ok), key=lambda r: r.intended)
    # The first failures, and the first of every other kind, so each kind has an example.
    samples = failures[:FAILURE_SAMPLES]
    for r in failures[FAILURE_SAMPLES:]:
        if r.error not in {sample.error for sample in samples}:
            samples.append(r)
    ratio = p99_ratio(records, scenario)
    return {
        "name": scenario.name,
        "role": str(scenario.role),
        "gated": scenario.gated,
        "start_s": round(scenario.start, 3),
        "event_start_s": round(scenario.event_start, 3),
        "end_s": round(scenario.end, 3),
        "duration_s": round(scenario.end - scenario.start, 3),
        "requests": whole.requests,
        "failed": whole.failed,
        "requests_by_client": whole.requests_by_client,
        "failed_by_client": whole.failed_by_client,
        "errors_by_kind": whole.errors_by_kind,
        "steady": _window(summarize(records, scenario.start, scenario.event_start)),
        "during": _window(summarize(records, scenario.event_start, scenario.end)),
        "p99_during_over_steady": None if ratio is None else round(ratio, 2),
        "revisions_seen": scenario.revisions_seen,
        "sigterm_to_not_ready_s": {
            pod: None if seconds is None else round(seconds, 3)
            for pod, seconds in scenario.sigterm_to_not_ready.items()
        },
        "events": [
            {"at_s": round(event.at, 3), "what": event.what}
            | ({"pod": event.pod} if event.pod else {})
            | ({"node": event.node} if event.node else {})
            for event in scenario.events
        ],
        "measurements": scenario.measurements,
        "failure_samples": [
            {
                "intended_s": round(r.intended, 4),
                "latency_ms": _ms(r.latency),
                "client": str(r.client),
                "error": str(r.error),
                "detail": r.detail,
            }
            for r in samples
        ],
    }


# --- Gates ------------------------------------------------------------------------------


def latency_ratio_median(rehearsal: Rehearsal) -> float | None:
    """During-event p99 over steady p99, median over the gated scenarios (reported only:
    a p99 on a shared 2-core machine is too noisy to gate on)."""
    ratios = [p99_ratio(rehearsal.records, s) for s in rehearsal.scenarios if s.gated]
    known = [ratio for ratio in ratios if ratio is not None]
    return statistics.median(known) if known else None


def gates(rehearsal: Rehearsal) -> list[Gate]:
    records = rehearsal.records
    result = []
    for scenario in rehearsal.scenarios:
        summary = summarize(records, scenario.start, scenario.end)
        counts = ", ".join(
            f"{client} {summary.requests_by_client.get(client, 0):,}" for client in Client
        )
        if scenario.gated:
            both_kinds = all(
                summary.requests_by_client.get(client, 0) >= MIN_REQUESTS_PER_CLIENT
                for client in Client
            )
            result.append(
                Gate(
                    f"0 failed requests in {scenario.name}",
                    summary.failed == 0 and both_kinds,
                    f"{summary.failed:,} of {summary.requests:,} failed ({counts})",
                )
            )
        elif scenario.role is Role.NEGATIVE_CONTROL:
            result.append(
                Gate(
                    f"negative control {scenario.name} records failures",
                    summary.failed > 0,
                    f"{summary.failed:,} of {summary.requests:,} failed {summary.errors_by_kind}",
                )
            )
    rollout_requests = sum(
        summarize(records, s.event_start, s.end).requests
        for s in rehearsal.scenarios
        if s.role is Role.ROLLOUT
    )
    result.append(
        Gate(
            f"at least {rehearsal.min_rollout_requests:,} requests during the rollouts",
            rollout_requests >= rehearsal.min_rollout_requests,
            f"{rollout_requests:,} requests in the rollout event windows",
        )
    )
    # Load runs between scenarios too; a failure there must not go unseen.
    outside = [
        r
        for r in records
        if not r.ok and not any(s.start <= r.intended < s.end for s in rehearsal.scenarios)
    ]
    result.append(
        Gate(
            "0 failed requests outside the scenarios",
            not outside,
            f"{len(outside):,} failed between scenarios",
        )
    )
    if rehearsal.negative_control_required and not any(
        s.role is Role.NEGATIVE_CONTROL for s in rehearsal.scenarios
    ):
        result.append(Gate("a negative control ran", False, "no negative-control scenario"))
    return result + rehearsal.checks


# --- Outputs ----------------------------------------------------------------------------


def summary(rehearsal: Rehearsal) -> dict[str, Any]:
    checked = gates(rehearsal)
    whole = summarize(rehearsal.records)
    ratio = latency_ratio_median(rehearsal)
    return {
        "target": rehearsal.target,
        "started_at": datetime.datetime.fromtimestamp(rehearsal.started_at, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "rate_per_s": round(rehearsal.rate, 1),
        "saturation_per_s": None if rehearsal.saturation is None else round(rehearsal.saturation),
        "requests": whole.requests,
        "failed": whole.failed,
        "not_ready_source": rehearsal.not_ready_source,
        "scenarios": [scenario_summary(rehearsal.records, s) for s in rehearsal.scenarios],
        "nodes": {
            node: {
                "zone": zone,
                "pods": sorted(p for p, n in rehearsal.pod_nodes.items() if n == node),
            }
            for node, zone in sorted(rehearsal.node_zones.items())
        },
        "p99_during_over_steady_median": None if ratio is None else round(ratio, 2),
        "gates": [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in checked],
        "passed": all(g.passed for g in checked),
    }


def write_summary(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _format_ms(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.1f}"


def _percentiles(window: dict[str, Any]) -> str:
    return f"{_format_ms(window['p50_ms'])}/{_format_ms(window['p99_ms'])}"


def _not_ready(seconds: dict[str, float | None]) -> str:
    """Each stopped pod's SIGTERM-to-not-ready, in milliseconds (negative: not ready first)."""
    return ", ".join("?" if s is None else f"{s * 1000:+.0f}" for s in seconds.values()) or "-"


def scenario_rows(scenarios: list[dict[str, Any]]) -> list[str]:
    """A table of scenario_summary()s: a header, then a line per scenario."""
    # The name column as wide as the longest name (one space to spare), at least 25.
    width = max([25, *(len(s["name"]) + 1 for s in scenarios)])
    lines = [
        f"{'scenario':<{width}}{'role':<17}{'requests':>9}{'failed':>7}  {'steady':>12}"
        f"{'during':>13}  {'SIGTERM->not ready':<20} errors",
        f"{'':<{width + 35}}{'p50/p99 ms':>12}{'p50/p99 ms':>13}  {'ms, per pod':<20}",
    ]
    for s in scenarios:
        errors = ", ".join(f"{kind} {count}" for kind, count in s["errors_by_kind"].items())
        lines.append(
            f"{s['name']:<{width}}{s['role']:<17}{s['requests']:>9,}{s['failed']:>7,}  "
            f"{_percentiles(s['steady']):>12}{_percentiles(s['during']):>13}  "
            f"{_not_ready(s['sigterm_to_not_ready_s']):<20} {errors or '-'}".rstrip()
        )
    return lines


def human_summary(data: dict[str, Any], outputs: list[Path]) -> str:
    saturation = data["saturation_per_s"]
    of_saturation = (
        f" ({data['rate_per_s'] / saturation:.0%} of {saturation:,}/s)" if saturation else ""
    )
    seconds = max((s["end_s"] for s in data["scenarios"]), default=0.0)
    lines = [
        f"Rehearsal against {data['target']}: {data['requests']:,} requests in {seconds:.0f} s "
        f"at {data['rate_per_s']:,}/s{of_saturation}, {data['failed']:,} failed",
        "",
        *scenario_rows(data["scenarios"]),
        "",
    ]
    for scenario in data["scenarios"]:
        for name, value in scenario.get("measurements", {}).items():
            lines.append(f"{scenario['name']}: {name}: {value}")
    if any(s.get("measurements") for s in data["scenarios"]):
        lines.append("")
    for gate in data["gates"]:
        lines.append(f"{'PASS' if gate['passed'] else 'FAIL'}  {gate['name']}: {gate['detail']}")
    ratio = data["p99_during_over_steady_median"]
    lines.append(
        "latency: p99 during events / steady p99, median over gated scenarios: "
        f"{'-' if ratio is None else f'{ratio:.2f}x'} (reported, not gated)"
    )
    lines.append(f"wrote {', '.join(str(path) for path in outputs)}")
    lines.append(f"RESULT: {'PASS' if data['passed'] else 'FAIL'}")
    return "\n".join(line.rstrip() for line in lines)
