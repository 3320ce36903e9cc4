"""The NetworkPolicy, enforced for real (the session cluster runs with KC_NETPOL=1).

A client pod in another namespace reaches the app's `http` port, by the Service's name and
on each pod IP, as the policy admits on purpose, but every pod's `metrics` port refuses it;
Prometheus in a pod of the `monitoring` namespace, which the policy's namespace selector
names, discovers the app's pods through the API with the committed scrape config and scrapes
every one on its `metrics` port; another port of an app pod is refused while something
listens there; the app's own pods reach nothing, not even DNS; and the probes keep them
Ready. Every connection is made from inside pods, to pod and Service addresses of this
cluster. (The session's other Prometheus, tests/cluster/prometheus.py, runs on the node,
whose traffic NetworkPolicy never filters: the one here is what proves the namespace rule.)
"""

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proving.contract import CONTRACT_BODY
from proving.kubectl import stop_process
from proving.local_cluster import LocalCluster
from proving.steady import is_ready
from tests.cluster.conftest import (
    APP,
    APP_PORT,
    METRICS_PORT,
    NAMESPACE,
    DeployedApp,
    http_get,
    report,
    wait_steady,
)
from tests.cluster.pods import restricted_pod
from tests.cluster.prometheus import (
    IN_CLUSTER_PORT,
    bundle_binary,
    in_cluster_config,
    in_cluster_pod,
    unpack_binary,
)
from tests.support.needs import require

CLIENT_NAMESPACE = "user-hasher-netpol-client"
# The namespace k8s/base/30-networkpolicy.yaml admits to the metrics port (by the name label
# the API server gives every namespace).
MONITORING_NAMESPACE = "monitoring"
# kube-router admits a new source pod only once it has seen it: a second or two (../shared/kube).
ADMITTED_WAIT_SECONDS = 30
CONTRACT_TARGET = "/user_hash?user_id=TESTUSERID"
PYTHON = "/opt/venv/bin/python"
# A port of an app pod that the policy does not open (nothing of the app listens there).
OTHER_PORT = 9000
# How long the extra listener in an app pod lives: the whole test fits well inside it.
LISTENER_SECONDS = 120
CLUSTER_DNS_IP = "10.96.0.10"
SERVICE_URL = "http://user-hasher.user-hasher.svc.cluster.local/user_hash?user_id=TESTUSERID"

# Run inside a pod with the app image's python: tries each target once, prints one JSON
# object {target: outcome}; an outcome is "ok ...", "http <4xx/5xx status>", "refused",
# "timeout" or "error ...".
TRY_TARGETS = r"""
import json, socket, sys, urllib.error, urllib.request

def outcome(error):
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(error, socket.gaierror):
        return "no name"
    return f"error {type(error).__name__}: {error}"

results = {}
for target in sys.argv[1:]:
    kind, _, rest = target.partition(" ")
    try:
        if kind == "http":
            with urllib.request.urlopen(rest, timeout=5) as response:
                results[target] = f"ok {response.status} {response.read().decode()[:60]}"
        elif kind == "tcp":
            host, port = rest.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=5).close()
            results[target] = "ok"
        elif kind == "dns":
            results[target] = "ok " + socket.gethostbyname(rest)
    except urllib.error.HTTPError as error:
        results[target] = f"http {error.code}"
    except urllib.error.URLError as error:
        results[target] = outcome(error.reason)
    except OSError as error:
        results[target] = outcome(error)
print(json.dumps(results))
"""

LISTEN = f"""
import socket, time
server = socket.create_server(("0.0.0.0", {OTHER_PORT}))
server.settimeout(1)
deadline = time.monotonic() + {LISTENER_SECONDS}
while time.monotonic() < deadline:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        continue
    connection.sendall(b"listening")
    connection.close()
"""


def try_from(cluster: LocalCluster, namespace: str, pod: str, *targets: str) -> dict[str, str]:
    result = cluster.kubectl(
        "exec",
        "--namespace",
        namespace,
        pod,
        "--",
        PYTHON,
        "-c",
        TRY_TARGETS,
        *targets,
        timeout=120,
    )
    return json.loads(result.stdout)


def client_pod(image: str, namespace: str) -> dict[str, Any]:
    """A pod in `namespace`, running the app's image (the only image the node has) as an idle
    shell for `kubectl exec`; it exits by itself."""
    return restricted_pod(
        "client",
        namespace,
        {"image": image, "command": [PYTHON, "-c", "import time; time.sleep(600)"]},
    )


@contextlib.contextmanager
def namespace_created(cluster: LocalCluster, namespace: str) -> Iterator[None]:
    """A new namespace, deleted afterwards (not waited for)."""
    cluster.kubectl("create", "namespace", namespace)
    try:
        yield
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def client(cluster: LocalCluster, app: DeployedApp) -> Iterator[str]:
    with namespace_created(cluster, CLIENT_NAMESPACE):
        pod = client_pod(app.image_ref, CLIENT_NAMESPACE)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        cluster.kubectl(
            *["wait", "--namespace", CLIENT_NAMESPACE, "pod/client"],
            *["--for=condition=Ready", "--timeout=120s"],
            timeout=150,
        )
        yield "client"


@pytest.fixture(scope="module")
def monitoring_prometheus(cluster: LocalCluster, app: DeployedApp) -> Iterator[str]:
    """Prometheus in a pod of the monitoring namespace; yields its pod IP. It reaches the API
    through a `kubectl proxy` on the node's address (the API server listens on loopback only),
    bound for this module and stopped after it."""
    problem = f"no Prometheus with Kubernetes discovery at {bundle_binary()}"
    require(None if bundle_binary().is_file() else problem, "the in-cluster Prometheus test")
    # Readable by the pod's uid 10001 (pytest's own temporary directories are root's alone).
    binary_dir = Path(tempfile.mkdtemp(prefix="user-hasher-prometheus-"))
    binary_dir.chmod(0o755)
    unpack_binary(binary_dir / "prometheus")
    (node,) = cluster.get_json("nodes")["items"]
    (node_ip,) = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    proxy = cluster.client.popen(
        *["proxy", f"--address={node_ip}", "--port=0", "--accept-hosts=.*"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        serving = proxy.stdout.readline()  # "Starting to serve on ADDRESS:PORT"
        assert serving.startswith("Starting to serve on "), serving
        api_server = "http://" + serving.split()[-1]
        with namespace_created(cluster, MONITORING_NAMESPACE):
            config = json.dumps(in_cluster_config(api_server))
            cluster.kubectl(
                *["create", "configmap", "prometheus", "--namespace", MONITORING_NAMESPACE],
                f"--from-literal=prometheus.yml={config}",
            )
            pod = in_cluster_pod(MONITORING_NAMESPACE, app.image_ref, binary_dir, "prometheus")
            cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
            cluster.kubectl(
                *["wait", "--namespace", MONITORING_NAMESPACE, "pod/prometheus"],
                *["--for=condition=Ready", "--timeout=120s"],
                timeout=150,
            )
            running = cluster.get_json("pod", "prometheus", "--namespace", MONITORING_NAMESPACE)
            yield running["status"]["podIP"]
    finally:
        stop_process(proxy)
        shutil.rmtree(binary_dir, ignore_errors=True)


@pytest.fixture
def listener_in_an_app_pod(
    cluster: LocalCluster, steady: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Something listening on OTHER_PORT inside an app pod, for a bounded time."""
    pod = steady[0]
    exec_listener = cluster.client.in_namespace(NAMESPACE).popen(
        "exec", pod["metadata"]["name"], "--", PYTHON, "-c", LISTEN
    )
    try:
        yield pod
    finally:
        stop_process(exec_listener)


def test_a_client_pod_elsewhere_reaches_the_service_but_no_metrics_port(
    cluster: LocalCluster, client: str, steady: list[dict[str, Any]]
) -> None:
    contract = f"ok 200 {CONTRACT_BODY.decode()}"
    expected = {f"http {SERVICE_URL}": contract}
    for pod in steady:
        pod_ip = pod["status"]["podIP"]
        expected[f"http http://{pod_ip}:{APP_PORT}{CONTRACT_TARGET}"] = contract
        # Refused by the policy, not merely unanswered: the port listens (the node reaches it).
        expected[f"http http://{pod_ip}:{METRICS_PORT}/metrics"] = "refused"
        assert http_get(pod_ip, METRICS_PORT, "/metrics")[0] == 200
        # And the service port does not serve /metrics at all.
        expected[f"http http://{pod_ip}:{APP_PORT}/metrics"] = "http 404"
    results = try_from(cluster, CLIENT_NAMESPACE, client, *expected)
    assert results == expected
    refused = sum(outcome == "refused" for outcome in results.values())
    report(
        f"NetworkPolicy, from namespace {CLIENT_NAMESPACE}: /user_hash answered on"
        f" {len(steady)} of {len(steady)} pods and the Service; the metrics port refused"
        f" {refused} of {len(steady)} pods"
    )


def test_prometheus_in_the_monitoring_namespace_scrapes_every_pod(
    cluster: LocalCluster, monitoring_prometheus: str, steady: list[dict[str, Any]]
) -> None:
    wanted = {f"{pod['status']['podIP']}:{METRICS_PORT}": pod["metadata"]["name"] for pod in steady}
    started = time.monotonic()

    def every_pod_up() -> list[dict[str, Any]] | None:
        status, body = http_get(
            monitoring_prometheus, IN_CLUSTER_PORT, "/api/v1/targets?state=active"
        )
        assert status == 200
        targets = json.loads(body)["data"]["activeTargets"]
        found = {t["labels"]["instance"]: t for t in targets}
        up = set(found) == set(wanted) and all(
            found[instance]["health"] == "up" and found[instance]["labels"]["pod"] == pod
            for instance, pod in wanted.items()
        )
        return targets if up else None

    targets = cluster.wait_for(every_pod_up, ADMITTED_WAIT_SECONDS, "every pod up in Prometheus")
    _, body = http_get(monitoring_prometheus, IN_CLUSTER_PORT, "/api/v1/query?query=up")
    up = {r["metric"]["pod"]: r["value"][1] for r in json.loads(body)["data"]["result"]}
    assert up == {pod["metadata"]["name"]: "1" for pod in steady}
    report(
        f"Prometheus in namespace {MONITORING_NAMESPACE} (Kubernetes discovery, the committed"
        f" scrape config, policy enforced): {len(targets)} of {len(steady)} targets up on the"
        f" metrics port, {time.monotonic() - started:.1f} s after its pod was ready"
    )


def test_another_port_of_an_app_pod_is_refused(
    cluster: LocalCluster, client: str, listener_in_an_app_pod: dict[str, Any]
) -> None:
    pod_ip = listener_in_an_app_pod["status"]["podIP"]
    target = f"tcp {pod_ip}:{OTHER_PORT}"

    # The node is always let in (kubelet probes come from it): the listener is there.
    def node_connects() -> bool:
        with socket.create_connection((pod_ip, OTHER_PORT), timeout=5) as connection:
            return connection.recv(16) == b"listening"

    cluster.wait_for(node_connects, timeout=60, what=f"the listener on {pod_ip}:{OTHER_PORT}")
    results = try_from(cluster, CLIENT_NAMESPACE, client, target, f"tcp {pod_ip}:{APP_PORT}")
    report(f"NetworkPolicy, from another namespace: {results}")
    assert results == {target: "refused", f"tcp {pod_ip}:{APP_PORT}": "ok"}


def test_the_app_pods_reach_nothing_not_even_dns(
    cluster: LocalCluster, client: str, steady: list[dict[str, Any]]
) -> None:
    source, other = steady[0], steady[1]
    targets = [
        "dns user-hasher.user-hasher.svc.cluster.local",
        f"tcp {CLUSTER_DNS_IP}:53",
        f"tcp {other['status']['podIP']}:{APP_PORT}",
    ]
    # The same attempts from the client pod succeed: the targets are there to be reached.
    from_client = try_from(cluster, CLIENT_NAMESPACE, client, *targets)
    assert all(outcome.startswith("ok") for outcome in from_client.values()), from_client

    from_app = try_from(cluster, NAMESPACE, source["metadata"]["name"], *targets)
    report(f"NetworkPolicy, from an app pod: {from_app}")
    blocked = {"refused", "timeout", "no name"}
    assert all(outcome in blocked for outcome in from_app.values()), from_app


def test_the_probes_keep_every_pod_ready_under_the_policy(cluster: LocalCluster) -> None:
    pods = wait_steady(cluster)
    for pod in pods:
        assert is_ready(pod)
        (status,) = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, f"{pod['metadata']['name']} restarted"
    deployment = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)
    assert deployment["status"]["availableReplicas"] == len(pods)
