"""What the request metrics cost: per request in microseconds, and as a share of a
full request's CPU on Hypercorn. Prints numbers; asserts nothing (goal: under 3 %).

Measured side by side in one run:
  1. the observer middleware with the metrics recorder around a trivial ASGI app vs
     the bare app, in process (an upper bound: the access log shares the wrapper):
     the difference is the middleware's own cost, free of network and Quart noise;
  2. the real assembled stack (create_service, Quart, GET /user_hash) in process,
     with and without the metrics middleware: a cross-check of 1 inside the real app;
  3. `python -m user_hasher` on Hypercorn: server CPU per /user_hash request over
     keep-alive HTTP/1.1, read from /proc (Linux) - the "full request" of the ratio.
Timings 1 and 2 keep the best of several short alternating rounds: on a shared
machine the best round is the one least disturbed by other processes. (An A/B of
two Hypercorn servers was tried and dropped: on 2 busy cores it swung from -7 % to
+19 % between runs, far more than the effect it was meant to show.)
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aioprometheus import render
from pydantic import SecretStr

import user_hasher.main
from user_hasher.metrics.registry import Metrics
from user_hasher.metrics.responses import record_responses
from user_hasher.observe import observe_responses
from user_hasher.routing import ROUTE_SCOPE_KEY
from user_hasher.settings import Settings

TRIVIAL_CALLS, TRIVIAL_ROUNDS = 20_000, 10  # about 0.1 s per round here
STACK_CALLS, STACK_ROUNDS = 500, 20  # about 0.1 s per round here
HTTP_REQUESTS_PER_ROUND, HTTP_ROUNDS = 2_000, 3  # about 1-2 s per round
WARMUP_REQUESTS = 300
READY_TIMEOUT_SECONDS = 20
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/user_hash",
    "raw_path": b"/user_hash",
    "query_string": b"user_id=bench",
    "root_path": "",
    "headers": [(b"host", b"localhost")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "extensions": {},
}


# --- 1 and 2. In process ------------------------------------------------------


async def trivial_app(scope: dict, receive: Callable, send: Callable) -> None:
    scope[ROUTE_SCOPE_KEY] = "/user_hash"  # what Quart's before_request hook records
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'"x"'})


async def per_call_seconds(app: Callable, calls: int) -> float:
    never = asyncio.Event()  # after the body, a real server's receive waits for disconnect

    async def send(message: dict) -> None:
        return None

    started = time.perf_counter()
    for _ in range(calls):
        body_read = False

        async def receive() -> dict:
            nonlocal body_read
            if body_read:
                await never.wait()
            body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}

        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - started) / calls


async def best_of(apps: dict[str, Callable], calls: int, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(rounds):
        for name, app in apps.items():
            best[name] = min(best[name], await per_call_seconds(app, calls))
    return best


def assembled_stack(with_metrics: bool) -> Callable:
    original = user_hasher.main.record_responses
    if not with_metrics:
        user_hasher.main.record_responses = lambda metrics: lambda scope, status, seconds: None
    try:
        return user_hasher.main.create_service(Settings(USER_SALT=SecretStr("bench"))).asgi
    finally:
        user_hasher.main.record_responses = original


def scrape_cost() -> tuple[bytes, float, int]:
    """Renders a registry holding more response series than a pod normally shows."""
    metrics = Metrics(Settings())
    label_sets = [
        (method, route, status)
        for method in ("GET", "HEAD", "other")
        for route in ("/user_hash", "/healthz", "/readyz", "unmatched")
        for status in ("2xx", "4xx", "5xx")
    ]
    for key in label_sets:
        metrics.observe_response(key, 0.001)
    started = time.perf_counter()
    metrics.refresh()
    body, _ = render(metrics.registry, [])
    return body, (time.perf_counter() - started) * 1000, len(label_sets)


# --- 3. Hypercorn -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    # Fields after the command name; utime and stime are the 12th and 13th of them.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def send_requests(connection: http.client.HTTPConnection, count: int) -> None:
    for number in range(count):
        connection.request("GET", f"/user_hash?user_id=bench-{number}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"unexpected status {response.status}")


def hypercorn_cpu_per_request() -> tuple[float, float, float]:
    """(server CPU s, its best round's CPU s, client wall s), per request."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "USER_SALT": "bench"}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "user_hasher"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while not ready(port):
                if time.monotonic() > deadline or server.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server did not start:\n{log.read().decode()}")
                time.sleep(0.1)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            send_requests(connection, WARMUP_REQUESTS)
            rounds = []
            wall_started = time.perf_counter()
            for _ in range(HTTP_ROUNDS):
                cpu_before = cpu_seconds(server.pid)
                send_requests(connection, HTTP_REQUESTS_PER_ROUND)
                rounds.append(cpu_seconds(server.pid) - cpu_before)
            wall = time.perf_counter() - wall_started
            connection.close()
        finally:
            server.kill()
            server.wait(timeout=10)
    count = HTTP_ROUNDS * HTTP_REQUESTS_PER_ROUND
    return sum(rounds) / count, min(rounds) / HTTP_REQUESTS_PER_ROUND, wall / count


def main() -> None:
    metrics = Metrics(Settings())
    trivial = asyncio.run(
        best_of(
            {
                "bare": trivial_app,
                "measured": observe_responses(trivial_app, record_responses(metrics)),
            },
            TRIVIAL_CALLS,
            TRIVIAL_ROUNDS,
        )
    )
    stack = asyncio.run(
        best_of(
            {"with": assembled_stack(True), "without": assembled_stack(False)},
            STACK_CALLS,
            STACK_ROUNDS,
        )
    )
    body, render_ms, response_series = scrape_cost()
    server_cpu, server_cpu_best, client_wall = hypercorn_cpu_per_request()

    middleware_us = (trivial["measured"] - trivial["bare"]) * 1e6
    stack_us = (stack["with"] - stack["without"]) * 1e6
    full_us = server_cpu * 1e6
    requests = HTTP_ROUNDS * HTTP_REQUESTS_PER_ROUND
    print(f"1. in process, trivial ASGI app, best of {TRIVIAL_ROUNDS} x {TRIVIAL_CALLS} calls:")
    print(f"   bare app                                {trivial['bare'] * 1e6:8.2f} us/request")
    print(f"   with the metrics middleware             {trivial['measured'] * 1e6:8.2f} us/request")
    print(f"   middleware cost                         {middleware_us:8.2f} us/request")
    print(f"2. in process, create_service stack, best of {STACK_ROUNDS} x {STACK_CALLS} requests:")
    print(f"   with the metrics middleware             {stack['with'] * 1e6:8.2f} us/request")
    print(f"   without it                              {stack['without'] * 1e6:8.2f} us/request")
    print(f"   difference                              {stack_us:8.2f} us/request")
    print(f"3. Hypercorn, python -m user_hasher, {requests} x GET /user_hash, keep-alive:")
    print(f"   server CPU, all rounds                  {full_us:8.1f} us/request")
    print(f"   server CPU, best round                  {server_cpu_best * 1e6:8.1f} us/request")
    print(f"   client wall time                        {client_wall * 1e6:8.1f} us/request")
    print("ratios:")
    ratio = middleware_us / full_us
    print(f"   middleware cost (1) / full request (3)  {ratio:8.2%}  (goal < 3 %)")
    print(f"   stack difference (2) / full request (3) {stack_us / full_us:8.2%}  (cross-check)")
    lines = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    print(
        f"scrape with {response_series} response label sets: render {render_ms:.2f} ms,"
        f" {lines} series, {len(body)} bytes"
    )


if __name__ == "__main__":
    main()
