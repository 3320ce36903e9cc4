"""Salt agreement on the live cluster: UserHasherSaltMismatch (k8s/monitoring/rules/spec.yaml,
its expression as committed) fires when the pods behind the Service serve two salts, and stays
quiet through a salt change rolled out as docs/operating.md says.

The committed alert waits 5 minutes (`for: 5m`) before it fires; CI cannot wait that long, so
this module's Prometheus loads, beside the real rules, a TEST-ONLY copy of the alert: the same
expression, `for: 10s`, told apart by the label override="test-only-for-10s". The copy shows
the expression fires; the real alert, evaluated at the same time, shows what production sees:
pending while the salts differ, firing only once they differ for 5 minutes.

- Two ReplicaSets: beside the Deployment's, a ReplicaSet of one pod made from the Deployment's
  own pod template with another USER_SALT, which the Service selects too.
- A salt change: the Secret patched, `kubectl rollout restart`; while old and new pods overlap
  the real alert is pending, it never fires, and it is inactive once the rollout is done;
  every pod then exports the new salt's fingerprint. The Secret is set back to the test salt
  and rolled out again, so the next module finds the app as it was.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from proving.contract import CONTRACT_BODY, CONTRACT_SALT, CONTRACT_TARGET
from proving.local_cluster import LocalCluster
from tests.cluster.conftest import (
    APP,
    APP_PORT,
    NAMESPACE,
    DeployedApp,
    http_get,
    metric_samples,
    report,
    scraped_targets,
    wait_steady,
)
from tests.cluster.prometheus import ClusterPrometheus, bundle_binary
from tests.support.needs import require
from tests.support.prometheus_rules import rule_groups
from user_hasher.hashing import SALT_CANARY_USER_ID, salt_fingerprint, user_hash

ALERT = "UserHasherSaltMismatch"
OVERRIDE_LABEL = "override"
OVERRIDE = "test-only-for-10s"
OVERRIDE_FOR = "10s"
OTHER_SALT = "salt-agreement-other"
NEW_SALT = "salt-agreement-rotated"
OTHER_REPLICASET = "user-hasher-other-salt"
OTHER_LABEL = "user-hasher.test/salt"
SECRET = "user-salt"
# Discovery is a watch, scrapes and rule evaluations every second; generous for a busy machine.
WAIT_SECONDS = 90
ROLLOUT_TIMEOUT_SECONDS = 180
# New connections to the ClusterIP, spread at random over 4 pods: the odd pod is missed by
# all of them with a chance of (3/4)**60, about 3 in 100 million.
SERVICE_TRIES = 60
CANARY_TARGET = f"/user_hash?user_id={SALT_CANARY_USER_ID}"


def override_rule_file(directory: Path) -> Path:
    """The committed alert with only its `for` shortened and a label saying so."""
    (rule,) = [r for g in rule_groups() for r in g["rules"] if r.get("alert") == ALERT]
    override = {
        **rule,
        "for": OVERRIDE_FOR,
        "labels": {**rule["labels"], OVERRIDE_LABEL: OVERRIDE},
    }
    group = {"name": f"TEST-ONLY {ALERT} with for: {OVERRIDE_FOR}", "interval": "1s"}
    path = directory / "test-only-salt-mismatch.rules.yaml"
    path.write_text(json.dumps({"groups": [{**group, "rules": [override]}]}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def salt_prometheus(
    cluster: LocalCluster, app: DeployedApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterPrometheus]:
    problem = f"no Prometheus with Kubernetes discovery at {bundle_binary()}"
    require(None if bundle_binary().is_file() else problem, "the salt agreement tests")
    workdir = tmp_path_factory.mktemp("salt-prometheus")
    server = ClusterPrometheus(workdir, cluster, [override_rule_file(workdir)]).start()
    try:
        yield server
    finally:
        server.stop()


def alert_selector(test_only: bool) -> str:
    return f'ALERTS{{alertname="{ALERT}", {OVERRIDE_LABEL}="{OVERRIDE if test_only else ""}"}}'


def alert_states(prometheus: ClusterPrometheus, test_only: bool) -> set[str]:
    return {item["metric"]["alertstate"] for item in prometheus.query(alert_selector(test_only))}


def first_seen(
    prometheus: ClusterPrometheus, test_only: bool, start: float, end: float
) -> dict[str, tuple[float, float]]:
    """Per alert state, the first and last moment the alert was in it within [start, end]."""
    seen: dict[str, tuple[float, float]] = {}
    for series in prometheus.series_between(alert_selector(test_only), start, end):
        times = [at for at, _ in series["values"] if start <= at <= end]
        if times:
            seen[series["metric"]["alertstate"]] = (min(times), max(times))
    return seen


def fingerprints(prometheus: ClusterPrometheus) -> dict[str, str]:
    """pod: the salt fingerprint Prometheus holds for it now."""
    query = f'user_hasher_build_info{{namespace="{NAMESPACE}"}}'
    return {
        item["metric"]["pod"]: item["metric"]["salt_fingerprint"]
        for item in prometheus.query(query)
    }


def quiet(prometheus: ClusterPrometheus) -> bool:
    return not (alert_states(prometheus, test_only=True) | alert_states(prometheus, False))


def other_salt_replicaset(deployment: dict[str, Any]) -> dict[str, Any]:
    """One pod of the Deployment's own template serving OTHER_SALT. Its own labels do not match
    the Deployment's selector, so the Deployment does not adopt (and scale away) the
    ReplicaSet; its pod keeps the template's labels, so the Service selects it."""
    template = copy.deepcopy(deployment["spec"]["template"])
    template["metadata"]["labels"][OTHER_LABEL] = "other"
    (container,) = template["spec"]["containers"]
    container["env"] = [
        {"name": "USER_SALT", "value": OTHER_SALT} if variable["name"] == "USER_SALT" else variable
        for variable in container["env"]
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": OTHER_REPLICASET,
            "namespace": NAMESPACE,
            "labels": {OTHER_LABEL: "other"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {OTHER_LABEL: "other"}},
            "template": template,
        },
    }


def ready_endpoints(cluster: LocalCluster) -> set[str]:
    """The pod IPs the Service sends traffic to (its ready EndpointSlice endpoints)."""
    slices = cluster.get_json(
        "endpointslices",
        "--namespace",
        NAMESPACE,
        "--selector",
        f"kubernetes.io/service-name={APP}",
    )["items"]
    return {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


def roll_salt(cluster: LocalCluster, salt: str) -> float:
    """The salt change of docs/operating.md: the Secret patched, the Deployment restarted and
    waited for. Returns the seconds it took."""
    started = time.monotonic()
    namespaced = ("--namespace", NAMESPACE)
    patch = json.dumps({"stringData": {"salt": salt}})
    cluster.kubectl("patch", "secret", SECRET, *namespaced, "--type=merge", "--patch", patch)
    cluster.kubectl("rollout", "restart", f"deployment/{APP}", *namespaced)
    cluster.kubectl(
        *["rollout", "status", f"deployment/{APP}", *namespaced],
        f"--timeout={ROLLOUT_TIMEOUT_SECONDS}s",
        timeout=ROLLOUT_TIMEOUT_SECONDS + 30,
    )
    return time.monotonic() - started


def canary_body(salt: str) -> bytes:
    return f'"{user_hash(SALT_CANARY_USER_ID, salt)}"'.encode()


def test_two_replicasets_with_different_salts_behind_the_service_fire_the_alert(
    cluster: LocalCluster, salt_prometheus: ClusterPrometheus, steady: list[dict[str, Any]]
) -> None:
    prometheus = salt_prometheus
    cluster.wait_for(lambda: scraped_targets(prometheus, steady), WAIT_SECONDS, "targets up")
    assert quiet(prometheus), "the salt alert was active before the test"
    deployment = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)
    service_ip = cluster.get_json("service", APP, "--namespace", NAMESPACE)["spec"]["clusterIP"]
    created = time.time()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(other_salt_replicaset(deployment)))
    try:
        other_ip = cluster.wait_for(
            lambda: ready_other_pod_ip(cluster), WAIT_SECONDS, "the other salt's pod ready"
        )
        cluster.wait_for(
            lambda: other_ip in ready_endpoints(cluster), WAIT_SECONDS, "it behind the Service"
        )
        # Through the Service, one user now gets two different hashes.
        answers = {http_get(service_ip, 80, CANARY_TARGET)[1] for _ in range(SERVICE_TRIES)}
        assert answers == {canary_body(CONTRACT_SALT), canary_body(OTHER_SALT)}

        cluster.wait_for(
            lambda: "firing" in alert_states(prometheus, test_only=True),
            WAIT_SECONDS,
            f"the test-only copy of {ALERT} firing",
        )
        fired = time.time()
        # The real alert, same expression: pending, as it stays for 5 minutes.
        assert alert_states(prometheus, test_only=False) == {"pending"}
        seen = first_seen(prometheus, True, created, fired + 1)
        pending_at, firing_at = seen["pending"][0], seen["firing"][0]
        assert firing_at - pending_at >= 10
    finally:
        cluster.kubectl(
            *["delete", "replicaset", OTHER_REPLICASET, "--namespace", NAMESPACE],
            *["--wait=true", "--timeout=90s"],
            timeout=120,
        )
    deleted = time.time()
    wait_steady(cluster)
    cluster.wait_for(lambda: quiet(prometheus), WAIT_SECONDS, f"{ALERT} resolved")
    report(
        f"{ALERT}, two ReplicaSets ({OTHER_REPLICASET}: 1 pod, another salt, behind the Service;"
        f" {len(answers)} different canary hashes through the ClusterIP): pending"
        f" {pending_at - created:.1f} s after the ReplicaSet was created, the test-only copy"
        f" (for: {OVERRIDE_FOR}) firing {firing_at - pending_at:.1f} s later, the real one"
        f" (for: 5m) pending; both resolved {time.time() - deleted:.1f} s after its deletion"
    )


def ready_other_pod_ip(cluster: LocalCluster) -> str | None:
    pods = cluster.pods(NAMESPACE, f"{OTHER_LABEL}=other")
    ready = [
        pod
        for pod in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions") or []
        )
    ]
    return ready[0]["status"]["podIP"] if ready else None


def test_a_salt_change_rolled_out_keeps_the_alert_quiet(
    cluster: LocalCluster, salt_prometheus: ClusterPrometheus, steady: list[dict[str, Any]]
) -> None:
    prometheus = salt_prometheus
    cluster.wait_for(lambda: scraped_targets(prometheus, steady), WAIT_SECONDS, "targets up")
    cluster.wait_for(lambda: quiet(prometheus), WAIT_SECONDS, f"{ALERT} inactive")
    new_fingerprint = salt_fingerprint_of(NEW_SALT)
    started = time.time()
    try:
        rollout_seconds = roll_salt(cluster, NEW_SALT)
        pods = wait_steady(cluster)
        cluster.wait_for(lambda: scraped_targets(prometheus, pods), WAIT_SECONDS, "new pods up")
        cluster.wait_for(
            lambda: set(fingerprints(prometheus).values()) == {new_fingerprint},
            WAIT_SECONDS,
            "one fingerprint, the new salt's",
        )
        cluster.wait_for(
            lambda: not alert_states(prometheus, test_only=False),
            WAIT_SECONDS,
            f"{ALERT} inactive",
        )
        done = time.time()
        seen = first_seen(prometheus, False, started, done)
        # The overlap was seen (the expression saw two salts), and never for 5 minutes.
        assert set(seen) == {"pending"}, seen
        pending_from, pending_to = seen["pending"]
        assert fingerprints(prometheus) == {
            pod["metadata"]["name"]: new_fingerprint for pod in pods
        }
        for pod in pods:
            (build_info,) = [
                s for s in metric_samples(pod["status"]["podIP"]) if s.name.endswith("build_info")
            ]
            assert build_info.labels["salt_fingerprint"] == new_fingerprint
    finally:
        restore_seconds = roll_salt(cluster, CONTRACT_SALT)
        pods = wait_steady(cluster)
    for pod in pods:
        assert http_get(pod["status"]["podIP"], APP_PORT, CONTRACT_TARGET) == (200, CONTRACT_BODY)
    report(
        f"{ALERT}, salt change (patch Secret + rollout restart, {len(pods)} pods):"
        f" rollout {rollout_seconds:.1f} s; the real alert pending"
        f" {pending_to - pending_from:.1f} s (from {pending_from - started:.1f} s after the"
        f" patch), never firing, inactive {done - started:.1f} s after the patch; every pod then"
        f" exports the new fingerprint {new_fingerprint}; the test salt restored and rolled out"
        f" in {restore_seconds:.1f} s"
    )


def salt_fingerprint_of(salt: str) -> str:
    return salt_fingerprint(SecretStr(salt))
