"""A real `python -m user_hasher` process on a free loopback port: the one launcher the
process tests, `make bench` and the local rehearsal start the service with.

    service = ServiceProcess(tmp_path / "service.log", {"USER_SALT": "x"}).start().wait_ready()
    ...
    service.stop()  # SIGKILL whatever still runs; never waits unbounded

Everything the process prints goes to `log_path`, so a caller can read it back (for example
to prove no salt or user id was logged). Only the public command line and HTTP are used.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

READY_TIMEOUT_SECONDS = 20.0
READY_POLL_SECONDS = 0.05
# The service's own command; bench's comparison servers give another module.
SERVICE_MODULE: tuple[str, ...] = ("-m", "user_hasher")


class ServiceError(RuntimeError):
    """The process exited, or never got ready."""


def free_port(other_than: int | None = None) -> int:
    """A loopback port nothing listens on now; never `other_than` (a port just picked, not
    yet bound, which the kernel may hand out again)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != other_than:
            return port


def http_get(
    port: int, target: str, timeout: float = 5.0, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """One GET to host:port on a new connection: (status, headers lower-cased, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answers(port: int, target: str) -> bool:
    """True when something on the port answers `target` with 200 (False while it cannot)."""
    try:
        return http_get(port, target, timeout=1)[0] == 200
    except OSError:
        return False


def answers_ready(port: int) -> bool:
    return answers(port, "/readyz")


class ServiceProcess:
    """Starts the service with the given env on 127.0.0.1 and a free port (or env's PORT),
    with /metrics on another free port (or env's METRICS_PORT).

    The caller's USER_SALT never leaks in from this process's environment: a test names the
    salt it means. `prefix` goes before the interpreter (e.g. `taskset -c 0`), `module`
    replaces `-m user_hasher`, `ready_target` is what answers 200 once it serves, and
    `preexec_fn` runs in the child before it starts (e.g. to raise a limit).
    """

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        prefix: Sequence[str] = (),
        module: Sequence[str] = SERVICE_MODULE,
        ready_target: str = "/readyz",
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        env = env or {}
        self.port = int(env["PORT"]) if "PORT" in env else free_port()
        self.metrics_port = (
            int(env["METRICS_PORT"]) if "METRICS_PORT" in env else free_port(other_than=self.port)
        )
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "USER_SALT"},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.argv = [*prefix, sys.executable, *module]
        self.ready_target = ready_target
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_seconds: float | None = None  # from start() to the first ready answer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int:
        return self._running().pid

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise ServiceError("the service was never started: call start() first")
        return self.process

    def start(self) -> ServiceProcess:
        self.started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,
            )
        return self

    def wait_ready(
        self, timeout: float = READY_TIMEOUT_SECONDS, interval: float = READY_POLL_SECONDS
    ) -> ServiceProcess:
        process = self._running()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(f"service exited with {process.returncode}:\n{self.output}")
            if answers(self.port, self.ready_target):
                self.ready_seconds = time.monotonic() - self.started
                return self
            time.sleep(interval)
        raise ServiceError(f"service not ready after {timeout} s:\n{self.output}")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self._running().send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self._running().wait(timeout=timeout)

    def stop_by(self, signum: int, timeout: float) -> float:
        """Sends `signum` (if it still runs) and waits for the exit; returns the seconds it took."""
        sent = time.monotonic()
        process = self._running()
        if process.poll() is None:
            process.send_signal(signum)
        process.wait(timeout=timeout)
        return time.monotonic() - sent

    def stop(self) -> None:
        """Teardown: SIGKILL whatever is still running; never waits unbounded."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
