"""`make minikube-deploy`, `make smoke` and the pods they leave: each pod answers the contract
with the Secret's salt and labels every series with its own pod and node IP, the Service's
ClusterIP spreads requests over all of them, and a second deploy changes nothing."""

import re
from typing import Any

from proving.contract import CONTRACT_HASH, CONTRACT_TARGET
from proving.docker import inspect_image
from proving.local_cluster import LocalCluster
from proving.manifests import package_version
from tests.cluster.conftest import (
    APP_PORT,
    CONTRACT,
    DeployedApp,
    hashes_generated,
    http_get,
    metric_samples,
    report,
    running_image,
)

# Requests through the ClusterIP: enough that each of 3 pods gets some with near certainty
# (kube-proxy picks an endpoint at random per connection).
SERVICE_REQUESTS = 90


def test_deploy_rolls_to_this_build_with_no_warnings(
    cluster: LocalCluster, app: DeployedApp
) -> None:
    assert re.fullmatch(
        rf"user-hasher:{re.escape(package_version())}-[0-9a-f]{{12}}", app.image_ref
    )
    image_id = inspect_image(app.image_ref)["Id"].removeprefix("sha256:")
    assert app.image_ref.endswith(image_id[:12]), "the tag is not the image's ID"
    assert not [line for line in app.deploy_output.splitlines() if line.startswith("Warning:")]
    assert f"deploy: user-hasher runs {app.image_ref} on 3 replicas" in app.deploy_output
    assert running_image(cluster) == app.image_ref


def test_each_pod_serves_the_contract_and_its_own_identity(steady: list[dict[str, Any]]) -> None:
    assert len(steady) == 3
    for pod in steady:
        pod_ip, node_ip = pod["status"]["podIP"], pod["status"]["hostIP"]
        assert http_get(pod_ip, APP_PORT, CONTRACT_TARGET) == CONTRACT
        samples = [s for s in metric_samples(pod_ip) if s.name.startswith("user_hasher_")]
        assert samples
        for sample in samples:
            assert sample.labels["pod_ip"] == pod_ip, sample
            assert sample.labels["node_ip"] == node_ip, sample
            assert sample.labels["app_version"] == package_version(), sample
    report(f"pods: {len(steady)} ready, each answering the contract with its own pod_ip/node_ip")


def test_the_service_spreads_requests_over_every_pod(
    cluster: LocalCluster, steady: list[dict[str, Any]]
) -> None:
    cluster_ip = cluster.get_json("service", "user-hasher", "--namespace", "user-hasher")["spec"][
        "clusterIP"
    ]
    before = {pod["status"]["podIP"]: hashes_generated(pod["status"]["podIP"]) for pod in steady}
    for _ in range(SERVICE_REQUESTS):
        assert http_get(cluster_ip, 80, CONTRACT_TARGET) == CONTRACT
    served = {ip: hashes_generated(ip) - count for ip, count in before.items()}
    report(f"Service {cluster_ip}: {SERVICE_REQUESTS} requests spread as {sorted(served.values())}")
    assert sum(served.values()) == SERVICE_REQUESTS
    assert all(count > 0 for count in served.values()), served


def test_make_smoke_passes(run_make: Any, steady: list[dict[str, Any]]) -> None:
    result = run_make("smoke")
    assert "smoke: PASS http://127.0.0.1:" in result.stdout
    assert f'is "{CONTRACT_HASH}"' in result.stdout


def test_a_second_deploy_changes_nothing(
    cluster: LocalCluster, app: DeployedApp, run_make: Any, steady: list[dict[str, Any]]
) -> None:
    generation = cluster.get_json("deployment", "user-hasher", "--namespace", "user-hasher")[
        "metadata"
    ]["generation"]
    result = run_make("minikube-deploy")
    assert "deployment.apps/user-hasher unchanged" in result.stdout
    after = cluster.get_json("deployment", "user-hasher", "--namespace", "user-hasher")
    assert after["metadata"]["generation"] == generation, "a re-deploy rolled the pods"
    assert running_image(cluster) == app.image_ref
