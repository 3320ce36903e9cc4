"""Strict schema validation with kubernetes-validate's Python API.

Strict schemas reject fields Kubernetes does not know (a typo like `replica:` would
otherwise be dropped silently by the API server). kubernetes-validate reports only
the first error of each object, which is why manifest_checks.py exists too.
"""

from __future__ import annotations

import kubernetes_validate

from proving.manifests import Doc

# The oldest Kubernetes this must run on (a common managed-cluster floor in 2026).
OLDEST_KUBERNETES = "1.30"
# Kinds without a bundled schema that are expected: the Prometheus Operator's CRDs.
KNOWN_CUSTOM_KINDS = frozenset(
    {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
)


def kubernetes_versions() -> list[str]:
    return [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]


def schema_problems(docs: list[Doc], kubernetes_version: str) -> tuple[list[str], int]:
    """Returns (problems, number of objects validated against a schema)."""
    problems, validated = [], 0
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, kubernetes_version, strict=True)
            validated += 1
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{where} (Kubernetes {error.version}): {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            if (doc.get("apiVersion"), doc.get("kind")) not in KNOWN_CUSTOM_KINDS:
                problems.append(f"{where}: {error.message}")
    return problems, validated
