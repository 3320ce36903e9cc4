"""rollout.png: the whole rehearsal at a glance.

Top: latency from each request's intended start (p50 and p99 of the answered
requests per time bin, log scale), each failed request a red mark, each scenario's
event window shaded by its role and its events as labelled lines (node events, such as
a cordon, a drain, a death or a return, in their own colour). Middle: requests per
second by client kind, failed ones in red, so a gap in the load is seen too. Bottom,
when the rehearsal recorded them: one lane per pod, drawn while its endpoint was ready,
coloured by the node (and zone) it ran on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from proving.openloop import Client, percentile
from rehearsal.report import Event, Rehearsal, Role

ROLE_COLOURS = {
    Role.ROLLOUT: "#c6dbef",
    Role.DISRUPTION: "#c7e9c0",
    Role.FAULT: "#fdd0a2",
    Role.NEGATIVE_CONTROL: "#f4b6c2",
}
CLIENT_COLOURS = {Client.KEEP_ALIVE: "#7fa7d9", Client.NEW_CONNECTION: "#8fcf9f"}
FAILED = "#d7191c"
# Instant failures (a refused connection) take microseconds; drawn at this floor
# they stay visible on the log scale.
FLOOR_MS = 0.1
TARGET_BINS = 400
NODE_EVENT = "#8c2d04"
NODE_COLOURS = ["#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]


def _merge_close(events: list[Event], within: float) -> list[tuple[float, str]]:
    """Events closer than `within` seconds share one line and one label, so labels
    never print over each other."""
    merged: list[tuple[float, str]] = []
    for event in sorted(events, key=lambda event: event.at):
        if merged and event.at - merged[-1][0] < within:
            merged[-1] = (merged[-1][0], f"{merged[-1][1]}; {event.what}")
        else:
            merged.append((event.at, event.what))
    return merged


def plot_rehearsal(rehearsal: Rehearsal, path: Path) -> None:
    records = rehearsal.records
    end = max([r.intended for r in records] + [s.end for s in rehearsal.scenarios] + [1.0])
    width = max(0.1, end / TARGET_BINS)  # seconds per bin

    answered: dict[int, list[float]] = defaultdict(list)
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for record in records:
        index = math.floor(record.intended / width)
        if record.ok:
            answered[index].append(record.latency * 1000)
            counts[index, record.client] += 1
        else:
            counts[index, "failed"] += 1
    failed = [r for r in records if not r.ok]

    figure = Figure(figsize=(14, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # renders with Agg: no display, no global pyplot state
    lanes = bool(rehearsal.pod_ready)
    if lanes:
        latency_axes, rate_axes, pod_axes = figure.subplots(
            3, 1, sharex=True, height_ratios=[3, 1, 1.3]
        )
        figure.set_figheight(9.5)
        _pod_lanes(rehearsal, pod_axes, end)
    else:
        latency_axes, rate_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])

    stopped_at: list[float] = []
    for number, scenario in enumerate(rehearsal.scenarios):
        for axes in (latency_axes, rate_axes):
            axes.axvspan(scenario.event_start, scenario.end, color=ROLE_COLOURS[scenario.role])
            axes.axvline(scenario.start, color="#555555", linewidth=1.0)
        latency_axes.text(
            scenario.start,
            1.005 + 0.035 * (number % 2),  # two rows: short scenarios' names never overlap
            f" {scenario.name}",
            transform=latency_axes.get_xaxis_transform(),
            fontsize=9,
            fontweight="bold",
            va="bottom",
        )
        actions = [event for event in scenario.events if event.pod is None and event.node is None]
        nodes = [event for event in scenario.events if event.node is not None]
        for at, label in _merge_close(nodes, end / 80):
            for axes in (latency_axes, rate_axes):
                axes.axvline(at, color=NODE_EVENT, linestyle="--", linewidth=1.1)
            latency_axes.text(
                at,
                0.5,
                f" {label}",
                transform=latency_axes.get_xaxis_transform(),
                rotation=90,
                fontsize=7,
                va="center",
                color=NODE_EVENT,
            )
        for at, label in _merge_close(actions, end / 80):
            latency_axes.axvline(at, color="#444444", linestyle=":", linewidth=0.9)
            latency_axes.text(
                at,
                0.98,
                f" {label}",
                transform=latency_axes.get_xaxis_transform(),
                rotation=90,
                fontsize=7,
                va="top",
                color="#333333",
            )
        first_per_pod: dict[str, float] = {}
        for event in scenario.events:
            if event.pod is not None:
                first_per_pod.setdefault(event.pod, event.at)
        stopped_at += first_per_pod.values()
    if stopped_at:
        latency_axes.scatter(
            stopped_at,
            [0.995] * len(stopped_at),
            transform=latency_axes.get_xaxis_transform(),
            marker="v",
            s=40,
            color="#222222",
            zorder=6,
            clip_on=False,
            label=f"a pod stopped: SIGTERM or kill ({len(stopped_at)})",
        )

    # Every bin, empty ones as NaN: a line must break where there was no load.
    all_bins = range(math.floor(end / width) + 1)
    times = [(index + 0.5) * width for index in all_bins]
    for fraction, colour, label in ((0.50, "#2b6cb0", "p50"), (0.99, "#dd6b20", "p99")):
        values = [percentile(answered.get(index, []), fraction) for index in all_bins]
        values = [math.nan if value is None else value for value in values]
        latency_axes.plot(
            times, values, color=colour, linewidth=1.2, label=f"{label} per {width:.1f} s"
        )
    latency_axes.scatter(
        [r.intended for r in failed],
        [max(r.latency * 1000, FLOOR_MS) for r in failed],
        marker="x",
        s=28,
        color=FAILED,
        linewidths=1.2,
        zorder=5,
        label=f"failed request ({len(failed):,})",
    )
    latency_axes.set_yscale("log")
    latency_axes.set_ylim(bottom=FLOOR_MS / 2)
    latency_axes.set_ylabel("latency from intended start (ms)")
    latency_axes.grid(True, which="major", axis="y", alpha=0.3)
    role_patches = [
        Patch(color=ROLE_COLOURS[role], label=f"{role} event window")
        for role in Role
        if any(s.role is role for s in rehearsal.scenarios)
    ]
    handles, _ = latency_axes.get_legend_handles_labels()
    latency_axes.legend(handles=handles + role_patches, loc="lower left", fontsize=8, ncols=2)

    # Stacked: the total height is the load sent, red is the part of it that failed.
    bin_starts = [index * width for index in all_bins]
    rows = [[counts[index, kind] / width for index in all_bins] for kind in (*Client, "failed")]
    rate_axes.stackplot(
        bin_starts,
        rows,
        step="post",
        colors=[CLIENT_COLOURS[Client.KEEP_ALIVE], CLIENT_COLOURS[Client.NEW_CONNECTION], FAILED],
        labels=[f"{Client.KEEP_ALIVE} ok", f"{Client.NEW_CONNECTION} ok", "failed"],
    )
    peak = max((sum(column) for column in zip(*rows, strict=True)), default=0.0)
    rate_axes.set_ylim(0, max(peak, 1.0) * 1.4)  # headroom: the legend sits above the load
    rate_axes.set_ylabel("requests/s")
    (pod_axes if lanes else rate_axes).set_xlabel(
        "seconds since the load started (by intended start)"
    )
    rate_axes.set_xlim(0, end * 1.02)
    rate_axes.legend(loc="upper left", fontsize=8, ncols=3)
    rate_axes.grid(True, axis="y", alpha=0.3)

    figure.suptitle(
        f"Zero-downtime rehearsal against {rehearsal.target}\nopen loop at "
        f"{rehearsal.rate:,.0f} req/s, {len(records):,} requests, {len(failed):,} failed",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def _pod_lanes(rehearsal: Rehearsal, axes: Axes, end: float) -> None:
    """One lane per pod, in order of its first change, drawn where its endpoint was ready."""
    nodes = sorted(set(rehearsal.pod_nodes.values()) | set(rehearsal.node_zones))
    colours = {node: NODE_COLOURS[i % len(NODE_COLOURS)] for i, node in enumerate(nodes)}
    pods = sorted(rehearsal.pod_ready, key=lambda pod: rehearsal.pod_ready[pod][0][0])
    for lane, pod in enumerate(pods):
        colour = colours.get(rehearsal.pod_nodes.get(pod, ""), "#999999")
        changes = rehearsal.pod_ready[pod]
        for (at, ready), following in zip(changes, [*changes[1:], (end, False)], strict=True):
            if ready:
                axes.broken_barh([(at, following[0] - at)], (lane - 0.4, 0.8), color=colour)
    axes.set_yticks(range(len(pods)), [pod.rsplit("-", 1)[-1] for pod in pods], fontsize=6)
    axes.set_ylim(-1, max(len(pods), 1))
    axes.set_ylabel("pod endpoint ready")
    axes.legend(
        handles=[
            Patch(color=colours[node], label=f"{node} ({rehearsal.node_zones.get(node, '-')})")
            for node in nodes
        ],
        loc="upper left",
        fontsize=7,
        ncols=len(nodes) or 1,
    )
