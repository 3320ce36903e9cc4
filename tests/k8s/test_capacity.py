"""The Deployment and the HPA use the sizing policy that `make bench` derives its numbers
from (bench/capacity.py; README, "Capacity"): one place decides, the manifests follow."""

from bench import capacity
from proving.manifests import Doc, app_container, only


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
