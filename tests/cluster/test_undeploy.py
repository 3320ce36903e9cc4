"""`make undeploy` removes everything user_hasher.yaml created, the namespace too, and a second
`make undeploy` succeeds as well (there is nothing left to delete)."""

import time
from typing import Any

from proving.local_cluster import LocalCluster
from tests.cluster.conftest import NAMESPACE, DeployedApp, report


def test_make_undeploy_twice(cluster: LocalCluster, app: DeployedApp, run_make: Any) -> None:
    started = time.monotonic()
    first = run_make("undeploy")
    seconds = time.monotonic() - started
    assert f'namespace "{NAMESPACE}" deleted' in first.stdout
    gone = cluster.kubectl("get", "namespace", NAMESPACE, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr

    second = run_make("undeploy")
    assert "deleted" not in second.stdout
    report(f"make undeploy: {seconds:.1f} s; a second make undeploy: exit 0, nothing deleted")
