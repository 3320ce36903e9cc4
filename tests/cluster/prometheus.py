"""Prometheus 3 with Kubernetes service discovery (../shared/prometheus, or $PROMETHEUS_BUNDLE)
run against the local cluster with README's scrape config, for the cluster tests.

README, "Prometheus scrape config", holds the config for clusters without the Prometheus
Operator; the tests run exactly that block, adding only what a Prometheus outside the
cluster needs to reach its API (address, CA, client certificate) and a 1 s interval.
"""

from __future__ import annotations

import lzma
import os
import re
from pathlib import Path
from typing import Any

import yaml

from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from proving.prometheus import PrometheusServer

BUNDLE_ENV = "PROMETHEUS_BUNDLE"
README_SECTION = "### Prometheus scrape config"


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


class ClusterPrometheus(PrometheusServer):
    """The bundle's Prometheus with README's scrape config, reaching the cluster's API from
    outside it (address, CA and client certificate added)."""

    def __init__(self, workdir: Path, cluster: LocalCluster) -> None:
        binary = workdir / "prometheus"
        with lzma.open(bundle_binary()) as packed, binary.open("wb") as unpacked:
            while chunk := packed.read(1 << 20):
                unpacked.write(chunk)
        binary.chmod(0o755)
        config = readme_scrape_config()
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
