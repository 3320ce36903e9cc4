"""`make bench` (`python -m bench [--short]`): what the service costs, side by side in one run.

Prints one table and writes build/bench/summary.json. Every server runs on CPU 0 and
every load generator on CPU 1. Throughput rows are interleaved (A B C A B C ...) over
several rounds and reported as medians; a ratio is the median of the per-round ratios,
each taken within one round, so drift on a shared machine cancels out. Absolute numbers
are context: compare the ratios.

Sections: throughput (wrk, closed loop) of the ceiling, the framework floor, the shipped
service and the shipped service with each part switched off; the app's own parts timed in
process, as shares of a request; latency under open-loop load
at fixed shares of saturation (proving/openloop.py, latency from each request's
intended start); memory (RSS) idle, after traffic, after unknown paths, with idle and
half-sent connections; /metrics render time; start and stop times; a profile of the
shipped service under load (py-spy); past saturation, the service with and without
admission control side by side (bench/overload.py); and the pod sizing that follows
(bench/capacity.py).
bench/report.py prints the table and judges the goals.
`--short` runs every row for a second or two, only to keep the harness working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import timeit
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bench.capacity import Capacity, derive_capacity
from bench.overload import FULL_OVERLOAD, SHORT_OVERLOAD, overload
from bench.processes import (
    LOAD_CPU,
    TARGET,
    Server,
    WrkResult,
    raise_open_files_limit,
    wrk,
    wrk_command,
)
from bench.report import goals, print_report
from proving.contract import CONTRACT_SALT
from proving.manifests import MANIFEST, app_container, load_documents, only
from proving.openloop import LoadPlan, LoadRun, Target, summarize
from proving.service import http_get
from user_hasher.admission import Admission
from user_hasher.asgi import ASGIApp, wrap_app
from user_hasher.hashing import parse_user_id, user_hash
from user_hasher.lifecycle import Lifecycle
from user_hasher.logs import AccessLog
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings

SALT = CONTRACT_SALT
SUMMARY = Path("build/bench/summary.json")
SHIPPED = "shipped"
# The variants in the order they run in each round; None is `python -m user_hasher`.
VARIANTS: dict[str, str | None] = {
    "raw ASGI": "raw",
    "minimal Quart": "quart",
    SHIPPED: None,
    "no access log": "no-access-log",
    "no metrics": "no-metrics",
}
# Shares of the shipped service's saturation rate at which open-loop latency is measured.
LATENCY_SHARES = (0.5, 0.7, 0.85)
LATENCY_RUNS = 3


class BenchError(RuntimeError):
    """A measurement's precondition did not hold: its numbers would mean nothing."""


@dataclass(frozen=True)
class Mode:
    rounds: int
    round_seconds: float
    latency_seconds: float
    traffic_requests: int  # the "after 100,000 requests" row
    unknown_paths: int
    connections: int  # idle, then half-sent, connections held open
    repeats: int  # start / stop timings
    profile_seconds: float
    warm_up: bool = True  # a second of load before each server's first measurement


FULL = Mode(9, 3.0, 15.0, 100_000, 10_000, 10_000, 5, 10.0)
SHORT = Mode(1, 1.0, 1.0, 2_000, 500, 500, 1, 1.0, warm_up=False)


def deployed_env() -> dict[str, str]:
    """The plain values the Deployment sets (none from Secrets or the downward API)."""
    container = app_container(only(load_documents(MANIFEST), "Deployment"))
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def env_for_servers() -> dict[str, str]:
    return {**deployed_env(), "USER_SALT": SALT, "POD_IP": "10.244.0.9", "NODE_IP": "10.244.0.1"}


# --- throughput ---------------------------------------------------------------------


def baseline_env(ref: str) -> dict[str, str]:
    """The env that runs `python -m user_hasher` from git ref `ref` (its src/ first on the
    path): the same service before a change, measured in the same run."""
    directory = Path("build/bench/baseline") / ref
    if not directory.exists():
        directory.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", ref, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return {"PYTHONPATH": str((directory / "src").resolve())}


def throughput(mode: Mode, env: dict[str, str], baseline: str | None) -> dict:
    servers = {name: Server(name, variant, env) for name, variant in VARIANTS.items()}
    if baseline is not None:
        servers[f"shipped @{baseline}"] = Server(
            "baseline", None, {**env, **baseline_env(baseline)}
        )
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():  # the first requests of a process are not typical
            if mode.warm_up:
                wrk(server.url + TARGET, seconds=1)
        for _ in range(mode.rounds):
            measured = {}
            for name, server in servers.items():
                cpu_before = server.cpu_seconds()
                result = wrk(server.url + TARGET, seconds=mode.round_seconds)
                cpu_us = (server.cpu_seconds() - cpu_before) / result.requests * 1e6
                measured[name] = {
                    "rps": result.per_second,
                    "cpu_us": cpu_us,
                    "errors": result.errors,
                }
            rounds.append(measured)
    finally:
        for server in servers.values():
            server.stop()

    def median_ratio(numerator: str, denominator: str, key: str = "rps") -> float:
        return statistics.median(r[numerator][key] / r[denominator][key] for r in rounds)

    ratios = {
        "shipped / minimal Quart": median_ratio(SHIPPED, "minimal Quart"),
        "shipped / raw ASGI": median_ratio(SHIPPED, "raw ASGI"),
        "minimal Quart / raw ASGI": median_ratio("minimal Quart", "raw ASGI"),
        # The cost of a part: how much faster the service runs without it.
        "access log cost": 1 - median_ratio(SHIPPED, "no access log"),
        "metrics cost": 1 - median_ratio(SHIPPED, "no metrics"),
        # The same comparison from the server's CPU time per request (lower is better).
        "cpu: minimal Quart / shipped": median_ratio("minimal Quart", SHIPPED, "cpu_us"),
    }
    if baseline is not None:
        ratios[f"shipped / shipped @{baseline}"] = median_ratio(SHIPPED, f"shipped @{baseline}")
        ratios[f"shipped @{baseline} / minimal Quart"] = median_ratio(
            f"shipped @{baseline}", "minimal Quart"
        )
    variants = {
        name: {
            "rps_median": statistics.median(r[name]["rps"] for r in rounds),
            "rps_rounds": [round(r[name]["rps"], 1) for r in rounds],
            "cpu_us_per_request_median": statistics.median(r[name]["cpu_us"] for r in rounds),
            "errors": sum(r[name]["errors"] for r in rounds),
        }
        for name in servers
    }
    return {"variants": variants, "ratios": ratios}


# --- the parts, timed in process ----------------------------------------------------


async def _per_call_us(app: ASGIApp, calls: int) -> float:
    scope = {"type": "http", "method": "GET", "path": "/user_hash", "headers": []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        return None

    started = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / calls * 1e6


def parts(shipped_cpu_us: float, calls: int = 100_000) -> dict:
    """What each piece of the app's own work costs per request, timed in this process
    (best of 5 repeats: steady where HTTP rounds are noisy), and as a share of the shipped
    service's CPU per request measured above."""
    settings = Settings(USER_SALT=SecretStr(SALT))
    metrics, access_log = Metrics(settings), AccessLog(settings.SLOW_REQUEST_SECONDS)
    scope = {"method": "GET", "http_version": "1.1"}

    def best(call: Callable[[], object]) -> float:
        return min(timeit.repeat(call, number=calls, repeat=5)) / calls * 1e6

    async def bare(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = wrap_app(
        bare,
        routes={"/user_hash"},
        lifecycle=Lifecycle(0),
        admission=Admission.from_settings(Settings()),
        metrics=metrics,
        observers=(),
        metrics_port=Settings().METRICS_PORT,
    )
    loop = asyncio.new_event_loop()
    try:
        middleware_us = min(
            loop.run_until_complete(_per_call_us(wrapped, calls // 10))
            - loop.run_until_complete(_per_call_us(bare, calls // 10))
            for _ in range(5)
        )
    finally:
        loop.close()
    per_call = {
        "the middleware, observers aside": middleware_us,
        "request metrics (one observation)": best(
            lambda: metrics.observe_response(scope, "/user_hash", 200, 0.0004)
        ),
        "hash counter": best(metrics.count_hash),
        "access log, a fast success (not written)": best(
            lambda: access_log(scope, "/user_hash", 200, 0.0004)
        ),
        "strict parsing and the hash": best(
            lambda: user_hash(parse_user_id(b"user_id=TESTUSERID"), SALT)
        ),
    }
    return {
        name: {"us": us, "share_of_request": us / shipped_cpu_us} for name, us in per_call.items()
    }


# --- latency ------------------------------------------------------------------------


def latency(mode: Mode, env: dict[str, str], saturation_rps: float) -> list[dict]:
    """Each share of saturation in LATENCY_RUNS runs; a row reports the median run, so one
    stall of a shared machine does not make the row."""
    rows = []
    server = Server("latency", None, env).start()
    try:
        if mode.warm_up:
            wrk(server.url + TARGET, seconds=1)
        for share in LATENCY_SHARES:
            rate = share * saturation_rps
            seconds = mode.latency_seconds / LATENCY_RUNS
            plan = LoadPlan(
                rate=rate,
                duration=seconds,
                max_requests=int(rate * seconds) + 1,
                keep_alive_share=1.0,  # the server's latency, not TCP handshakes
                keep_alive_connections=32,
            )
            runs = [
                summarize(LoadRun(Target("127.0.0.1", server.port, SALT), plan).start().wait())
                for _ in range(LATENCY_RUNS)
            ]
            rows.append(
                {
                    "share_of_saturation": share,
                    "rate": rate,
                    "requests": sum(run.requests for run in runs),
                    "failed": sum(run.failed for run in runs),
                    "p50_ms": statistics.median((run.p50 or 0) * 1000 for run in runs),
                    "p99_ms": statistics.median((run.p99 or 0) * 1000 for run in runs),
                    "p99_ms_runs": [round((run.p99 or 0) * 1000, 2) for run in runs],
                }
            )
    finally:
        server.stop()
    return rows


# --- memory, /metrics, connections ----------------------------------------------------


def metrics_render_ms(server: Server, scrapes: int = 20) -> tuple[float, int]:
    """Median time of a GET /metrics round trip, and the number of samples in it."""
    times, body = [], b""
    for _ in range(scrapes):
        started = time.perf_counter()
        _, _, body = http_get(server.metrics_port, "/metrics")
        times.append(time.perf_counter() - started)
    samples = sum(1 for line in body.decode().splitlines() if line and line[0] != "#")
    return statistics.median(times) * 1000, samples


def drive(server: Server, requests: int, unknown_paths: bool = False) -> int:
    """Closed-loop wrk chunks until at least `requests` were answered; returns how many."""
    done = 0
    while done < requests:
        result: WrkResult = wrk(server.url + TARGET, seconds=1, unknown_paths=unknown_paths)
        done += result.requests
    return done


def memory(mode: Mode, env: dict[str, str]) -> dict:
    server = Server("memory", None, env).start()
    try:
        time.sleep(1)
        idle = server.rss_mib()
        # Both paths once first (a hash, and a 404 with its access-log line): their first
        # use allocates for good, which is warm-up, not growth.
        drive(server, 1_000)
        render_after_1k = metrics_render_ms(server)
        drive(server, 1_000, unknown_paths=True)
        warm = server.rss_mib()
        served = drive(server, mode.traffic_requests)
        after_traffic = server.rss_mib()
        render_after_traffic = metrics_render_ms(server)
        drive(server, mode.unknown_paths, unknown_paths=True)
        after_unknown = server.rss_mib()
        render_after_unknown = metrics_render_ms(server)
    finally:
        server.stop()
    return {
        "rss_idle_mib": idle,
        "rss_warm_mib": warm,
        "requests_served": served,
        "rss_after_traffic_mib": after_traffic,
        "rss_after_unknown_paths_mib": after_unknown,
        "rss_growth_after_warm_up_mib": max(after_traffic, after_unknown) - warm,
        "metrics_render_ms_after_1000": render_after_1k[0],
        "metrics_render_ms_after_traffic": render_after_traffic[0],
        "metrics_render_ms_after_unknown_paths": render_after_unknown[0],
        "metrics_samples_after_1000": render_after_1k[1],
        "metrics_samples_after_unknown_paths": render_after_unknown[1],
    }


async def _hold_connections(port: int, count: int, first_bytes: bytes) -> list:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        if first_bytes:
            writer.write(first_bytes)
        writers.append(writer)
    return writers


def connections(mode: Mode, env: dict[str, str]) -> dict:
    """RSS with `mode.connections` connections open: idle ones (nothing sent) and half-sent
    ones (a request line and a header, never finished), and after both are gone."""
    server = Server("connections", None, env).start()
    half_sent = b"GET /user_hash?user_id=slow HTTP/1.1\r\nHost: bench\r\n"
    result: dict[str, float] = {"connections": mode.connections}
    try:
        drive(server, 1_000)
        result["rss_before_mib"] = server.rss_mib()
        for kind, first_bytes in (("idle", b""), ("half_sent", half_sent)):
            loop = asyncio.new_event_loop()
            started = time.monotonic()
            writers = loop.run_until_complete(
                _hold_connections(server.port, mode.connections, first_bytes)
            )
            time.sleep(0.5)
            result[f"rss_with_{kind}_mib"] = server.rss_mib()
            result[f"seconds_to_open_{kind}"] = time.monotonic() - started
            for writer in writers:
                writer.close()
            loop.run_until_complete(asyncio.sleep(0.1))
            loop.close()
            time.sleep(1)  # the server sees each close at once and drops the connection
        result["rss_after_closed_mib"] = server.rss_mib()
    finally:
        server.stop()
    peak = max(result["rss_with_idle_mib"], result["rss_with_half_sent_mib"])
    result["kib_per_connection"] = (peak - result["rss_before_mib"]) * 1024 / mode.connections
    return result


def probe_under_saturation(mode: Mode, env: dict[str, str], connections: int = 1000) -> dict:
    """/readyz round trips while wrk keeps `connections` requests outstanding: what a
    kubelet probe waits for on a saturated pod (it queues behind those requests)."""
    server = Server("probe", None, env).start()
    seconds = max(mode.latency_seconds, 2.0)
    times = []
    try:
        load = subprocess.Popen(
            wrk_command(server.url + TARGET, seconds, connections),
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
        while load.poll() is None:
            started = time.perf_counter()
            status, _, _ = http_get(server.port, "/readyz", timeout=30)
            times.append(time.perf_counter() - started)
            if status != 200:
                raise BenchError(f"/readyz answered {status} under saturation")
            time.sleep(0.2)
        load.wait(timeout=60)
    finally:
        server.stop()
    times.sort()
    return {
        "connections": connections,
        "probes": len(times),
        "p50_ms": statistics.median(times) * 1000,
        "max_ms": times[-1] * 1000,
    }


# --- start and stop -----------------------------------------------------------------


def start_and_stop(mode: Mode, env: dict[str, str]) -> dict:
    ready, stopped = [], []
    for _ in range(mode.repeats):
        server = Server("lifecycle", None, {**env, "DRAIN_SECONDS": "0"}).start()
        ready.append(server.ready_seconds)
        stopped.append(server.stop(signal.SIGTERM))
        if server.wait_exit(timeout=0) != 0:
            raise BenchError(f"SIGTERM ended the service with an error:\n{server.output}")
    return {
        "start_to_ready_seconds_median": statistics.median(ready),
        "sigterm_to_exit_seconds_median": statistics.median(stopped),
    }


# --- profile ------------------------------------------------------------------------


def profile(mode: Mode, env: dict[str, str], name: str = "profile", top: int = 12) -> dict:
    """Samples the shipped service's stacks under load; the functions most often on CPU
    (self) and on the stack (total), as shares of the busy samples."""
    server = Server(name, None, env).start()
    raw = Path(f"build/bench/{name}.txt")
    try:
        if mode.warm_up:
            wrk(server.url + TARGET, seconds=1)
        sampler = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),  # installed with the dev extra
                *("record", "--nonblocking", "--format", "raw", "--rate", "250"),
                *("--duration", str(round(mode.profile_seconds)), "--pid", str(server.pid)),
                *("--output", str(raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wrk(server.url + TARGET, seconds=mode.profile_seconds + 2)
        _, error = sampler.communicate(timeout=60)
        if sampler.returncode != 0:
            return {"error": error.strip()[-300:]}
    finally:
        server.stop()
    own, total, busy = Counter[str](), Counter[str](), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_function_of(frame) for frame in stack.split(";")]
        if not any("Handle._run" in frame for frame in frames):
            continue  # the loop waiting in select(): idle, not work
        busy += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    return {
        "busy_samples": busy,
        "self": [(frame, n / busy) for frame, n in own.most_common(top)],
        # Frames on nearly every stack are the event loop itself, not work worth naming.
        "total": [(frame, n / busy) for frame, n in total.most_common() if n < 0.9 * busy][:top],
    }


def _function_of(frame: str) -> str:
    """py-spy's `name (path/to/file.py:line)` as `name (file.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a second or two per row (CI)")
    parser.add_argument(
        "--baseline", metavar="GIT_REF", help="also measure the service as it was at GIT_REF"
    )
    args = parser.parse_args()
    mode, baseline = (SHORT if args.short else FULL), args.baseline
    os.sched_setaffinity(0, {LOAD_CPU})  # this process generates load too (open loop)
    raise_open_files_limit()  # for the connections it holds open, and wrk's
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    env = env_for_servers()
    started = time.monotonic()

    summary: dict = {"mode": "short" if mode is SHORT else "full", "mode_settings": vars(mode)}
    summary["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    summary["throughput"] = throughput(mode, env, baseline)
    shipped_cpu_us = summary["throughput"]["variants"][SHIPPED]["cpu_us_per_request_median"]
    summary["parts"] = parts(shipped_cpu_us, calls=10_000 if mode is SHORT else 100_000)
    saturation = summary["throughput"]["variants"][SHIPPED]["rps_median"]
    summary["latency"] = latency(mode, env, saturation)
    summary["memory"] = memory(mode, env)
    summary["connections"] = connections(mode, env)
    summary["probe_under_saturation"] = probe_under_saturation(mode, env)
    summary["start_and_stop"] = start_and_stop(mode, env)
    summary["profile"] = profile(mode, env)
    summary["overload"] = overload(SHORT_OVERLOAD if mode is SHORT else FULL_OVERLOAD, env)
    if baseline is not None:
        summary["profile_baseline"] = profile(mode, {**env, **baseline_env(baseline)}, "baseline")
    capacity: Capacity = derive_capacity(summary)
    summary["capacity"] = capacity.as_dict()
    summary["goals"] = goals(summary)
    summary["seconds"] = time.monotonic() - started
    SUMMARY.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_report(summary)
    print(f"\nwrote {SUMMARY} in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
