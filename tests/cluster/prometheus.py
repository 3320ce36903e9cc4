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
from tests.support.prometheus_rules import write_rule_file

BUNDLE_ENV = "PROMETHEUS_BUNDLE"
SCRAPE_CONFIG = REPO / "k8s" / "monitoring" / "prometheus" / "scrape-config.yaml"


def bundle_binary() -> Path:
    bundle = Path(os.environ.get(BUNDLE_ENV) or REPO.parent / "shared" / "prometheus")
    return bundle / "prometheus.xz"


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
        binary = workdir / "prometheus"
        with lzma.open(bundle_binary()) as packed, binary.open("wb") as unpacked:
            while chunk := packed.read(1 << 20):
                unpacked.write(chunk)
        binary.chmod(0o755)
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
