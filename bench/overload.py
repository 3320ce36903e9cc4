"""Past saturation: what one pod does when offered more than it can serve (issue 23).

Two processes side by side in one run, on the same core and under one CPU limit
(bench.processes.CpuLimit, SERVER_CORES of the core, as a pod's limit; the service is told
it as the Deployment tells it): the service with admission control off
(`SHED_LOAD=false`, "before") and as shipped ("after"). Every load runs on one, then the
other, so drift on a shared machine falls on both alike; both are offered the same rates.
First the saturation rate (wrk, 32 keep-alive connections, on "before", three times; the
median), then open-loop load (proving/openloop.py, keep-alive
connections, latency from each request's intended start) at 1x, 2x and 4x of it, then
closed-loop wrk with many connections. All the while `/readyz` and `/healthz` are probed
every 0.2 s from a process of their own, from the address the service takes for its
node's (the kubelet's, never refused), and the RSS is sampled. After the 4x load, load at
half the saturation rate shows how soon the p99 is back to its steady value.

The load comes from 127.0.0.1 and the probes from 127.0.0.2: both servers run with
`NODE_IP=127.0.0.2` and no loopback exemption, as a pod sees its clients and its kubelet.

Reported per load: offered and achieved rates, goodput (correct 200s per second), the
admitted requests' p50/p99, the shed count (503s), other failures, the server's CPU per
answer, probe latency and failures, peak RSS, and whether the process survived.
`overload_goals` judges the issue's goals on the shipped service.

`python -m bench.overload [--short]` runs this section alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import (
    LOAD_CPU,
    TARGET,
    CpuLimit,
    Server,
    raise_open_files_limit,
    wrk,
    wrk_command,
)
from proving.contract import CONTRACT_SALT
from proving.openloop import LoadPlan, LoadRun, RequestRecord, Target, percentile

SALT = CONTRACT_SALT
OVERLOAD_FACTORS = (1.0, 2.0, 4.0)
WRK_CONNECTIONS = (500, 2000)
PROBE_PATHS = ("/readyz", "/healthz")
PROBE_INTERVAL_SECONDS = 0.2
# The kubelet's timeout is 5 s; a probe slower than this is reported as failed.
PROBE_TIMEOUT_SECONDS = 5.0
# Where the probes come from: what the servers are told is their node's address.
PROBE_SOURCE = "127.0.0.2"
# Open-loop clients: as many keep-alive connections as a Service spreads over one pod
# from several client pods; when all are busy a request waits for one, and that counts.
OPEN_LOOP_CONNECTIONS = 256
RECOVERY_SHARE = 0.5  # of saturation: the load after the overload drops
RECOVERY_SECONDS = 5.0
SERVER_ENV = {"NODE_IP": PROBE_SOURCE, "SHED_EXEMPT_ADDRESSES": ""}
# The service as it was before admission control.
UNPROTECTED_ENV = {"SHED_LOAD": "false"}
SIDES = ("before", "after")
# The servers' share of their core, as a pod's CPU limit: low enough that the generator,
# Python on the other core, can offer 4x what they serve (it offers ~2,000 req/s at most;
# a whole core serves ~1,400). Both servers run under the same limit.
SERVER_CORES = 0.3


@dataclass(frozen=True)
class OverloadMode:
    seconds: float  # of each open-loop and wrk run
    saturation_seconds: float
    factors: tuple[float, ...] = OVERLOAD_FACTORS
    wrk_connections: tuple[int, ...] = WRK_CONNECTIONS


FULL_OVERLOAD = OverloadMode(seconds=10.0, saturation_seconds=5.0)
SHORT_OVERLOAD = OverloadMode(seconds=1.0, saturation_seconds=1.0, factors=(1.0, 4.0))


def probe_once(port: int, path: str) -> int | None:
    """One probe on a new connection from PROBE_SOURCE, as the kubelet sends it."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=PROBE_TIMEOUT_SECONDS, source_address=(PROBE_SOURCE, 0)
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def _probe(port: int, stop: Event, results: Connection) -> None:
    """In a process of its own, so the load generator's threads cannot delay it (the GIL)."""
    probes = []
    while not stop.is_set():
        for path in PROBE_PATHS:
            started = time.perf_counter()
            status = probe_once(port, path)
            probes.append((path, time.perf_counter() - started, status))
        stop.wait(PROBE_INTERVAL_SECONDS)
    results.send(probes)


@dataclass
class Watch:
    """Probes (from a process of their own), RSS samples and the CPU spent during one load."""

    server: Server
    probes: list[tuple[str, float, int | None]] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        context = multiprocessing.get_context("fork")
        self._probe_stop = context.Event()
        self._results, child_end = context.Pipe(duplex=False)
        self._prober = context.Process(
            target=_probe, args=(self.server.port, self._probe_stop, child_end), daemon=True
        )
        self._prober.start()
        self._thread = threading.Thread(target=self._sample_rss, daemon=True)
        self._thread.start()
        self._cpu_before = self.server.cpu_seconds()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self.cpu_seconds = self.server.cpu_seconds() - self._cpu_before
        self._stop.set()
        self._probe_stop.set()
        if self._results.poll(PROBE_TIMEOUT_SECONDS * 2 + 10):
            self.probes = self._results.recv()
        self._prober.join(10)
        if self._prober.is_alive():
            self._prober.kill()
        self._thread.join(10)

    def _sample_rss(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, IndexError):  # gone: `survived` says so
                self.rss_mib.append(self.server.rss_mib())
            self._stop.wait(PROBE_INTERVAL_SECONDS)

    def summary(self, answers: int) -> dict:
        result: dict = {
            "rss_peak_mib": max(self.rss_mib, default=None),
            # None when nothing was answered: no answer had a cost to share out.
            "cpu_us_per_answer": self.cpu_seconds / answers * 1e6 if answers else None,
        }
        for path in PROBE_PATHS:
            times = [seconds for name, seconds, _ in self.probes if name == path]
            key = path.strip("/")
            result[f"{key}_p50_ms"] = _ms(statistics.median(times)) if times else None
            result[f"{key}_max_ms"] = _ms(max(times)) if times else None
            result[f"{key}_failed"] = sum(
                1 for name, _, status in self.probes if name == path and status != 200
            )
        return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _survived(server: Server) -> bool:
    """Still running: not crashed, not killed (readiness is in the probes)."""
    assert server.process is not None
    return server.process.poll() is None


def summarize_open_loop(records: list[RequestRecord], seconds: float) -> dict:
    """Goodput is over the whole run, until its last answer: a server that queues serves
    the load's last second long after it."""
    admitted = [record.latency for record in records if record.ok]
    seconds = max([seconds, *(record.intended + record.latency for record in records)])
    shed = sum(1 for record in records if record.status == 503)
    answered = sum(1 for record in records if record.status is not None)
    return {
        "requests": len(records),
        "answered": answered,
        "goodput_rps": len(admitted) / seconds,
        "admitted_p50_ms": _ms(percentile(admitted, 0.50)),
        "admitted_p99_ms": _ms(percentile(admitted, 0.99)),
        "shed": shed,
        "other_failures": len(records) - len(admitted) - shed,
        # The generator's own lag plus waits for a free connection: when it is large, the
        # client, not the server, set the pace (a Python generator on one shared core).
        "client_wait_p99_ms": _ms(percentile([record.wait for record in records], 0.99)),
    }


def open_loop(server: Server, rate: float, seconds: float) -> list[RequestRecord]:
    plan = LoadPlan(
        rate=rate,
        duration=seconds,
        max_requests=math.ceil(rate * seconds),
        keep_alive_share=1.0,
        keep_alive_connections=OPEN_LOOP_CONNECTIONS,
    )
    return LoadRun(Target("127.0.0.1", server.port, SALT), plan).start().wait()


def recovery(records: list[RequestRecord], steady_p99: float | None) -> dict:
    """The p99 of each second after the overload dropped; `recovered_after_s`: the start of
    the first second from which every second's p99 is within 2x the steady p99."""
    per_second = []
    for second in range(math.ceil(RECOVERY_SECONDS)):
        window = [r.latency for r in records if second <= r.intended < second + 1 and r.ok]
        per_second.append(_ms(percentile(window, 0.99)))
    recovered = None
    if steady_p99 is not None:
        bound = 2 * steady_p99 * 1000
        for start in range(len(per_second)):
            if all(p is not None and p <= bound for p in per_second[start:]):
                recovered = float(start)
                break
    return {"p99_ms_per_second": per_second, "recovered_after_s": recovered}


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str, connections: int) -> dict:
    """wrk's totals; its percentiles cover every answer, shed ones included."""
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if found is None:
        return {"connections": connections, "error": out[-300:]}
    requests = int(found[1])
    elapsed = float(found[2]) / (1000 if found[3] == "ms" else 1)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    shed = int(non_2xx[1]) if non_2xx else 0
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    latency = {q: float(v) * _UNITS[unit] for q, v, unit in _WRK_LATENCY.findall(out)}
    return {
        "connections": connections,
        "answered": requests,
        "goodput_rps": (requests - shed) / elapsed,
        "all_p50_ms": latency.get("50"),
        "all_p99_ms": latency.get("99"),
        "shed": shed,
        "socket_errors": socket_errors,
    }


def closed_loop(server: Server, connections: int, seconds: float) -> dict:
    argv = wrk_command(server.url + TARGET, seconds, connections)
    argv.insert(-1, "--latency")
    with Watch(server) as watch:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    row = parse_wrk(out, connections)
    row.update(watch.summary(row.get("answered", 0)))
    row["survived"] = _survived(server)
    return row


def _open_loop_row(server: Server, factor: float, rate: float, seconds: float) -> dict:
    with Watch(server) as watch:
        records = open_loop(server, factor * rate, seconds)
    row = {"factor": factor, "offered_rps": factor * rate}
    row.update(summarize_open_loop(records, seconds))
    row.update(watch.summary(row["answered"]))
    row["survived"] = _survived(server)
    return row


def overload(mode: OverloadMode, env: dict[str, str], cores: float = SERVER_CORES) -> dict:
    """Both servers, under one CPU limit of `cores`, through every load in turn (before,
    after, before, after, ...)."""
    # As the Deployment tells a pod its limit: the in-flight bound follows it.
    env = {**env, "CPU_LIMIT_MILLICORES": str(round(cores * 1000))}
    with CpuLimit(cores) as limit:
        results = _overload(mode, env, limit)
    results["server_cores"] = None if limit.problem else cores
    results["cpu_limit_problem"] = limit.problem
    return results


def _overload(mode: OverloadMode, env: dict[str, str], limit: CpuLimit) -> dict:
    servers = {
        "before": Server("unprotected", None, {**env, **SERVER_ENV, **UNPROTECTED_ENV}),
        "after": Server("shipped", None, {**env, **SERVER_ENV}),
    }
    results: dict = {
        side: {"server": server.name, "open_loop": [], "closed_loop": []}
        for side, server in servers.items()
    }
    try:
        for server in servers.values():
            server.start()
            limit.add(server.pid)
        # Measured on the unprotected server only: wrk counts the shipped one's 503s as
        # answers, and past its bound it would refuse some of wrk's 32 connections.
        rates = [
            wrk(servers["before"].url + TARGET, seconds=mode.saturation_seconds).per_second
            for _ in range(3)
        ]
        rate = statistics.median(rates)
        steady_seconds = min(mode.seconds, 5.0)
        steady_p99 = {}
        for side, server in servers.items():
            results[side]["saturation_rps"] = rate
            results[side]["saturation_rps_measured"] = rates
            with Watch(server) as watch:
                steady = open_loop(server, RECOVERY_SHARE * rate, steady_seconds)
            steady_p99[side] = percentile([r.latency for r in steady if r.ok], 0.99)
            results[side]["steady"] = summarize_open_loop(steady, steady_seconds)
            results[side]["steady"].update(watch.summary(len(steady)))
        for factor in mode.factors:
            for side, server in servers.items():
                results[side]["open_loop"].append(
                    _open_loop_row(server, factor, rate, mode.seconds)
                )
                if factor == max(mode.factors):
                    # Right after the highest overload: how soon the tail is back.
                    after = open_loop(server, RECOVERY_SHARE * rate, RECOVERY_SECONDS)
                    results[side]["recovery"] = recovery(after, steady_p99[side])
        for connections in mode.wrk_connections:
            for side, server in servers.items():
                results[side]["closed_loop"].append(closed_loop(server, connections, mode.seconds))
        for side, server in servers.items():
            results[side]["shed_metric"] = shed_metric(server)
    finally:
        for server in servers.values():
            server.stop()
    return results


def shed_metric(server: Server) -> dict[str, float]:
    """user_hasher_shed_total by reason, as the server's /metrics says at the end. Patient:
    a server without admission control is still working through the requests queued by
    the last load (under its CPU limit, for tens of seconds)."""
    for attempt in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=60)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            break
        except TimeoutError:
            if attempt == 2:
                raise
        finally:
            conn.close()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "user_hasher_shed"
        for sample in family.samples
        if sample.name == "user_hasher_shed_total"
    }


# --- report ---------------------------------------------------------------------------


def memory_limit_mib(manifest: Path = Path("user_hasher.yaml")) -> float:
    """The Deployment's container memory limit, in MiB."""
    for document in yaml.safe_load_all(manifest.read_text()):
        if document and document["kind"] == "Deployment":
            (container,) = document["spec"]["template"]["spec"]["containers"]
            limit = str(container["resources"]["limits"]["memory"])
            return float(limit.removesuffix("Mi")) if limit.endswith("Mi") else float(limit) / 2**20
    raise LookupError(f"no Deployment in {manifest}")


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def overload_lines(result: dict) -> list[str]:
    limit = (
        f"both servers limited to {result['server_cores']:g} of a core"
        if result.get("server_cores")
        else f"WARNING: {result.get('cpu_limit_problem')}: the servers have a whole core"
    )
    lines = [
        f"overload ({limit}; open loop at multiples of saturation, closed loop with many",
        "  connections;",
        "  probes every 0.2 s; ms; p50/p99 of admitted requests (open loop), wrk's of all",
        "  answers (closed loop); us/ans: server CPU per answer, served or shed)",
        f"  {'load':<13}{'server':<8}{'offered/s':>10}{'goodput/s':>10}{'p50':>7}{'p99':>7}"
        f"{'shed':>8}{'failed':>8}{'us/ans':>7}{'readyz max':>11}{'healthz max':>12}"
        f"{'RSS MiB':>8}  alive",
    ]
    before, after = result["before"], result["after"]
    rows = [
        (f"{row['factor']:.0f}x open", side, row, False)
        for pair in zip(before["open_loop"], after["open_loop"], strict=True)
        for side, row in zip(SIDES, pair, strict=True)
    ] + [
        (f"{row['connections']} conns", side, row, True)
        for pair in zip(before["closed_loop"], after["closed_loop"], strict=True)
        for side, row in zip(SIDES, pair, strict=True)
    ]
    for load, side, row, closed in rows:
        if "error" in row:
            lines.append(f"  {load:<13}{side:<8}wrk failed: {row['error']}")
            continue
        offered = "closed" if closed else _fmt(row["offered_rps"])
        p50 = row["all_p50_ms" if closed else "admitted_p50_ms"]
        p99 = row["all_p99_ms" if closed else "admitted_p99_ms"]
        failed = row["socket_errors" if closed else "other_failures"]
        lines.append(
            f"  {load:<13}{side:<8}{offered:>10}{_fmt(row['goodput_rps']):>10}{_fmt(p50):>7}"
            f"{_fmt(p99):>7}{row['shed']:>8}{failed:>8}{_fmt(row['cpu_us_per_answer']):>7}"
            f"{_fmt(row['readyz_max_ms']):>11}{_fmt(row['healthz_max_ms']):>12}"
            f"{_fmt(row['rss_peak_mib']):>8}  {row['survived']}"
            + ("" if closed else f"  client wait p99 {_fmt(row['client_wait_p99_ms'])}")
        )
    for side in SIDES:
        run = result[side]
        per_second = [None if p is None else round(p) for p in run["recovery"]["p99_ms_per_second"]]
        lines.append(
            f"  {side}: saturation {run['saturation_rps']:,.0f} req/s; steady p99 "
            f"{_fmt(run['steady']['admitted_p99_ms'], ' ms')} at {RECOVERY_SHARE:.0%}; "
            f"after the top load, p99 per second {per_second}; shed by reason "
            f"{run.get('shed_metric', {})}"
        )
    return lines


def print_overload(result: dict) -> None:
    print()
    print("\n".join(overload_lines(result)))


def overload_goals(result: dict) -> dict:
    """Issue 23's goals, judged on the shipped service ("after") in this run, and the
    merge condition: not worse than "before" on goodput at any load."""
    before, after = result["before"], result["after"]
    limit = memory_limit_mib()
    saturation = after["saturation_rps"]
    over = [row for row in after["open_loop"] if row["factor"] >= 2]
    rows = after["open_loop"] + after["closed_loop"]

    def goal(met: bool, value: str) -> dict:
        return {"met": met, "value": value}

    goodput = [row["goodput_rps"] / saturation for row in over]
    p99 = [row["admitted_p99_ms"] for row in over]
    probes = [
        max(row["readyz_max_ms"] or math.inf, row["healthz_max_ms"] or math.inf) for row in rows
    ]
    probe_failures = sum(row["readyz_failed"] + row["healthz_failed"] for row in rows)
    rss = max(row["rss_peak_mib"] or 0.0 for row in rows)
    recovered = after["recovery"]["recovered_after_s"]
    pairs = list(zip(before["open_loop"], after["open_loop"], strict=True)) + list(
        zip(before["closed_loop"], after["closed_loop"], strict=True)
    )
    # After's goodput over before's; before served nothing: infinite, or 1 if neither did.
    ratios = [
        a.get("goodput_rps", 0.0) / b["goodput_rps"]
        if b.get("goodput_rps")
        else (math.inf if a.get("goodput_rps") else 1.0)
        for b, a in pairs
    ]
    return {
        "overload: goodput >= 90% of saturation at 2x and 4x": goal(
            bool(goodput) and all(share >= 0.9 for share in goodput),
            ", ".join(f"{share:.0%}" for share in goodput),
        ),
        "overload: admitted p99 < 50 ms at 2x and 4x": goal(
            bool(p99) and all(p is not None and p < 50 for p in p99),
            ", ".join(_fmt(p, " ms") for p in p99),
        ),
        "overload: /readyz and /healthz < 100 ms, none failed": goal(
            all(p < 100 for p in probes) and probe_failures == 0,
            f"slowest {max(probes):,.0f} ms, {probe_failures} failed",
        ),
        "overload: RSS under the memory limit": goal(
            rss < limit, f"{rss:.0f} MiB of {limit:.0f} MiB"
        ),
        "overload: no crash": goal(
            all(row["survived"] for row in rows),
            f"survived {sum(row['survived'] for row in rows)} of {len(rows)} loads",
        ),
        "overload: steady p99 within 5 s after the load drops": goal(
            recovered is not None and recovered <= RECOVERY_SECONDS, f"after {recovered} s"
        ),
        # Shedding must not cost goodput anywhere (10% is this machine's run-to-run noise).
        "overload: goodput not below the unprotected service's at any load": goal(
            all(ratio >= 0.9 for ratio in ratios), ", ".join(f"{r:.2f}x" for r in ratios)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a second a load, no goals")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    raise_open_files_limit()
    os.sched_setaffinity(0, {LOAD_CPU})  # this process generates the open-loop load
    result = overload(SHORT_OVERLOAD if args.short else FULL_OVERLOAD, {"USER_SALT": SALT})
    print_overload(result)
    goals = overload_goals(result)
    for name, verdict in goals.items():
        print(f"  {'PASS' if verdict['met'] else 'FAIL'}  {name}: {verdict['value']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"overload": result, "goals": goals}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
