"""A live three-node cluster for tests/nodes (marker `cluster`): the local Kubernetes of
../shared/kube started once for this package, then two workers added (add-node.sh m02 in
zone-b, m03 in zone-c; the first node becomes zone-a), the image `make image` builds in every
node's containerd. Stopped (workers first) when the package's last test ends, and checked to
have left nothing on the machine. In CI (CI=true) a missing bundle or a failed start fails.

One cluster per machine: tests/cluster's session cluster starts only when its first test
runs, and its own collection hook puts every tests/cluster test after all other tests, so
this package's cluster has started and stopped before that one starts (`pytest` runs both
in one session; `make check` needs nothing else). No NetworkPolicy enforcement here: three
policy engines on a 2-core machine cost CPU, and the policy is tests/cluster's subject.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proving.docker import build_image, engine_problem
from proving.local_cluster import ClusterError, LocalCluster, bundle_problem, host_network_state
from proving.manifests import REPO
from rehearsal.nodes import add_workers, keep_cluster_logs
from tests.cluster.conftest import leftovers
from tests.support.needs import require
from tests.support.numbers import MeasuredNumbers

HERE = Path(__file__).parent
NUMBERS = MeasuredNumbers("three-node cluster: numbers measured")
report = NUMBERS.report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    NUMBERS.write_summary(terminalreporter)


@pytest.hookimpl(tryfirst=True)  # marked before `-m cluster` / `-m "not cluster"` select
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == HERE:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require(bundle_problem() or engine_problem(), "the three-node cluster tests")
    image = build_image()
    before = host_network_state()
    log = tmp_path_factory.mktemp("nodes") / "start-cluster.log"
    started = time.monotonic()
    try:
        cluster = LocalCluster.start(images=[image.ref], log=log)
    except (ClusterError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"the local cluster did not start: {error}", pytrace=False)
    try:
        zones = add_workers(cluster)
        report(f"three-node cluster up (start + 2 add-node.sh): {time.monotonic() - started:.1f} s")
        assert sorted(zones.values()) == ["zone-a", "zone-b", "zone-c"], zones
        yield cluster
    finally:
        keep_cluster_logs(cluster, REPO / "build" / "rehearsal-nodes" / "logs" / "cluster")
        stopped = time.monotonic()
        cluster.stop()
        report(f"three-node cluster stop: {time.monotonic() - stopped:.1f} s")
        problems = leftovers(before)
        assert not problems, "the stopped cluster left things behind: " + "; ".join(problems)
