"""A real Prometheus server: any binary, any scrape config.

It listens on a free loopback port, keeps its data in the given directory, and is stopped
by its PID. Every wait is bounded. tests/process runs Debian's Prometheus against one
process; tests/cluster runs Prometheus 3 with Kubernetes discovery against the cluster.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from proving.service import free_port
from proving.waiting import wait_until

READY_TIMEOUT_SECONDS = 60.0
SCRAPE_INTERVAL = "1s"


class PrometheusError(RuntimeError):
    """Prometheus exited, never got ready, or answered an API call with an error."""


class PrometheusServer:
    def __init__(self, binary: Path | str, workdir: Path, config: dict[str, Any]) -> None:
        """`config` is a Prometheus config; its `global` block is set to scrape every second."""
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        config = {
            **config,
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self.command = [
            str(binary),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not wait_until(self._ready, READY_TIMEOUT_SECONDS, interval=0.2):
            raise PrometheusError(
                f"Prometheus not ready after {READY_TIMEOUT_SECONDS} s:\n{self.log}"
            )
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM to this PID only
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ready(self) -> bool:
        if self.process is None:
            raise PrometheusError("Prometheus was never started: call start() first")
        if self.process.poll() is not None:
            raise PrometheusError(f"Prometheus exited with {self.process.returncode}:\n{self.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the answer's `data`, once its status says success."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        if answer["status"] != "success":
            raise PrometheusError(f"{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (a scalar as a one-item vector)."""
        data = self.api("query", query=expr, time=f"{time.time():.3f}")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str) -> list[float]:
        return [float(item["value"][1]) for item in self.query(expr)]

    def values_by(self, expr: str, label: str) -> dict[str, float]:
        """An instant query's series keyed by one label: {label value: sample value}."""
        return {item["metric"].get(label, ""): float(item["value"][1]) for item in self.query(expr)}
