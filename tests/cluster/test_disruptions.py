"""What the controllers do to the app, for real: the eviction API honours the
PodDisruptionBudget, the HPA owns the replica count (a re-apply keeps it), and a pod
saturated with requests stays Ready (the probes are sized for it)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any

import yaml

from proving.local_cluster import LocalCluster
from proving.manifests import MANIFEST, app_container, load_documents, only
from tests.cluster.conftest import (
    APP,
    APP_PORT,
    NAMESPACE,
    DeployedApp,
    report,
    wait_steady,
)

PDB_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget"
# Saturation: this many keep-alive connections send requests back to back at one pod for
# LOAD_SECONDS, while /readyz is timed on a new connection every PROBE_INTERVAL, as the
# kubelet probes. docs/capacity.md, "Probes under saturation", has what this measured.
# Many more than saturate a core (32), and fewer than the requests in the app past which
# admission control sheds even what comes from the node, as this load does (4x its bound of
# 48: docs/capacity.md#overload): the 503s would then count against the availability SLO
# that the rehearsal, run next, checks stays at zero.
LOAD_CONNECTIONS = 128
LOAD_SECONDS = 12.0
MAX_REQUESTS_PER_CONNECTION = 20_000
PROBE_INTERVAL = 0.25


def evict(cluster: LocalCluster, pod: str) -> tuple[int, str]:
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NAMESPACE},
    }
    result = cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def disruptions_allowed(cluster: LocalCluster) -> int:
    pdb = cluster.get_json("poddisruptionbudget", APP, "--namespace", NAMESPACE)
    return pdb.get("status", {}).get("disruptionsAllowed", -1)


def deployment_replicas(cluster: LocalCluster) -> int:
    return cluster.get_json("deployment", APP, "--namespace", NAMESPACE)["spec"]["replicas"]


def test_the_eviction_api_honours_the_pdb(
    cluster: LocalCluster, steady: list[dict[str, Any]]
) -> None:
    cluster.wait_for(lambda: disruptions_allowed(cluster) == 1, 60, "the PDB allowing 1")
    first, second = (pod["metadata"]["name"] for pod in steady[:2])
    assert evict(cluster, first)[0] == 0, "the first eviction was refused"
    code, output = evict(cluster, second)
    report(f"eviction: {first} evicted; {second} refused at once: {output.strip()[:120]}")
    assert code != 0
    assert PDB_REFUSAL in output
    assert "TooManyRequests" in output
    pods = wait_steady(cluster)
    assert second in {pod["metadata"]["name"] for pod in pods}, "the refused pod went anyway"
    assert first not in {pod["metadata"]["name"] for pod in pods}
    cluster.wait_for(lambda: disruptions_allowed(cluster) == 1, 60, "the PDB allowing 1 again")


def test_the_hpa_owns_the_replica_count(
    cluster: LocalCluster, app: DeployedApp, run_make: Any, steady: list[dict[str, Any]]
) -> None:
    assert deployment_replicas(cluster) == 3
    # What the HPA does when it scales: set the count through the scale subresource. (The HPA
    # acting on its own is shown by every fresh deploy: it raises the new Deployment's 1 to 3.)
    cluster.kubectl("scale", f"deployment/{APP}", "--namespace", NAMESPACE, "--replicas=4")
    wait_steady(cluster)

    result = run_make("minikube-deploy")  # re-applies user_hasher.yaml
    assert "deployment.apps/user-hasher unchanged" in result.stdout
    assert deployment_replicas(cluster) == 4, "the re-apply reset the HPA's count"

    # Negative control: a manifest that sets `replicas`, as this one did, resets the count.
    deployment = only(load_documents(MANIFEST), "Deployment")
    app_container(deployment)["image"] = app.image_ref
    deployment["spec"]["replicas"] = 3
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment))
    assert deployment_replicas(cluster) == 3, "an apply with replicas kept the HPA's count"
    report("HPA's count: scaled to 4; re-applying user_hasher.yaml kept 4; replicas: 3 reset it")

    # The one-time migration (docs/operating.md) for a Deployment once applied with `replicas`:
    # without it, the next apply would delete the field, and the Deployment would drop to 1 pod.
    cluster.kubectl("apply", "set-last-applied", "-f", "user_hasher.yaml")
    run_make("minikube-deploy")
    assert deployment_replicas(cluster) == 3
    wait_steady(cluster)


async def _load_and_probe(host: str) -> tuple[Counter[int], list[float]]:
    """Keep-alive clients sending back to back, and the probe; the load's statuses."""
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(host, APP_PORT)
        try:
            for sequence in range(MAX_REQUESTS_PER_CONNECTION):
                if stop.is_set():
                    break
                request = (
                    f"GET /user_hash?user_id=load-{number}-{sequence} HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in lines
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                statuses[int(lines[0].split()[1])] += 1
                # Past its bound, admission control sheds in the app even what comes from
                # the node (docs/capacity.md#overload), and closes the connection: a client
                # opens another.
                if b"connection: close" in lines:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, APP_PORT)
        finally:
            writer.close()

    async def probe(latencies: list[float]) -> None:
        while not stop.is_set():
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(host, APP_PORT)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status_line = await reader.readline()
            await reader.read()
            writer.close()
            assert b" 200 " in status_line, status_line
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(PROBE_INTERVAL)

    latencies: list[float] = []
    tasks = [asyncio.create_task(client(n)) for n in range(LOAD_CONNECTIONS)]
    tasks.append(asyncio.create_task(probe(latencies)))
    await asyncio.sleep(LOAD_SECONDS)
    stop.set()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    errors = [result for result in done if isinstance(result, BaseException)]
    assert not errors, errors[:3]
    return statuses, latencies


def test_a_saturated_pod_stays_ready(cluster: LocalCluster, steady: list[dict[str, Any]]) -> None:
    pod = steady[0]
    name, pod_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    readiness = app_container(only(load_documents(MANIFEST), "Deployment"))["readinessProbe"]
    with cluster.watch("endpointslices", NAMESPACE) as slices:
        statuses, latencies = asyncio.run(_load_and_probe(pod_ip))
        time.sleep(readiness["periodSeconds"] * readiness["failureThreshold"])
    answered = statuses[200]
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    report(
        f"saturated pod ({LOAD_CONNECTIONS} connections, {LOAD_SECONDS:.0f} s, "
        f"{answered / LOAD_SECONDS:.0f} req/s): /readyz p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms over {len(latencies)} probes; "
        f"readinessProbe timeout {readiness['timeoutSeconds']} s; load statuses {dict(statuses)}"
    )
    assert set(statuses) == {200}, statuses  # none shed: under the in-app bound
    assert latencies[-1] < readiness["timeoutSeconds"]
    unready = [
        endpoint
        for event in slices.events
        for endpoint in event.object.get("endpoints") or []
        if (endpoint.get("targetRef") or {}).get("name") == name
        and not endpoint["conditions"].get("ready")
    ]
    assert not unready, f"the saturated pod left the Service: {unready[:1]}"
    after = cluster.get_json("pod", name, "--namespace", NAMESPACE)
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
