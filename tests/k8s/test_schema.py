"""Every object validates against the strict Kubernetes schemas, oldest and newest."""

import kubernetes_validate
import pytest

from proving.manifests import Doc, only
from tests.k8s.schema import OLDEST_KUBERNETES, kubernetes_versions, schema_problems


def test_versions_cover_the_oldest_supported_and_the_newest_bundled() -> None:
    versions = kubernetes_versions()
    assert versions[0] == OLDEST_KUBERNETES
    assert versions[1] == kubernetes_validate.latest_version()
    assert tuple(map(int, versions[1].split(".")[:2])) > (1, 30)


@pytest.mark.parametrize("kubernetes_version", kubernetes_versions())
def test_every_manifest_object_validates(manifest_docs: list[Doc], kubernetes_version: str) -> None:
    problems, validated = schema_problems(manifest_docs, kubernetes_version)
    assert problems == []
    assert validated == len(manifest_docs) == 8


@pytest.mark.parametrize("kubernetes_version", kubernetes_versions())
def test_monitoring_objects_are_the_only_schemaless_kinds(
    monitoring_docs: list[Doc], kubernetes_version: str
) -> None:
    problems, validated = schema_problems(monitoring_docs, kubernetes_version)
    assert problems == []
    assert validated == 0
    assert sorted(doc["kind"] for doc in monitoring_docs) == ["PodMonitor", "PrometheusRule"]


def test_an_unknown_kind_fails(manifest_docs: list[Doc]) -> None:
    only(manifest_docs, "Deployment")["kind"] = "Deploymnt"
    problems, _ = schema_problems(manifest_docs, OLDEST_KUBERNETES)
    assert len(problems) == 1
    assert "Couldn't find schema for kind Deploymnt" in problems[0]


def test_a_misspelt_field_fails_strict_validation(manifest_docs: list[Doc]) -> None:
    spec = only(manifest_docs, "Deployment")["spec"]
    spec["minReadySecond"] = spec.pop("minReadySeconds")
    problems, _ = schema_problems(manifest_docs, OLDEST_KUBERNETES)
    assert len(problems) == 1
    assert "Deployment/user-hasher" in problems[0]
    assert "'minReadySecond'" in problems[0]


def test_a_wrong_type_fails(manifest_docs: list[Doc]) -> None:
    only(manifest_docs, "Service")["spec"]["ports"][0]["port"] = "eighty"
    problems, _ = schema_problems(manifest_docs, kubernetes_validate.latest_version())
    assert len(problems) == 1
    assert "spec.ports.0.port" in problems[0]
