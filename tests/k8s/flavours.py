"""The kustomize flavours: k8s/base/ (what every cluster gets), k8s/dev/ (the base plus the
test Secret: user_hasher.yaml) and k8s/production/ (the base, the salt guard on, no Secret),
rendered by the real kustomize built into this virtualenv's kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from proving.manifests import REPO, Doc

BASE_DIR = REPO / "k8s" / "base"
DEV_DIR = REPO / "k8s" / "dev"
PRODUCTION_DIR = REPO / "k8s" / "production"
EXTERNAL_SECRET_EXAMPLE = PRODUCTION_DIR / "externalsecret.example.yaml"


def kustomize_text(directory: Path) -> str:
    return subprocess.run(
        [str(Path(sys.executable).with_name("kubectl")), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def kustomize(directory: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(kustomize_text(directory)) if doc]


def provided_secret(salt: str) -> Doc:
    """The Secret the secret manager provides in production, named and keyed as the example
    ExternalSecret's target says: what a production cluster holds beside the flavour."""
    example = yaml.safe_load(EXTERNAL_SECRET_EXAMPLE.read_text())
    (item,) = example["spec"]["data"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": example["spec"]["target"]["name"],
            "namespace": example["metadata"]["namespace"],
        },
        "type": "Opaque",
        "stringData": {item["secretKey"]: salt},
    }
