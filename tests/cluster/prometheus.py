"""Prometheus 3 with Kubernetes service discovery (../shared/prometheus, or $PROMETHEUS_BUNDLE)
run against the local cluster with the project's scrape config, for the cluster tests.

k8s/monitoring/prometheus/scrape-config.yaml is the config for clusters without the Prometheus
Operator (docs/operating.md shows it to operators); the tests run exactly that file, adding
only what a Prometheus outside the cluster needs to reach its API (address, CA, client
certificate) and a 1 s interval. It loads k8s/monitoring/prometheusrule.yaml's rule groups
as the Operator would (evaluated every second), so the SLO rules and alerts run on the
cluster's real series while the tests disturb the app.
"""

from __future__ import annotations

import lzma
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from proving.prometheus import PrometheusServer
from tests.cluster.pods import restricted_pod
from tests.support.prometheus_rules import write_rule_file

BUNDLE_ENV = "PROMETHEUS_BUNDLE"
SCRAPE_CONFIG = REPO / "k8s" / "monitoring" / "prometheus" / "scrape-config.yaml"
# Where a Prometheus run in a pod (in_cluster_pod) listens, and finds its binary and config.
IN_CLUSTER_PORT = 9090
_POD_BINARY_DIR = "/opt/prometheus"
_POD_CONFIG_DIR = "/etc/prometheus"


def bundle_binary() -> Path:
    bundle = Path(os.environ.get(BUNDLE_ENV) or REPO.parent / "shared" / "prometheus")
    return bundle / "prometheus.xz"


def unpack_binary(target: Path) -> Path:
    """The bundle's Prometheus, unpacked to `target` and made executable."""
    with lzma.open(bundle_binary()) as packed, target.open("wb") as unpacked:
        while chunk := packed.read(1 << 20):
            unpacked.write(chunk)
    target.chmod(0o755)
    return target


def scrape_config() -> dict[str, Any]:
    """The scrape config operators add to a Prometheus without the Operator, as committed."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    return config


class ClusterPrometheus(PrometheusServer):
    """The bundle's Prometheus with the project's scrape config, reaching the cluster's API from
    outside it (address, CA and client certificate added)."""

    def __init__(
        self, workdir: Path, cluster: LocalCluster, extra_rule_files: Sequence[Path] = ()
    ) -> None:
        """`extra_rule_files`: test-only rule files, loaded beside the real rules."""
        binary = unpack_binary(workdir / "prometheus")
        config = scrape_config()
        for job in config["scrape_configs"]:
            for discovery in job["kubernetes_sd_configs"]:
                discovery["api_server"] = cluster.api_server
                discovery["tls_config"] = {
                    "ca_file": str(cluster.pki / "ca.crt"),
                    "cert_file": str(cluster.pki / "admin.crt"),
                    "key_file": str(cluster.pki / "admin.key"),
                }
        config["rule_files"] = [str(write_rule_file(workdir)), *map(str, extra_rule_files)]
        super().__init__(binary, workdir, config)

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def query_at(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Instant query evaluated at epoch second `at` (a vector or a matrix)."""
        data = self.api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def series_between(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """The raw samples of the series `expr` (a selector) selects in [start, end], each
        as {"metric": labels, "values": [(epoch seconds, value), ...]}."""
        reach = f"{max(1, int(end - start + 0.999))}s"
        return [
            {
                "metric": item["metric"],
                "values": [(float(at), float(value)) for at, value in item["values"]],
            }
            for item in self.query_at(f"{expr}[{reach}]", end)
        ]

    def rule_groups_loaded(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def counted_between(
        self, selector: str, windows: dict[str, tuple[float, float]], label: str
    ) -> dict[str, dict[str, float]]:
        """Per window, what the counters `selector` selects counted in it, summed by `label`:
        from the raw samples, not increase(), which counts nothing for a series whose first
        sample is already above 0 (the app creates a status class's series on its first
        response of that class, and a pod scraped late has counted before its first scrape)."""
        first = min(start for start, _ in windows.values())
        last = max(end for _, end in windows.values())
        reach = f"{int(last - first) + 120}s"  # back past the first window's start
        series = self.query_at(f"{selector}[{reach}]", last)
        counted: dict[str, dict[str, float]] = {name: {} for name in windows}
        for item in series:
            samples = [(float(t), float(v)) for t, v in item["values"]]
            key = item["metric"].get(label, "")
            for name, (start, end) in windows.items():
                sums = counted[name]
                sums[key] = sums.get(key, 0.0) + counted_in(samples, start, end)
        return counted


def counted_in(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """What a counter's samples say it counted in (start, end]: from its last sample at or
    before `start` (0 when the series did not exist yet), a drop being a restart from 0."""
    before = [value for at, value in samples if at <= start]
    previous = before[-1] if before else 0.0
    total = 0.0
    for at, value in samples:
        if start < at <= end:
            total += value - previous if value >= previous else value
            previous = value
    return total


def in_cluster_config(api_server: str) -> dict[str, Any]:
    """The committed scrape config for a Prometheus in a pod, reaching the API at `api_server`
    (plain HTTP: a `kubectl proxy`, since this cluster's API server listens on loopback only);
    scrapes every second."""
    config = scrape_config()
    for job in config["scrape_configs"]:
        for discovery in job["kubernetes_sd_configs"]:
            discovery["api_server"] = api_server
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    return config


def in_cluster_pod(namespace: str, image: str, binary_dir: Path, config_map: str) -> dict[str, Any]:
    """A pod running the bundle's Prometheus (unpacked in `binary_dir` on the node, mounted
    read-only: the node has no Prometheus image, and the binary is static) with the config in
    `config_map` (key prometheus.yml), as uid 10001 with a read-only root filesystem."""
    return restricted_pod(
        "prometheus",
        namespace,
        {
            "image": image,
            "command": [
                f"{_POD_BINARY_DIR}/prometheus",
                f"--config.file={_POD_CONFIG_DIR}/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                f"--web.listen-address=0.0.0.0:{IN_CLUSTER_PORT}",
            ],
            "ports": [{"name": "web", "containerPort": IN_CLUSTER_PORT}],
            "readinessProbe": {
                "httpGet": {"path": "/-/ready", "port": IN_CLUSTER_PORT},
                "periodSeconds": 1,
            },
            "volumeMounts": [
                {"name": "binary", "mountPath": _POD_BINARY_DIR, "readOnly": True},
                {"name": "config", "mountPath": _POD_CONFIG_DIR, "readOnly": True},
                {"name": "data", "mountPath": "/prometheus"},
            ],
        },
        volumes=[
            {"name": "binary", "hostPath": {"path": str(binary_dir), "type": "Directory"}},
            {"name": "config", "configMap": {"name": config_map}},
            {"name": "data", "emptyDir": {}},
        ],
    )
