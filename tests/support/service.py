"""A real `python -m user_hasher` process on a free loopback port, for process tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, target: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answers_ready(port: int) -> bool:
    """True when something on the port answers /readyz with 200 (False while it cannot)."""
    try:
        return http_get(port, "/readyz", timeout=1)[0] == 200
    except OSError:
        return False


class ServiceProcess:
    """Starts the service with the given env on 127.0.0.1 and a free port.

    Everything the process prints goes to `log_path`, so tests can read it back
    (for example to prove no salt or user id was logged).
    """

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = int(env["PORT"]) if env and "PORT" in env else free_port()
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"USER_SALT"}},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "user_hasher"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> ServiceProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.output}")
            if answers_ready(self.port):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"service not ready after {timeout} s:\n{self.output}")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Teardown: SIGKILL whatever is still running; never waits unbounded."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
