"""The report of a `make bench` run: the printed table and the goals, from the summary that
bench/__main__.py measured (the same dict it writes to build/bench/summary.json)."""

from __future__ import annotations

from bench.overload import overload_goals, print_overload


def print_report(summary: dict) -> None:
    t = summary["throughput"]
    print("\nthroughput (wrk, 32 keep-alive connections; median of the rounds)")
    print(f"  {'server':<16}{'req/s':>9}{'CPU us/req':>12}   rounds")
    for name, row in t["variants"].items():
        print(
            f"  {name:<16}{row['rps_median']:>9.0f}{row['cpu_us_per_request_median']:>12.0f}"
            f"   {row['rps_rounds']}"
        )
    print("ratios (median of per-round ratios)")
    for name, value in t["ratios"].items():
        shown = f"{value:.1%}" if name.endswith("cost") else f"{value:.3f}x"
        print(f"  {name:<32}{shown:>9}")
    print(
        "the app's own parts, timed in process (best of 5), as shares of the shipped "
        "service's CPU per request"
    )
    for name, part in summary["parts"].items():
        print(f"  {name:<42}{part['us']:>7.2f} us {part['share_of_request']:>7.2%}")
    print("\nlatency, open loop (from each request's intended start; the median of 3 runs)")
    for row in summary["latency"]:
        print(
            f"  {row['share_of_saturation']:>4.0%} of saturation = {row['rate']:>6.0f} req/s: "
            f"p50 {row['p50_ms']:6.2f} ms, p99 {row['p99_ms']:6.2f} ms "
            f"(runs {row['p99_ms_runs']}), {row['requests']} requests, {row['failed']} failed"
        )
    m, c, s = summary["memory"], summary["connections"], summary["start_and_stop"]
    print("\nmemory of one process (RSS)")
    print(
        f"  idle {m['rss_idle_mib']:.1f} MiB; "
        f"warm (1,000 hashes and 1,000 unknown paths) {m['rss_warm_mib']:.1f} MiB"
    )
    print(
        f"  after {m['requests_served']:,} requests {m['rss_after_traffic_mib']:.1f} MiB; "
        f"then after unknown paths {m['rss_after_unknown_paths_mib']:.1f} MiB "
        f"(growth after warm-up {m['rss_growth_after_warm_up_mib']:+.1f} MiB)"
    )
    print(
        f"  {c['connections']:,} idle connections {c['rss_with_idle_mib']:.1f} MiB, "
        f"half-sent {c['rss_with_half_sent_mib']:.1f} MiB, after they closed "
        f"{c['rss_after_closed_mib']:.1f} MiB (from {c['rss_before_mib']:.1f}; "
        f"{c['kib_per_connection']:.1f} KiB per connection)"
    )
    print(
        f"\n/metrics render: {m['metrics_render_ms_after_1000']:.2f} ms after 1,000 requests "
        f"({m['metrics_samples_after_1000']} samples), "
        f"{m['metrics_render_ms_after_traffic']:.2f} ms after {m['requests_served']:,}, "
        f"{m['metrics_render_ms_after_unknown_paths']:.2f} ms after unknown paths "
        f"({m['metrics_samples_after_unknown_paths']} samples)"
    )
    probe = summary["probe_under_saturation"]
    print(
        f"/readyz while {probe['connections']} connections saturate the pod: "
        f"p50 {probe['p50_ms']:.0f} ms, max {probe['max_ms']:.0f} ms ({probe['probes']} probes)"
    )
    print(
        f"start to /readyz 200: {s['start_to_ready_seconds_median']:.2f} s; "
        f"SIGTERM to exit (DRAIN_SECONDS=0): {s['sigterm_to_exit_seconds_median']:.3f} s"
    )
    for key, title in (("profile", "the shipped service"), ("profile_baseline", "the baseline")):
        if key in summary:
            print_profile(title, summary[key])
    if "overload" in summary:
        print_overload(summary["overload"])
    print("\npod sizing that follows (docs/capacity.md):")
    for line in summary["capacity"]["lines"]:
        print(f"  {line}")
    print("\ngoals")
    for name, goal in summary["goals"].items():
        print(f"  {'met ' if goal['met'] else 'MISSED'}  {name}: {goal['value']}")


def print_profile(title: str, p: dict) -> None:
    if "error" in p:
        print(f"\nprofile of {title}: py-spy failed: {p['error']}")
        return
    print(f"\nprofile of {title} under load ({p['busy_samples']} busy samples)")
    for (frame, share), (total_frame, total_share) in zip(p["self"], p["total"], strict=False):
        print(f"  self {share:6.1%} {frame[:52]:<52} total {total_share:6.1%} {total_frame[:52]}")


def goals(summary: dict) -> dict:
    ratios, m, capacity = summary["throughput"]["ratios"], summary["memory"], summary["capacity"]
    parts = summary["parts"]
    metrics_share = sum(
        parts[name]["share_of_request"]
        for name in ("request metrics (one observation)", "hash counter")
    )
    own_share = sum(part["share_of_request"] for part in parts.values())
    at_half = next(r for r in summary["latency"] if r["share_of_saturation"] == 0.5)

    def goal(met: bool, value: str) -> dict:
        return {"met": met, "value": value}

    return {
        "shipped >= 0.95x minimal Quart": goal(
            ratios["shipped / minimal Quart"] >= 0.95, f"{ratios['shipped / minimal Quart']:.3f}x"
        ),
        # Timed in process: the HTTP A/B of a 1-3% effect is within a shared machine's noise.
        "metrics < 3% of a request": goal(metrics_share < 0.03, f"{metrics_share:.2%}"),
        "the app's own parts < 5% of a request": goal(own_share < 0.05, f"{own_share:.2%}"),
        "p99 <= 3x p50 at 50% of saturation": goal(
            at_half["p99_ms"] <= 3 * at_half["p50_ms"],
            f"p99 {at_half['p99_ms']:.2f} ms, p50 {at_half['p50_ms']:.2f} ms",
        ),
        "RSS < 70 MiB idle": goal(m["rss_idle_mib"] < 70, f"{m['rss_idle_mib']:.1f} MiB"),
        "readiness timeout covers a saturated pod": goal(
            capacity["readiness_timeout_seconds"] >= capacity["readiness_timeout_needed_seconds"],
            f"{capacity['readiness_timeout_seconds']} s, needs "
            f"{capacity['readiness_timeout_needed_seconds']} s",
        ),
        "RSS flat within 5 MiB over traffic and unknown paths": goal(
            m["rss_growth_after_warm_up_mib"] <= 5, f"{m['rss_growth_after_warm_up_mib']:+.1f} MiB"
        ),
        **(overload_goals(summary["overload"]) if "overload" in summary else {}),
    }
