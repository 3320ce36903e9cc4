"""The Deployment and the HPA use the sizing policy that `make bench` derives its numbers
from (bench/capacity.py; docs/capacity.md): one place decides, the manifests follow."""

import yaml

from bench import capacity
from proving.manifests import REPO, Doc, app_container, only

ROLLOUT_CHECK_JOB = REPO / "rehearsal/rollout-check-job.yaml"


def test_resources_and_hpa_target_follow_the_capacity_policy(manifest_docs: list[Doc]) -> None:
    resources = app_container(only(manifest_docs, "Deployment"))["resources"]
    assert resources["requests"]["cpu"] == f"{capacity.CPU_REQUEST_MILLICORES}m"
    assert resources["limits"]["cpu"] == str(capacity.CPU_LIMIT_MILLICORES // 1000)
    assert resources["limits"]["memory"] == f"{capacity.MEMORY_LIMIT_MIB}Mi"
    hpa = only(manifest_docs, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": capacity.HPA_TARGET_UTILIZATION_PERCENT,
    }


def test_readiness_timeout_follows_the_capacity_policy(manifest_docs: list[Doc]) -> None:
    container = app_container(only(manifest_docs, "Deployment"))
    assert container["readinessProbe"]["timeoutSeconds"] == capacity.READINESS_TIMEOUT_SECONDS


def test_memory_request_leaves_the_limit_room_for_connections(manifest_docs: list[Doc]) -> None:
    resources = app_container(only(manifest_docs, "Deployment"))["resources"]
    request = int(resources["requests"]["memory"].removesuffix("Mi"))
    assert request % 32 == 0  # how bench/capacity.py rounds the measured RSS up
    assert request < capacity.MEMORY_LIMIT_MIB


def millicores(quantity: str) -> int:
    return int(quantity.removesuffix("m")) if quantity.endswith("m") else int(quantity) * 1000


def test_a_rollout_under_the_rollout_check_fits_a_default_minikube(
    manifest_docs: list[Doc],
) -> None:
    """The HPA's minimum of pods, a rollout's surge and the rollout-check's load Job fit
    in what a default minikube leaves (tests/cluster/test_operator_path.py runs them on a
    node reserving as much)."""
    deployment = only(manifest_docs, "Deployment")
    pod_millicores = millicores(app_container(deployment)["resources"]["requests"]["cpu"])
    max_surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    min_replicas = only(manifest_docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    (load,) = yaml.safe_load(ROLLOUT_CHECK_JOB.read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    assert millicores(load["resources"]["requests"]["cpu"]) == (
        capacity.ROLLOUT_CHECK_CPU_REQUEST_MILLICORES
    )
    assert capacity.minikube_spare_millicores(min_replicas, max_surge, pod_millicores) >= 0
