"""The semantic checks pass on the real manifests and catch each kind of break."""

from collections.abc import Callable

import pytest

from proving.manifests import (
    Doc,
    app_container,
    cpu_millicores,
    only,
    pod_spec,
    resolve_env,
    resource_field,
)
from tests.k8s.manifest_checks import (
    CHECKS,
    all_problems,
    check_pod_monitor,
    is_valid_name,
    selects,
)
from user_hasher.settings import Settings


def test_the_manifests_pass_every_check(manifest_docs: list[Doc], version: str) -> None:
    assert all_problems(manifest_docs, version) == []
    assert len(CHECKS) == 10


def test_the_pod_monitor_scrapes_the_metrics_port_of_the_pods(
    manifest_docs: list[Doc], monitoring_docs: list[Doc]
) -> None:
    assert check_pod_monitor(manifest_docs, monitoring_docs) == []


def _pod_monitor(docs: list[Doc]) -> Doc:
    return only(docs, "PodMonitor")["spec"]


POD_MONITOR_MUTATIONS: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "the service port": (
        lambda docs: _pod_monitor(docs)["podMetricsEndpoints"][0].update(port="http"),
        "PodMonitor endpoint port 'http' is not the metrics port",
    ),
    "another path": (
        lambda docs: _pod_monitor(docs)["podMetricsEndpoints"][0].update(path="/stats"),
        "PodMonitor endpoint path '/stats' is not /metrics",
    ),
    "no endpoint": (
        lambda docs: _pod_monitor(docs).update(podMetricsEndpoints=[]),
        "the PodMonitor scrapes no port",
    ),
    "other pods": (
        lambda docs: _pod_monitor(docs)["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "other"}
        ),
        "the PodMonitor selector does not select the Deployment's pods",
    ),
    "job from another label": (
        lambda docs: _pod_monitor(docs).update(jobLabel="app.kubernetes.io/component"),
        "the PodMonitor's jobLabel 'app.kubernetes.io/component' does not make job user-hasher",
    ),
    "another namespace": (
        lambda docs: only(docs, "PodMonitor")["metadata"].update(namespace="monitoring"),
        "the PodMonitor is not in the Deployment's namespace",
    ),
}


@pytest.mark.parametrize("name", POD_MONITOR_MUTATIONS)
def test_a_broken_pod_monitor_is_caught(
    manifest_docs: list[Doc], monitoring_docs: list[Doc], name: str
) -> None:
    mutate, expected = POD_MONITOR_MUTATIONS[name]
    mutate(monitoring_docs)
    assert check_pod_monitor(manifest_docs, monitoring_docs) == [expected]


def _deployment(docs: list[Doc]) -> Doc:
    return only(docs, "Deployment")


def _env(docs: list[Doc], name: str) -> Doc:
    return next(v for v in app_container(_deployment(docs))["env"] if v["name"] == name)


def _set_service_selector(docs: list[Doc]) -> None:
    only(docs, "Service")["spec"]["selector"]["app.kubernetes.io/name"] = "user-hasher-v2"


def _set_pdb_selector(docs: list[Doc]) -> None:
    only(docs, "PodDisruptionBudget")["spec"]["selector"] = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["user-hasher"]}
        ]
    }


def _set_deployment_selector(docs: list[Doc]) -> None:
    _deployment(docs)["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "blue"


def _drop_network_policy_selector(docs: list[Doc]) -> None:
    only(docs, "NetworkPolicy")["spec"]["podSelector"] = {}


def _retarget_hpa(docs: list[Doc]) -> None:
    only(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "user-hasher-old"


def _rename_container_port(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["ports"][0]["name"] = "web"


def _number_the_target_port(docs: list[Doc]) -> None:
    only(docs, "Service")["spec"]["ports"][0]["targetPort"] = 8080


def _listen_elsewhere(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["env"].append({"name": "PORT", "value": "9000"})


def _rename_secret(docs: list[Doc]) -> None:
    only(docs, "Secret")["metadata"]["name"] = "user-salt-v2"


def _drop_secret_key(docs: list[Doc]) -> None:
    only(docs, "Secret")["stringData"] = {"USER_SALT": "TESTSALT"}


def _underscore_namespace(docs: list[Doc]) -> None:
    for doc in docs:
        key = "name" if doc["kind"] == "Namespace" else "namespace"
        doc["metadata"][key] = "user_hasher"


def _underscore_secret(docs: list[Doc]) -> None:
    only(docs, "Secret")["metadata"]["name"] = "user_salt"
    _env(docs, "USER_SALT")["valueFrom"]["secretKeyRef"]["name"] = "user_salt"


def _service_name_starting_with_a_digit(docs: list[Doc]) -> None:
    only(docs, "Service")["metadata"]["name"] = "1-user-hasher"


def _long_port_name(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["ports"][0]["name"] = "http-for-clients"


def _default_namespace(docs: list[Doc]) -> None:
    only(docs, "HorizontalPodAutoscaler")["metadata"].pop("namespace")


def _short_grace_period(docs: list[Doc]) -> None:
    pod_spec(_deployment(docs))["terminationGracePeriodSeconds"] = 15


def _longer_drain(docs: list[Doc]) -> None:
    _env(docs, "DRAIN_SECONDS")["value"] = "25"


def _latest_image(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["image"] = "user-hasher:latest"


def _untagged_image(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["image"] = "registry.local:5000/user-hasher"


def _old_image(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["image"] = "user-hasher:0.0.9"


def _version_label(docs: list[Doc]) -> None:
    _deployment(docs)["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = "0"


def _latest_in_an_annotation(docs: list[Doc]) -> None:
    only(docs, "Service")["metadata"]["annotations"] = {"built-from": "user-hasher:latest"}


def _allow_unavailable(docs: list[Doc]) -> None:
    _deployment(docs)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1


def _pdb_min_available(docs: list[Doc]) -> None:
    spec = only(docs, "PodDisruptionBudget")["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = 2


def _replicas_in_the_deployment(docs: list[Doc]) -> None:
    _deployment(docs)["spec"]["replicas"] = 3


def _probe_on_another_port(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["readinessProbe"]["httpGet"]["port"] = 8001


def _metrics_port(docs: list[Doc]) -> Doc:
    return next(p for p in app_container(_deployment(docs))["ports"] if p["name"] == "metrics")


def _metrics_port_renumbered(docs: list[Doc]) -> None:
    _metrics_port(docs)["containerPort"] = 9100


def _metrics_elsewhere(docs: list[Doc]) -> None:
    app_container(_deployment(docs))["env"].append({"name": "METRICS_PORT", "value": "9100"})


def _scrape_annotation_on_the_service_port(docs: list[Doc]) -> None:
    annotations = _deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    annotations["prometheus.io/port"] = "8000"


def _metrics_on_the_service(docs: list[Doc]) -> None:
    only(docs, "Service")["spec"]["ports"].append(
        {"name": "metrics", "port": 9797, "targetPort": "metrics"}
    )


def _policy_rules(docs: list[Doc]) -> list[Doc]:
    return only(docs, "NetworkPolicy")["spec"]["ingress"]


def _metrics_open_to_all(docs: list[Doc]) -> None:
    del _policy_rules(docs)[1]["from"]


def _metrics_from_every_namespace(docs: list[Doc]) -> None:
    _policy_rules(docs)[1]["from"] = [{"namespaceSelector": {}}]


def _metrics_from_pods_of_any_namespace(docs: list[Doc]) -> None:
    _policy_rules(docs)[1]["from"].append({"podSelector": {"matchLabels": {"app": "x"}}})


def _metrics_closed(docs: list[Doc]) -> None:
    del _policy_rules(docs)[1]


def _every_port_from_monitoring(docs: list[Doc]) -> None:
    del _policy_rules(docs)[1]["ports"]


def _http_from_monitoring_only(docs: list[Doc]) -> None:
    _policy_rules(docs)[0]["from"] = _policy_rules(docs)[1]["from"]


def _unknown_service_account(docs: list[Doc]) -> None:
    pod_spec(_deployment(docs))["serviceAccountName"] = "default-sa"


MUTATIONS: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "service selector": (_set_service_selector, "Service selector does not select"),
    "pdb selector": (_set_pdb_selector, "PodDisruptionBudget selector does not select"),
    "deployment selector": (_set_deployment_selector, "Deployment selector does not match"),
    "networkpolicy selector": (_drop_network_policy_selector, "NetworkPolicy podSelector"),
    "hpa target": (_retarget_hpa, "HorizontalPodAutoscaler targets"),
    "container port renamed": (_rename_container_port, "Service targetPort 'http' is not"),
    "target port number": (_number_the_target_port, "Service targetPort 8080 is not"),
    "app port": (_listen_elsewhere, "the app listens on 9000"),
    "secret renamed": (_rename_secret, "no Secret named 'user-salt'"),
    "secret key": (_drop_secret_key, "Secret user-salt has no key 'salt'"),
    "namespace with _": (
        _underscore_namespace,
        "Namespace name 'user_hasher' is not a valid label",
    ),
    "secret with _": (_underscore_secret, "Secret name 'user_salt' is not a valid subdomain"),
    "service name": (_service_name_starting_with_a_digit, "not a valid dns1035 name"),
    "port name": (_long_port_name, "is not an IANA_SVC_NAME"),
    "namespace missing": (_default_namespace, "HorizontalPodAutoscaler user-hasher is in None"),
    "grace period": (_short_grace_period, "terminationGracePeriodSeconds 15 is not above"),
    "drain": (_longer_drain, "terminationGracePeriodSeconds 30 is not above drain + graceful = 35"),
    "latest tag": (_latest_image, "has no tag or the tag latest"),
    "no tag": (_untagged_image, "has no tag or the tag latest"),
    "old tag": (_old_image, "is not tagged with the package version"),
    "version label": (_version_label, "pod template label app.kubernetes.io/version goes stale"),
    "latest anywhere": (_latest_in_an_annotation, "'user-hasher:latest' uses latest"),
    "max unavailable": (_allow_unavailable, "maxUnavailable: 0"),
    "pdb": (_pdb_min_available, "one eviction at a time (maxUnavailable: 1)"),
    "replicas": (_replicas_in_the_deployment, "would reset the HPA's count"),
    "probe port": (_probe_on_another_port, "readinessProbe port 8001"),
    "service account": (_unknown_service_account, "serviceAccountName 'default-sa'"),
    "metrics port number": (_metrics_port_renumbered, "serves /metrics on 9797, which is not"),
    "metrics listen port": (_metrics_elsewhere, "serves /metrics on 9100, which is not"),
    "scrape annotation": (_scrape_annotation_on_the_service_port, "prometheus.io/port is not"),
    "metrics on the Service": (_metrics_on_the_service, "'metrics' exposes the metrics port"),
    "metrics open to all": (_metrics_open_to_all, "admits the metrics port from every namespace"),
    "metrics from all namespaces": (_metrics_from_every_namespace, "sources other than namespaces"),
    "metrics from pods anywhere": (
        _metrics_from_pods_of_any_namespace,
        "sources other than namespaces",
    ),
    "metrics closed": (_metrics_closed, "admits the metrics port from no namespace"),
    "every port": (_every_port_from_monitoring, "a NetworkPolicy ingress rule admits every port"),
    "http fenced": (_http_from_monitoring_only, "not admit the http port from every namespace"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_a_broken_copy_is_caught(manifest_docs: list[Doc], version: str, name: str) -> None:
    mutate, expected = MUTATIONS[name]
    mutate(manifest_docs)
    problems = all_problems(manifest_docs, version)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("name", "rule", "valid"),
    [
        ("user-hasher", "label", True),
        ("user_hasher", "label", False),
        ("User-hasher", "label", False),
        ("-user-hasher", "label", False),
        ("a" * 63, "label", True),
        ("a" * 64, "label", False),
        ("user-salt.v1", "subdomain", True),
        ("user_salt", "subdomain", False),
        ("user-salt.", "subdomain", False),
        ("9-hasher", "dns1035", False),
        ("hasher-9", "dns1035", True),
        ("http", "port", True),
        ("8000", "port", False),
        ("h--ttp", "port", False),
        ("a" * 16, "port", False),
    ],
)
def test_name_rules(name: str, rule: str, valid: bool) -> None:
    assert is_valid_name(name, rule) is valid


def test_selectors() -> None:
    labels = {"app": "a", "tier": "api"}
    assert selects({"matchLabels": {"app": "a"}}, labels)
    assert not selects({"matchLabels": {"app": "b"}}, labels)
    assert selects(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]}, labels
    )
    assert not selects({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not selects({}, labels), "an empty selector is refused, not taken as 'everything'"


def test_admission_control_bounds_a_pod_by_its_own_cpu_limit(manifest_docs: list[Doc]) -> None:
    """The Deployment hands the container its CPU limit (downward API, in millicores), and
    the bound on requests served at once follows it (docs/capacity.md#overload)."""
    deployment = only(manifest_docs, "Deployment")
    env = resolve_env(manifest_docs, {"status.podIP": "10.0.0.1", "status.hostIP": "10.0.0.2"})
    limit = app_container(deployment)["resources"]["limits"]["cpu"]
    assert env["CPU_LIMIT_MILLICORES"] == str(cpu_millicores(limit))
    assert "MAX_IN_FLIGHT" not in env  # derived, not written down a second time
    settings = Settings(**env)  # type: ignore[arg-type]
    assert settings.in_flight_bound == round(48 * min(cpu_millicores(limit), 1000) / 1000)
    # The lowered limits the live overload test gives its pods.
    for cpu, millicores in (("250m", "250"), ("0.2", "200"), ("2", "2000")):
        container = {"resources": {"limits": {"cpu": cpu}}}
        assert resource_field(container, {"resource": "limits.cpu", "divisor": "1m"}) == millicores
    assert (
        resource_field({"resources": {"limits": {"cpu": "250m"}}}, {"resource": "limits.cpu"})
        == "1"
    )
