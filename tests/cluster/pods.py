"""Helper pods the cluster tests start: each one admitted by Pod Security `restricted` as the
app's own pods are (non-root uid 10001, no privilege escalation, no capabilities, read-only root
filesystem), so a test's own pod never needs the namespace's policy loosened."""

from __future__ import annotations

from typing import Any


def restricted_pod(
    name: str, namespace: str, container: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    """A Pod named `name` in `namespace` running `container` (name, image, command, ...), locked
    down; `spec` adds pod-level fields such as volumes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
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
                    "name": name,
                    "imagePullPolicy": "Never",
                    **container,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            **spec,
        },
    }
