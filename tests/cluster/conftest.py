"""The live local cluster for tests/cluster (marker `cluster`; `pytest -m cluster` runs them alone).

- `cluster` (session): a real single-node Kubernetes from ../shared/kube (or $KUBE_BUNDLE),
  started once with NetworkPolicy enforced (KC_NETPOL=1), so everything runs under the
  policy as on a cluster with a policy engine; the image `make image` builds is in its
  containerd. Its node is as full as a default minikube's: what minikube's control plane
  requests is reserved, and a stand-in for the metrics-server addon requests what it does.
  Stopped at the end, and checked to have left nothing on the machine. In CI (CI=true)
  a missing bundle or a failed start is a failure; elsewhere the tests skip loudly.
- `app` (session): `make minikube-deploy` run once, for real, with only the minikube CLI
  stood in for (proving/minikube_stand_in.py); `steady` waits until it serves again.
- `run_make(...)`: any Make target against the cluster, the same way.

The modules run in MODULE_ORDER: they share one cluster and follow one deploy's life, from a
fresh cluster (admission) to `make undeploy`, then the operator's path on the emptied
cluster (test_operator_path.py). Each test leaves the app steady for the next.
Numbers worth reading (timings, measurements) are printed at the end of the run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proving.contract import CONTRACT_BODY
from proving.docker import build_image, engine_problem
from proving.local_cluster import (
    BUNDLE_MARKS,
    ClusterError,
    LocalCluster,
    bundle_problem,
    cluster_processes,
    host_network_state,
    left_behind,
)
from proving.manifests import (
    MANIFEST,
    REPO,
    app_container,
    load_documents,
    only,
    package_version,
)
from proving.service import http_get as get
from proving.steady import steady_pods as steady_in
from tests.cluster.prometheus import ClusterPrometheus, bundle_binary
from tests.support.needs import require
from tests.support.numbers import MeasuredNumbers

NAMESPACE = "user-hasher"
APP = "user-hasher"
SELECTOR = "app.kubernetes.io/name=user-hasher,app.kubernetes.io/instance=user-hasher"
_CONTAINER_PORTS = {
    port["name"]: port["containerPort"]
    for port in app_container(only(load_documents(MANIFEST), "Deployment"))["ports"]
}
# The container port named `http`, which pod IPs answer the service on.
APP_PORT = _CONTAINER_PORTS["http"]
# The container port named `metrics`: /metrics and nothing else.
METRICS_PORT = _CONTAINER_PORTS["metrics"]
CONTRACT = (200, CONTRACT_BODY)
MODULE_ORDER = [
    "test_admission.py",
    "test_deploy.py",
    "test_network_policy.py",
    "test_prometheus.py",
    "test_salt_agreement.py",
    "test_disruptions.py",
    "test_rollouts.py",
    "test_rehearsal.py",
    "test_rollout_check.py",
    "test_overload.py",
    "test_undeploy.py",
    "test_operator_path.py",
]
# Back to 3 ready pods of one revision after a test disturbed them: a rollout of 3 steps.
STEADY_TIMEOUT_SECONDS = 240
# What a default `minikube start` leaves for pods (../shared/kube/README.md): its control
# plane's requests (this bundle runs its own outside pods) reserved on the node.
MINIKUBE_SYSTEM_RESERVED = "cpu=700m,memory=170Mi"
# The metrics-server addon (docs/operating.md has users enable it for the HPA) as far as the
# scheduler sees it: a pod requesting what the addon requests. It serves no metrics.
METRICS_SERVER_STAND_IN = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: metrics-server-stand-in, namespace: kube-system}
spec:
  selector: {matchLabels: {app: metrics-server-stand-in}}
  template:
    metadata: {labels: {app: metrics-server-stand-in}}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: pause
          image: localhost/pause:local
          imagePullPolicy: Never
          resources: {requests: {cpu: 100m, memory: 200Mi}}
"""

NUMBERS = MeasuredNumbers("live cluster: numbers measured")
report = NUMBERS.report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    NUMBERS.write_summary(terminalreporter)


@pytest.hookimpl(tryfirst=True)  # marked before `-m cluster` / `-m "not cluster"` select
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent

    def position(item: pytest.Item) -> int:
        if item.path.parent != here:
            return -1
        return MODULE_ORDER.index(item.path.name)

    for item in items:
        if item.path.parent == here:
            item.add_marker(pytest.mark.cluster)
    # Stable: every other test keeps its place, before these.
    items.sort(key=position)


def leftovers(before: frozenset[str]) -> list[str]:
    problems = []
    if subprocess.run(["ip", "link", "show", "cni0"], capture_output=True).returncode == 0:
        problems.append("the bridge cni0 still exists")
    if network := left_behind(before, host_network_state()):
        problems.append("routes, links or iptables rules:\n" + "\n".join(network))
    if processes := cluster_processes():
        problems.append("cluster processes still run:\n" + "\n".join(processes))
    return problems


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require(bundle_problem(netpol=True) or engine_problem(), "the live-cluster tests")
    image = build_image()
    before = host_network_state()
    if stale := sorted(line for line in before if BUNDLE_MARKS.search(line)):
        # A killed run's bridge, routes and rules: start-cluster.sh clears them.
        report(f"before the start: {len(stale)} routes, links or rules a killed cluster left")
    log = tmp_path_factory.mktemp("cluster") / "start-cluster.log"
    started = time.monotonic()
    try:
        with pytest.MonkeyPatch.context() as settings:
            settings.setenv("KC_SYSTEM_RESERVED", MINIKUBE_SYSTEM_RESERVED)
            cluster = LocalCluster.start(images=[image.ref], netpol=True, log=log)
    except (ClusterError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"the local cluster did not start: {error}", pytrace=False)
    start_seconds = time.monotonic() - started
    report(f"cluster start (NetworkPolicy on, {image.ref} imported): {start_seconds:.1f} s")
    try:
        cluster.kubectl("apply", "-f", "-", input=METRICS_SERVER_STAND_IN)
        cluster.kubectl(
            *["--namespace", "kube-system", "rollout", "status"],
            *["deployment/metrics-server-stand-in", "--timeout=120s"],
            timeout=180,
        )
        (node,) = cluster.get_json("nodes")["items"]
        report(
            f"node as a default minikube's: allocatable cpu {node['status']['allocatable']['cpu']}"
            f" of {node['status']['capacity']['cpu']}; metrics-server stand-in (100m) running"
        )
        # user_hasher.yaml as committed names the release tag; let it name this build.
        cluster.tag_image(image.ref, f"{APP}:{package_version()}")
        yield cluster
    finally:
        stopped = time.monotonic()
        cluster.stop()
        report(f"cluster stop: {time.monotonic() - stopped:.1f} s")
        problems = leftovers(before)
        assert not problems, "the stopped cluster left things behind: " + "; ".join(problems)


@pytest.fixture(scope="session")
def run_make(cluster: LocalCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_make("rollout", VCS_REF="x"): the real Make target against the local cluster,
    the minikube CLI stood in for; stdout and stderr together in .stdout."""

    def run(target: str, **variables: str) -> subprocess.CompletedProcess[str]:
        try:
            return cluster.make(target, **variables)
        except ClusterError as error:
            pytest.fail(str(error), pytrace=False)

    return run


@dataclass(frozen=True)
class DeployedApp:
    image_ref: str
    deploy_output: str
    deploy_seconds: float


@pytest.fixture(scope="session")
def app(cluster: LocalCluster, run_make: Callable[..., Any]) -> DeployedApp:
    started = time.monotonic()
    result = run_make("minikube-deploy")
    seconds = time.monotonic() - started
    report(f"make minikube-deploy: {seconds:.1f} s")
    ref = subprocess.run(
        ["make", "-s", "--no-print-directory", "image-ref"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return DeployedApp(image_ref=ref, deploy_output=result.stdout, deploy_seconds=seconds)


def steady_pods(cluster: LocalCluster) -> list[dict[str, Any]] | None:
    """The app's pods when it is steady (proving.steady: the rollout complete, the HPA's
    count reached, every pod ready and not terminating); None otherwise."""
    deployment = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)
    return steady_in(deployment, cluster.pods(NAMESPACE, SELECTOR))


def wait_steady(cluster: LocalCluster, timeout: float = STEADY_TIMEOUT_SECONDS) -> list[Any]:
    return cluster.wait_for(lambda: steady_pods(cluster), timeout, "the app steady")


@pytest.fixture
def steady(cluster: LocalCluster, app: DeployedApp) -> list[dict[str, Any]]:
    """The app deployed and serving: its pods, all ready, one revision."""
    return wait_steady(cluster)


def running_image(cluster: LocalCluster) -> str:
    deployment = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["image"]


def http_get(host: str, port: int, target: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One GET on a new connection (to a pod IP or a ClusterIP: this machine routes both)."""
    status, _, body = get(port, target, timeout, host=host)
    return status, body


def metric_samples(host: str, port: int = METRICS_PORT) -> list[Any]:
    status, body = http_get(host, port, "/metrics")
    assert status == 200, f"/metrics on {host}:{port} answered {status}"
    return [
        sample
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def hashes_generated(host: str) -> float:
    return sum(
        s.value for s in metric_samples(host) if s.name == "user_hasher_hashes_generated_total"
    )


@pytest.fixture(scope="session")
def prometheus(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterPrometheus]:
    """Prometheus with the committed scrape config (tests/cluster/prometheus.py), discovering
    the cluster's pods; 1 s scrapes."""
    problem = f"no Prometheus with Kubernetes discovery at {bundle_binary()}"
    require(None if bundle_binary().is_file() else problem, "the Prometheus tests")
    server = ClusterPrometheus(tmp_path_factory.mktemp("prometheus"), cluster).start()
    try:
        yield server
    finally:
        server.stop()


def scraped_targets(prometheus: ClusterPrometheus, pods: list[dict[str, Any]]) -> bool:
    """True when Prometheus scrapes exactly these pods, each up, on their `metrics` port."""
    wanted = {f"{pod['status']['podIP']}:{METRICS_PORT}": pod["metadata"]["name"] for pod in pods}
    targets = prometheus.active_targets()
    found = {t["labels"]["instance"]: t for t in targets}
    return set(found) == set(wanted) and all(
        found[instance]["health"] == "up" and found[instance]["labels"]["pod"] == name
        for instance, name in wanted.items()
    )
