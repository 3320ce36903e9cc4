"""Where the pods may land and how long they stay on a lost node: the Deployment's topology
spread and tolerations, as the node rehearsal (tests/nodes) proves them live. Each rule here
is one a live run showed is needed (docs/operating.md, "Nodes")."""

from typing import Any

from proving.manifests import Doc, only, pod_spec

HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def constraints(docs: list[Doc]) -> dict[str, dict[str, Any]]:
    spec = pod_spec(only(docs, "Deployment"))
    return {c["topologyKey"]: c for c in spec.get("topologySpreadConstraints") or []}


def test_pods_spread_over_nodes_as_a_rule_and_over_zones_as_a_preference(
    manifest_docs: list[Doc],
) -> None:
    by_key = constraints(manifest_docs)
    assert set(by_key) == {HOSTNAME, ZONE}
    # Hard per node: a drain or a death takes at most a node's share. One node (minikube)
    # still holds every pod: its skew is always 0.
    assert by_key[HOSTNAME]["whenUnsatisfiable"] == "DoNotSchedule"
    # Soft per zone: a minikube node has no zone label, and a hard rule would schedule
    # nothing there.
    assert by_key[ZONE]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in by_key.values():
        assert constraint["maxSkew"] == 1
        # Cordoned and dead (tainted) nodes left out of the count, or a drained node's
        # empty slot would forbid its pod's replacement anywhere else.
        assert constraint["nodeTaintsPolicy"] == "Honor"
        # Each revision spreads on its own during a rollout.
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_a_lost_nodes_pods_are_replaced_after_30_s_not_300(manifest_docs: list[Doc]) -> None:
    tolerations = pod_spec(only(manifest_docs, "Deployment"))["tolerations"]
    by_key = {t["key"]: t for t in tolerations}
    assert set(by_key) == {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"}
    for toleration in by_key.values():
        assert toleration == toleration | {
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        }


def test_the_pdb_lets_one_pod_go_at_a_time(manifest_docs: list[Doc]) -> None:
    spec = only(manifest_docs, "PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
