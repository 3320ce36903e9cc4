"""Prometheus 3 with Kubernetes service discovery (../shared/prometheus, or $PROMETHEUS_BUNDLE)
run against the local cluster with README's scrape config, for the cluster tests.

README, "Prometheus scrape config", holds the config for clusters without the Prometheus
Operator; the tests run exactly that block, adding only what a Prometheus outside the
cluster needs to reach its API (address, CA, client certificate) and a 1 s interval.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.manifests import REPO
from tests.support.local_cluster import LocalCluster
from tests.support.service import free_port

BUNDLE_ENV = "PROMETHEUS_BUNDLE"
README_SECTION = "### Prometheus scrape config"
READY_TIMEOUT_SECONDS = 60.0
SCRAPE_INTERVAL = "1s"


def bundle_binary() -> Path:
    bundle = Path(os.environ.get(BUNDLE_ENV) or REPO.parent / "shared" / "prometheus")
    return bundle / "prometheus.xz"


def readme_scrape_config() -> dict[str, Any]:
    """The first ```yaml block after README's "Prometheus scrape config" heading."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(README_SECTION) :]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, f"README's {README_SECTION!r} has no yaml block"
    return yaml.safe_load(match.group(1))


class ClusterPrometheus:
    def __init__(self, workdir: Path, cluster: LocalCluster) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.binary = workdir / "prometheus"
        self.log_path = workdir / "prometheus.log"
        config = readme_scrape_config()
        config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL}
        for job in config["scrape_configs"]:
            for discovery in job["kubernetes_sd_configs"]:
                discovery["api_server"] = cluster.api_server
                discovery["tls_config"] = {
                    "ca_file": str(cluster.pki / "ca.crt"),
                    "cert_file": str(cluster.pki / "admin.crt"),
                    "key_file": str(cluster.pki / "admin.key"),
                }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ClusterPrometheus:
        with lzma.open(bundle_binary()) as packed, self.binary.open("wb") as unpacked:
            while chunk := packed.read(1 << 20):
                unpacked.write(chunk)
        self.binary.chmod(0o755)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Prometheus not ready in {READY_TIMEOUT_SECONDS} s:\n{self.log}"
                )
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}:\n{self.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str, by: str = "pod_ip") -> dict[str, float]:
        """An instant query, its series keyed by one label: {label value: sample value}."""
        result = self._api("query", query=expr)["result"]
        return {item["metric"].get(by, ""): float(item["value"][1]) for item in result}

    def active_targets(self) -> list[dict[str, Any]]:
        return self._api("targets", state="active")["activeTargets"]
