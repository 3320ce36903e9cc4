"""The one steady-state detector: a Deployment whose rollout is done and whose pods all serve.

Steady means: the controller has seen the latest spec, every replica count in the status
equals the wanted count, and exactly that many pods exist, each ready and none terminating.
The rehearsal reads the objects from its watches, the cluster tests from `kubectl get`;
both ask this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Pod = dict[str, Any]
# What a finished rollout shows in the Deployment's status: each equal to spec.replicas.
REPLICA_COUNTS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")


def is_ready(pod: Pod) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def steady_pods(deployment: dict[str, Any] | None, pods: Iterable[Pod]) -> list[Pod] | None:
    """The Deployment's pods when it is steady; None otherwise (or when there is none)."""
    if deployment is None:
        return None
    status, replicas = deployment.get("status", {}), deployment["spec"]["replicas"]
    if deployment["metadata"]["generation"] != status.get("observedGeneration"):
        return None
    if any(status.get(count) != replicas for count in REPLICA_COUNTS):
        return None
    pods = list(pods)
    live = [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]
    if len(pods) != replicas or len(live) != replicas or not all(map(is_ready, live)):
        return None
    return live
