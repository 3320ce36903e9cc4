"""Prometheus 3 with Kubernetes service discovery (../shared/prometheus, or $PROMETHEUS_BUNDLE)
run against the local cluster with the project's scrape config, for the cluster tests.

k8s/monitoring/prometheus/scrape-config.yaml is the config for clusters without the Prometheus
Operator (docs/operating.md shows it to operators); the tests run exactly that file, adding
only what a Prometheus outside the cluster needs to reach its API (address, CA, client
certificate) and a 1 s interval.
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path
from typing import Any

import yaml

from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from proving.prometheus import PrometheusServer

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

    def __init__(self, workdir: Path, cluster: LocalCluster) -> None:
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
        super().__init__(binary, workdir, config)

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]
