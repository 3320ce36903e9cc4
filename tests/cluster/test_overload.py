"""Past saturation on the live cluster (issue 23; docs/capacity.md#overload).

The load comes from inside the cluster, as clients do: the open-loop generator in a Job
(rehearsal/rollout_check.py's LoadJob), through the Service by its DNS name. Load sent from
this machine would arrive from the node's address, which admission control never refuses
(the kubelet probes from it). The pods' CPU limit is lowered so that the generator, on the
machine's other core, can offer several times what they serve. The kubelet probes them for
real all along.

1. One pod at 4x its saturation for a minute: no restart, its endpoint never leaves the
   Service, and the excess is refused (counted in user_hasher_shed_total, 503s seen by the
   client).
2. Three pods at 2x the Deployment's capacity: none goes unready, the excess is shed.

Afterwards `make minikube-deploy` puts back the committed HPA bounds and CPU limit.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from proving.contract import CONTRACT_SALT
from proving.kubectl import Watch
from proving.local_cluster import LocalCluster
from proving.manifests import MANIFEST, app_container, load_documents, only
from proving.openloop import RequestRecord, Target, measure_saturation, percentile
from rehearsal.rollout_check import FINISH_SECONDS, LoadJob, job_manifest
from tests.cluster.conftest import (
    APP,
    NAMESPACE,
    SELECTOR,
    DeployedApp,
    metric_samples,
    report,
    running_image,
    steady_pods,
    wait_steady,
)

DEPLOYMENT = only(load_documents(MANIFEST), "Deployment")
CONTAINER = app_container(DEPLOYMENT)
READINESS = CONTAINER["readinessProbe"]
OVERLOAD_SECONDS = 60.0
# The keep-alive clients' pool: large enough that the excess reaches the pods, not queues
# in the client waiting for a free connection (16, the generator's default, would).
KEEP_ALIVE_CONNECTIONS = 128
JOB = "user-hasher-overload"


def limit_pods(cluster: LocalCluster, replicas: int, cpu: str) -> list[dict[str, Any]]:
    """The HPA pinned at `replicas` and every pod's CPU limit (and request) at `cpu`; waits
    for the rollout and returns the pods."""
    cluster.kubectl(
        "patch",
        "hpa",
        APP,
        "--namespace",
        NAMESPACE,
        "--patch",
        json.dumps({"spec": {"minReplicas": replicas, "maxReplicas": replicas}}),
    )
    resources = {"limits": {"cpu": cpu}, "requests": {"cpu": cpu}}
    template = {"spec": {"containers": [{"name": CONTAINER["name"], "resources": resources}]}}
    patch = {"spec": {"replicas": replicas, "template": template}}
    cluster.kubectl(
        "patch", "deployment", APP, "--namespace", NAMESPACE, "--patch", json.dumps(patch)
    )

    def limited() -> list[dict[str, Any]] | None:
        pods = steady_pods(cluster)
        if pods is None or len(pods) != replicas:
            return None
        cpus = {c["resources"]["limits"]["cpu"] for p in pods for c in p["spec"]["containers"]}
        return pods if cpus == {cpu} else None

    return cluster.wait_for(limited, 300, f"{replicas} pod(s) with a {cpu} CPU limit")


def service_target(cluster: LocalCluster) -> Target:
    service = cluster.get_json("service", APP, "--namespace", NAMESPACE)["spec"]
    port = next(p["port"] for p in service["ports"] if p["name"] == "http")
    return Target(service["clusterIP"], port, CONTRACT_SALT)


def shed_total(pod_ip: str) -> float:
    return sum(s.value for s in metric_samples(pod_ip) if s.name == "user_hasher_shed_total")


def unready_moments(watch: Watch, names: set[str]) -> list[str]:
    """Every moment one of these pods was seen not ready, in its own status or in the
    Service's EndpointSlices."""
    seen = []
    for event in watch.events:
        thing = event.object
        if "containers" in thing.get("spec", {}) and thing["metadata"]["name"] in names:
            conditions = thing.get("status", {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] != "True" for c in conditions):
                seen.append(f"pod {thing['metadata']['name']} not ready")
        for endpoint in thing.get("endpoints") or []:
            name = (endpoint.get("targetRef") or {}).get("name")
            if name in names and not endpoint["conditions"].get("ready"):
                seen.append(f"endpoint of {name} not ready")
    return seen


def restarts(cluster: LocalCluster, names: set[str]) -> dict[str, int]:
    return {
        pod["metadata"]["name"]: pod["status"]["containerStatuses"][0]["restartCount"]
        for pod in cluster.pods(NAMESPACE, SELECTOR)
        if pod["metadata"]["name"] in names
    }


def overload(cluster: LocalCluster, rate: float) -> tuple[list[RequestRecord], list[str]]:
    """The Job's open loop at `rate` for OVERLOAD_SECONDS through the Service by its DNS
    name; the records, and every not-ready moment of the app's pods meanwhile (and for
    as long after it as readiness takes to flip, so a late flip is seen too)."""
    names = {pod["metadata"]["name"] for pod in cluster.pods(NAMESPACE, SELECTOR)}
    port = service_target(cluster).port
    host = f"{APP}.{NAMESPACE}.svc.cluster.local."
    job = json.loads(job_manifest(running_image(cluster), JOB, host, port, rate, OVERLOAD_SECONDS))
    job["spec"]["template"]["spec"]["containers"][0]["args"].append(
        f"--keep-alive-connections={KEEP_ALIVE_CONNECTIONS}"
    )
    kubectl = cluster.client.in_namespace(NAMESPACE)
    with (
        cluster.watch("pods", NAMESPACE, SELECTOR) as pods,
        cluster.watch("endpointslices", NAMESPACE) as slices,
    ):
        with LoadJob(kubectl, JOB, json.dumps(job)) as load:
            records = load.records(OVERLOAD_SECONDS + FINISH_SECONDS)
        time.sleep(READINESS["periodSeconds"] * READINESS["failureThreshold"])
    return records, unready_moments(pods, names) + unready_moments(slices, names)


def outcome_counts(records: list[RequestRecord]) -> Counter[str]:
    return Counter("ok" if r.ok else f"{r.error}:{r.status}" for r in records)


def summary(records: list[RequestRecord]) -> str:
    served = [r.latency for r in records if r.ok]
    p50, p99 = percentile(served, 0.5) or 0.0, percentile(served, 0.99) or 0.0
    # The generator's own wait for a free connection or slot, part of every latency: large
    # when the pods answer slowly and its pool is all busy.
    wait = percentile([r.wait for r in records], 0.99) or 0.0
    return (
        f"{len(served) / OVERLOAD_SECONDS:.0f} req/s served (p50/p99 {p50 * 1000:.0f}/"
        f"{p99 * 1000:.0f} ms; the client's own wait p99 {wait * 1000:.0f} ms), "
        f"outcomes {dict(outcome_counts(records))}"
    )


@pytest.fixture
def committed_limits_after(cluster: LocalCluster, app: DeployedApp) -> Iterator[None]:
    """user_hasher.yaml applied again afterwards, whatever happened: the HPA's bounds and
    the CPU limit as committed, and the app steady for the next module."""
    wait_steady(cluster)
    try:
        yield
    finally:
        cluster.make("minikube-deploy")
        wait_steady(cluster)


@pytest.mark.usefixtures("committed_limits_after")
def test_one_pod_at_4x_its_saturation_sheds_and_stays_ready(cluster: LocalCluster) -> None:
    # A quarter of a core: 4x its saturation is within what the generator's pod can offer.
    (pod,) = limit_pods(cluster, 1, "250m")
    name, pod_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    saturation = measure_saturation(service_target(cluster), connections=8, seconds=5.0)
    assert saturation.requests > 0, f"nothing answered through the Service: {saturation}"

    records, unready = overload(cluster, 4 * saturation.rate)

    shed = shed_total(pod_ip)
    outcomes = outcome_counts(records)
    report(
        f"one pod (250m CPU) at 4x its saturation ({saturation.rate:.0f} req/s) for "
        f"{OVERLOAD_SECONDS:.0f} s: {summary(records)}; user_hasher_shed_total {shed:.0f}; "
        f"restarts {restarts(cluster, {name})}; not-ready moments {len(unready)}"
    )
    assert unready == [], f"the overloaded pod left the Service: {unready[:3]}"
    assert restarts(cluster, {name}) == {name: 0}
    assert outcomes["ok"] > 0, "nothing was served"
    assert shed > 0, "nothing was shed at 4x saturation"
    assert outcomes["5xx:503"] > 0, "no client saw a 503"


@pytest.mark.usefixtures("committed_limits_after")
def test_three_pods_at_2x_the_deployments_capacity_shed_and_stay_ready(
    cluster: LocalCluster,
) -> None:
    pods = limit_pods(cluster, 3, "200m")
    names = {pod["metadata"]["name"] for pod in pods}
    capacity = measure_saturation(service_target(cluster), connections=24, seconds=5.0)
    assert capacity.requests > 0, f"nothing answered through the Service: {capacity}"

    records, unready = overload(cluster, 2 * capacity.rate)

    shed = {pod["metadata"]["name"]: shed_total(pod["status"]["podIP"]) for pod in pods}
    report(
        f"three pods (200m CPU each) at 2x their capacity ({capacity.rate:.0f} req/s) for "
        f"{OVERLOAD_SECONDS:.0f} s: {summary(records)}; user_hasher_shed_total {shed}; "
        f"restarts {restarts(cluster, names)}; not-ready moments {len(unready)}"
    )
    assert unready == [], f"a pod left the Service: {unready[:3]}"
    assert set(restarts(cluster, names).values()) == {0}
    assert outcome_counts(records)["ok"] > 0, "nothing was served"
    assert sum(shed.values()) > 0, "nothing was shed at 2x capacity"
