"""The NetworkPolicy, enforced for real (the session cluster runs with KC_NETPOL=1).

A client pod in another namespace reaches the app's `http` port by the Service's name and
scrapes /metrics on a pod IP (the path Prometheus takes), both admitted on purpose by the
policy's one ingress rule; another port of an app pod is refused while something listens
there; the app's own pods reach nothing, not even DNS; and the probes keep them Ready.
Every connection is made from inside pods, to pod and Service addresses of this cluster.
"""

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from proving.contract import CONTRACT_BODY
from proving.kubectl import stop_process
from proving.local_cluster import LocalCluster
from proving.steady import is_ready
from tests.cluster.conftest import (
    APP,
    APP_PORT,
    NAMESPACE,
    DeployedApp,
    report,
    wait_steady,
)

CLIENT_NAMESPACE = "user-hasher-netpol-client"
PYTHON = "/opt/venv/bin/python"
# A port of an app pod that the policy does not open (nothing of the app listens there).
OTHER_PORT = 9000
# How long the extra listener in an app pod lives: the whole test fits well inside it.
LISTENER_SECONDS = 120
CLUSTER_DNS_IP = "10.96.0.10"
SERVICE_URL = "http://user-hasher.user-hasher.svc.cluster.local/user_hash?user_id=TESTUSERID"

# Run inside a pod with the app image's python: tries each target once, prints one JSON
# object {target: outcome}; an outcome is "ok ...", "refused", "timeout" or "error ...".
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


def client_pod(image: str) -> dict[str, Any]:
    """A pod in another namespace, running the app's image (the only image the node has) as
    an idle shell for `kubectl exec`; it exits by itself."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": CLIENT_NAMESPACE},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [PYTHON, "-c", "import time; time.sleep(600)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def client(cluster: LocalCluster, app: DeployedApp) -> Iterator[str]:
    cluster.kubectl("create", "namespace", CLIENT_NAMESPACE)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(client_pod(app.image_ref)))
        cluster.kubectl(
            "wait",
            "--namespace",
            CLIENT_NAMESPACE,
            "pod/client",
            "--for=condition=Ready",
            "--timeout=120s",
            timeout=150,
        )
        yield "client"
    finally:
        cluster.kubectl("delete", "namespace", CLIENT_NAMESPACE, "--wait=false")


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


def test_a_client_pod_reaches_the_service_by_name_and_the_metrics(
    cluster: LocalCluster, client: str, steady: list[dict[str, Any]]
) -> None:
    pod_ip = steady[0]["status"]["podIP"]
    metrics_url = f"http://{pod_ip}:{APP_PORT}/metrics"
    results = try_from(
        cluster, CLIENT_NAMESPACE, client, f"http {SERVICE_URL}", f"http {metrics_url}"
    )
    assert results[f"http {SERVICE_URL}"] == f"ok 200 {CONTRACT_BODY.decode()}", results
    assert results[f"http {metrics_url}"].startswith("ok 200 # HELP"), results


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
