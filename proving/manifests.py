"""Loading the Kubernetes manifests, finding objects in them, and resolving a
container's environment the way the kubelet would (to run the app with it outside a cluster)."""

from __future__ import annotations

import base64
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING_DIR = REPO / "k8s" / "monitoring"
MANIFEST = REPO / "user_hasher.yaml"
PYPROJECT = REPO / "pyproject.toml"

Doc = dict[str, Any]


class ManifestError(ValueError):
    """The manifests do not have the shape a tool relies on."""


def load_documents(path: Path) -> list[Doc]:
    """Every non-empty YAML document in the file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_directory(directory: Path) -> list[Doc]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in load_documents(path)]


def only(docs: Iterable[Doc], kind: str) -> Doc:
    """The one object of this kind; a missing or second one raises ManifestError."""
    matches = [doc for doc in docs if doc.get("kind") == kind]
    if len(matches) != 1:
        raise ManifestError(f"expected exactly one {kind}, found {len(matches)}")
    return matches[0]


def pod_spec(deployment: Doc) -> Doc:
    return deployment["spec"]["template"]["spec"]


def app_container(deployment: Doc) -> Doc:
    containers = pod_spec(deployment)["containers"]
    if len(containers) != 1:
        raise ManifestError(f"the Deployment runs {len(containers)} containers, not exactly one")
    return containers[0]


def secret_values(secret: Doc) -> dict[str, str]:
    """A Secret's keys and plain values (stringData wins over data, as in the API server)."""
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def resolve_env(docs: list[Doc], field_values: dict[str, str]) -> dict[str, str]:
    """The app container's env as the kubelet would set it.

    `value` is taken as is, `secretKeyRef` from the Secret in the manifests,
    `fieldRef` from the pod's labels (metadata.labels['...']) or from `field_values`
    (status.podIP and friends, which only exist in a cluster).
    """
    deployment = only(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    secrets = {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "Secret"}
    env: dict[str, str] = {}
    for var in app_container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_values(secrets[ref["name"]])[ref["key"]]
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path.startswith("metadata.labels['"):
                env[var["name"]] = labels[path.removeprefix("metadata.labels['").removesuffix("']")]
            else:
                env[var["name"]] = field_values[path]
        elif "resourceFieldRef" in source:
            env[var["name"]] = resource_field(app_container(deployment), source["resourceFieldRef"])
        else:
            raise ManifestError(f"env {var['name']}: unsupported source {sorted(source)}")
    return env


def cpu_millicores(quantity: str | int | float) -> int:
    """A CPU quantity ("1", "0.5", "250m") in millicores."""
    text = str(quantity)
    if text.endswith("m"):
        return int(text.removesuffix("m"))
    return round(float(text) * 1000)


def resource_field(container: Doc, ref: dict[str, Any]) -> str:
    """A resourceFieldRef's value as the kubelet sets it: the container's CPU limit or
    request in units of `divisor`, rounded up (only CPU is supported here)."""
    kind, _, name = ref["resource"].partition(".")
    if name != "cpu":
        raise ManifestError(f"resourceFieldRef {ref['resource']}: only CPU is supported")
    millicores = cpu_millicores(container["resources"][kind]["cpu"])
    divisor = cpu_millicores(ref.get("divisor", "1"))
    return str(-(-millicores // divisor))


def package_version() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["version"]
