"""The flavours, rendered by the real kustomize: the production flavour carries no Secret and
no test salt in any form, turns the salt guard on, and passes the same schema and semantic
checks as the dev manifest; the base is the dev flavour without its Secret."""

import base64
import copy

import pytest
import yaml

from proving.manifests import Doc, app_container, load_documents, only
from tests.k8s.flavours import (
    BASE_DIR,
    DEV_DIR,
    EXTERNAL_SECRET_EXAMPLE,
    PRODUCTION_DIR,
    kustomize,
    kustomize_text,
    provided_secret,
)
from tests.k8s.manifest_checks import all_problems
from tests.k8s.schema import kubernetes_versions, schema_problems

TEST_SALT = "TESTSALT"


@pytest.fixture(scope="module")
def _production_docs() -> list[Doc]:
    return kustomize(PRODUCTION_DIR)


@pytest.fixture
def production_docs(_production_docs: list[Doc]) -> list[Doc]:
    return copy.deepcopy(_production_docs)


def test_production_creates_no_secret(production_docs: list[Doc]) -> None:
    kinds = [doc["kind"] for doc in production_docs]
    assert "Secret" not in kinds
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "NetworkPolicy",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]


def test_production_carries_the_test_salt_in_no_form() -> None:
    rendered = kustomize_text(PRODUCTION_DIR)
    encoded = base64.b64encode(TEST_SALT.encode()).decode()
    assert encoded == "VEVTVFNBTFQ="
    for form in (TEST_SALT, TEST_SALT.lower(), encoded, encoded.rstrip("=")):
        assert form not in rendered
    # Nor the files it is built from, nor the example beside it.
    for path in (*PRODUCTION_DIR.iterdir(), *BASE_DIR.iterdir()):
        assert TEST_SALT not in path.read_text(), path.name
        assert encoded not in path.read_text(), path.name


def test_production_reads_the_salt_from_a_secret_and_turns_the_guard_on(
    production_docs: list[Doc],
) -> None:
    env = app_container(only(production_docs, "Deployment"))["env"]
    by_name = {var["name"]: var for var in env}
    assert by_name["REQUIRE_SALT"] == {"name": "REQUIRE_SALT", "value": "true"}
    assert by_name["USER_SALT"]["valueFrom"] == {
        "secretKeyRef": {"name": "user-salt", "key": "salt"}
    }
    for var in env:
        assert TEST_SALT not in str(var.get("value", "")), var["name"]


def test_the_dev_flavour_has_the_guard_off_and_the_test_secret() -> None:
    dev = kustomize(DEV_DIR)
    names = {var["name"] for var in app_container(only(dev, "Deployment"))["env"]}
    assert "REQUIRE_SALT" not in names
    assert only(dev, "Secret")["stringData"] == {"salt": TEST_SALT}


def test_the_base_is_the_dev_flavour_without_its_secret() -> None:
    dev = kustomize(DEV_DIR)
    assert kustomize(BASE_DIR) == [doc for doc in dev if doc["kind"] != "Secret"]


def test_production_differs_from_the_base_only_by_the_guard(production_docs: list[Doc]) -> None:
    container = app_container(only(production_docs, "Deployment"))
    container["env"] = [var for var in container["env"] if var["name"] != "REQUIRE_SALT"]
    assert production_docs == kustomize(BASE_DIR)


def test_the_external_secret_example_is_no_resource_of_the_flavour() -> None:
    kustomization = yaml.safe_load((PRODUCTION_DIR / "kustomization.yaml").read_text())
    assert EXTERNAL_SECRET_EXAMPLE.name not in kustomization["resources"]
    (example,) = load_documents(EXTERNAL_SECRET_EXAMPLE)
    assert example["kind"] == "ExternalSecret"
    assert example["spec"]["target"]["name"] == "user-salt"
    assert [item["secretKey"] for item in example["spec"]["data"]] == ["salt"]


@pytest.mark.parametrize("kubernetes_version", kubernetes_versions())
def test_production_objects_validate(production_docs: list[Doc], kubernetes_version: str) -> None:
    problems, validated = schema_problems(production_docs, kubernetes_version)
    assert problems == []
    assert validated == len(production_docs) == 7


def test_production_passes_every_semantic_check_with_the_provided_secret(
    production_docs: list[Doc], version: str
) -> None:
    """The references check needs the Secret the Deployment reads: the one the example
    ExternalSecret makes, which the secret manager provides beside the flavour."""
    assert all_problems([*production_docs, provided_secret("a-real-salt")], version) == []


def test_production_without_the_provided_secret_is_caught(
    production_docs: list[Doc], version: str
) -> None:
    assert all_problems(production_docs, version) == ["env USER_SALT: no Secret named 'user-salt'"]
