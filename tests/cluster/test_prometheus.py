"""Prometheus discovers the pods the way the manifests advertise them (the committed scrape
config: the pod annotations and the container port named `metrics`) and scrapes each one on
that port: PromQL shows every pod up, and the hashes each pod counted equal the requests sent
to it on the service port."""

from typing import Any

from proving.local_cluster import LocalCluster
from tests.cluster.conftest import (
    APP_PORT,
    CONTRACT,
    METRICS_PORT,
    hashes_generated,
    http_get,
    report,
    scraped_targets,
)
from tests.cluster.prometheus import ClusterPrometheus

# Scrapes every second; discovery is a watch on the API. Generous for a busy machine.
SCRAPE_WAIT_SECONDS = 90


def test_every_pod_is_discovered_and_up(
    cluster: LocalCluster, prometheus: ClusterPrometheus, steady: list[dict[str, Any]]
) -> None:
    cluster.wait_for(
        lambda: scraped_targets(prometheus, steady), SCRAPE_WAIT_SECONDS, "3 targets up"
    )
    up = prometheus.values_by('up{job="user-hasher"}', "pod")
    assert up == {pod["metadata"]["name"]: 1.0 for pod in steady}
    build_info = prometheus.values_by('user_hasher_build_info{job="user-hasher"}', "pod_ip")
    assert set(build_info) == {pod["status"]["podIP"] for pod in steady}
    instances = sorted(t["labels"]["instance"] for t in prometheus.active_targets())
    assert all(instance.endswith(f":{METRICS_PORT}") for instance in instances)
    report(
        f"Prometheus: {len(up)} of {len(steady)} targets up, on the metrics port {instances};"
        f" user_hasher_build_info per pod_ip {sorted(build_info)}"
    )


def test_hashes_per_pod_match_the_requests_sent(
    cluster: LocalCluster, prometheus: ClusterPrometheus, steady: list[dict[str, Any]]
) -> None:
    # A different number to each pod, so a mixed-up label cannot pass.
    sent = {pod["status"]["podIP"]: 3 + 4 * index for index, pod in enumerate(steady)}
    expected = {}
    for pod_ip, count in sent.items():
        expected[pod_ip] = hashes_generated(pod_ip) + count
        for number in range(count):
            status, _ = http_get(pod_ip, APP_PORT, f"/user_hash?user_id=prometheus-{number}")
            assert status == CONTRACT[0]
    query = 'sum by (pod_ip) (user_hasher_hashes_generated_total{job="user-hasher"})'
    cluster.wait_for(
        lambda: prometheus.values_by(query, "pod_ip") == expected,
        SCRAPE_WAIT_SECONDS,
        f"{query} == {expected}",
    )
    report(f"Prometheus: hashes per pod_ip {expected} after sending {sent}")
