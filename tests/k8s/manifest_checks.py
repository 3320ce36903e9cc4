"""Semantic checks of the Kubernetes manifests: what a schema cannot see.

kubernetes-validate checks each object's shape, reports only its first error and
ignores names; these check names, cross-references between objects and the facts
the app and the manifests must agree on. Each check returns a list of problems
(empty: fine), so a test can show that a broken copy of the manifests is caught.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proving.manifests import Doc, app_container, only, pod_spec, secret_values
from user_hasher.settings import Settings

NAMESPACE = "user-hasher"
METRICS_PORT_NAME = "metrics"
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})

# Kubernetes' own name rules (k8s.io/apimachinery/pkg/util/validation).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_LABEL}$")  # at most 63 characters
DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")  # at most 253 characters
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # at most 63 characters
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # at most 15, one letter

# Which rule each kind's metadata.name follows in the API server's validation.
NAME_RULE_BY_KIND = {
    "Namespace": "label",
    "Service": "dns1035",  # a Service name becomes a DNS label and must start with a letter
}
DEFAULT_NAME_RULE = "subdomain"  # Deployment, Secret, ServiceAccount, PDB, HPA, NetworkPolicy, CRs

Check = Callable[[list[Doc], str], list[str]]


def is_valid_name(name: Any, rule: str) -> bool:
    if not isinstance(name, str):
        return False
    if rule == "label":
        return len(name) <= 63 and bool(DNS1123_LABEL.match(name))
    if rule == "dns1035":
        return len(name) <= 63 and bool(DNS1035_LABEL.match(name))
    if rule == "port":
        return (
            len(name) <= 15
            and bool(IANA_SVC_NAME.match(name))
            and "--" not in name
            and any(c.isalpha() for c in name)
        )
    return len(name) <= 253 and bool(DNS1123_SUBDOMAIN.match(name))


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) matches these labels.

    An empty or missing selector is treated as a mistake here, never as "everything".
    """
    if not selector:
        return False
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _pod_labels(docs: list[Doc]) -> dict[str, str]:
    return only(docs, "Deployment")["spec"]["template"]["metadata"].get("labels") or {}


def _container_ports(docs: list[Doc]) -> list[Doc]:
    return app_container(only(docs, "Deployment")).get("ports") or []


def _port_defined(port: Any, container_ports: list[Doc]) -> bool:
    if isinstance(port, str):
        return any(p.get("name") == port for p in container_ports)
    return any(p.get("containerPort") == port for p in container_ports)


def _container_port_number(port: Any, container_ports: list[Doc]) -> int | None:
    for p in container_ports:
        if p.get("name") == port or p.get("containerPort") == port:
            return p.get("containerPort")
    return None


def check_names(docs: list[Doc], version: str) -> list[str]:
    problems = []
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        rule = NAME_RULE_BY_KIND.get(kind, DEFAULT_NAME_RULE)
        if not is_valid_name(name, rule):
            problems.append(f"{kind} name {name!r} is not a valid {rule} name")
    for container in pod_spec(only(docs, "Deployment"))["containers"]:
        if not is_valid_name(container.get("name"), "label"):
            problems.append(f"container name {container.get('name')!r} is not a DNS-1123 label")
        for port in container.get("ports") or []:
            if "name" in port and not is_valid_name(port["name"], "port"):
                problems.append(f"container port name {port['name']!r} is not an IANA_SVC_NAME")
    return problems


def check_namespace(docs: list[Doc], version: str) -> list[str]:
    problems = []
    namespaces = [doc["metadata"]["name"] for doc in docs if doc.get("kind") == "Namespace"]
    if namespaces != [NAMESPACE]:
        problems.append(f"expected one Namespace {NAMESPACE!r}, found {namespaces}")
    for doc in docs:
        if doc.get("kind") in CLUSTER_SCOPED_KINDS:
            continue
        namespace = doc.get("metadata", {}).get("namespace")
        if namespace != NAMESPACE:
            problems.append(f"{doc.get('kind')} {doc['metadata'].get('name')} is in {namespace!r}")
    return problems


def check_selectors(docs: list[Doc], version: str) -> list[str]:
    problems = []
    deployment = only(docs, "Deployment")
    pod_labels = _pod_labels(docs)
    if not selects(deployment["spec"].get("selector"), pod_labels):
        problems.append("Deployment selector does not match its pod template labels")
    service_selector = only(docs, "Service")["spec"].get("selector") or {}
    if not service_selector or not selects({"matchLabels": service_selector}, pod_labels):
        problems.append("Service selector does not select the Deployment's pods")
    if not selects(only(docs, "PodDisruptionBudget")["spec"].get("selector"), pod_labels):
        problems.append("PodDisruptionBudget selector does not select the Deployment's pods")
    if not selects(only(docs, "NetworkPolicy")["spec"].get("podSelector"), pod_labels):
        problems.append("NetworkPolicy podSelector does not select the Deployment's pods")
    target = only(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    wanted = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    if {k: target.get(k) for k in wanted} != wanted:
        problems.append(f"HorizontalPodAutoscaler targets {target}, not {wanted}")
    for constraint in pod_spec(deployment).get("topologySpreadConstraints") or []:
        if not selects(constraint.get("labelSelector"), pod_labels):
            problems.append("a topologySpreadConstraint does not select the Deployment's pods")
    return problems


def check_ports(docs: list[Doc], version: str) -> list[str]:
    problems = []
    container_ports = _container_ports(docs)
    container = app_container(only(docs, "Deployment"))
    for port in only(docs, "Service")["spec"]["ports"]:
        target = port.get("targetPort", port.get("port"))
        if not _port_defined(target, container_ports):
            problems.append(f"Service targetPort {target!r} is not a container port")
    for rule in only(docs, "NetworkPolicy")["spec"].get("ingress") or []:
        for port in rule.get("ports") or []:
            if not _port_defined(port.get("port"), container_ports):
                problems.append(f"NetworkPolicy port {port.get('port')!r} is not a container port")
    listen = {v["name"]: v.get("value") for v in container.get("env", [])}.get("PORT")
    listen_port = int(listen) if listen is not None else Settings.model_fields["PORT"].default
    if not any(p.get("containerPort") == listen_port for p in container_ports):
        problems.append(f"the app listens on {listen_port}, which is no container port")
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_name)
        if probe is None:
            continue
        port = probe.get("httpGet", {}).get("port")
        if _container_port_number(port, container_ports) != listen_port:
            problems.append(f"{probe_name} port {port!r} is not the port the app listens on")
    return problems


def _metrics_listen_port(docs: list[Doc]) -> int:
    """Where the app serves /metrics: the Deployment's METRICS_PORT, else the app's default."""
    container = app_container(only(docs, "Deployment"))
    listen = {v["name"]: v.get("value") for v in container.get("env", [])}.get("METRICS_PORT")
    return int(listen) if listen is not None else Settings.model_fields["METRICS_PORT"].default


def check_metrics_port(docs: list[Doc], version: str) -> list[str]:
    """/metrics is on a container port of its own, named `metrics`, which the scrape
    annotation names, the Service does not carry, and the NetworkPolicy admits only from
    selected namespaces, while the `http` port stays open to every namespace."""
    problems = []
    container_ports = _container_ports(docs)
    metrics_port = _metrics_listen_port(docs)
    if _container_port_number(METRICS_PORT_NAME, container_ports) != metrics_port:
        problems.append(
            f"the app serves /metrics on {metrics_port}, which is not the container port"
            f" named {METRICS_PORT_NAME!r}"
        )
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(metrics_port):
        problems.append(f"prometheus.io/port is not {metrics_port}, where /metrics is served")
    for port in only(docs, "Service")["spec"]["ports"]:
        target = port.get("targetPort", port.get("port"))
        if _container_port_number(target, container_ports) == metrics_port:
            problems.append(f"Service port {port.get('name')!r} exposes the metrics port")
    open_to_all, open_to_selected = set(), set()
    for rule in only(docs, "NetworkPolicy")["spec"].get("ingress") or []:
        numbers = {
            _container_port_number(port.get("port"), container_ports)
            for port in rule.get("ports") or []
        }
        if not rule.get("ports"):
            problems.append("a NetworkPolicy ingress rule admits every port")
        sources = rule.get("from") or []
        if not sources:
            open_to_all |= numbers
        elif all(_only_selected_namespaces(source) for source in sources):
            open_to_selected |= numbers
        else:
            problems.append("a NetworkPolicy ingress rule admits sources other than namespaces")
    listen_port = _container_port_number("http", container_ports)
    if listen_port not in open_to_all:
        problems.append("the NetworkPolicy does not admit the http port from every namespace")
    if metrics_port in open_to_all:
        problems.append("the NetworkPolicy admits the metrics port from every namespace")
    elif metrics_port not in open_to_selected:
        problems.append("the NetworkPolicy admits the metrics port from no namespace")
    return problems


def _only_selected_namespaces(source: Doc) -> bool:
    """A `from` entry that selects namespaces by label and nothing else. An empty selector
    would select every namespace."""
    selector = source.get("namespaceSelector")
    return set(source) == {"namespaceSelector"} and bool(
        selector and (selector.get("matchLabels") or selector.get("matchExpressions"))
    )


def check_references(docs: list[Doc], version: str) -> list[str]:
    """secretKeyRef and serviceAccountName point at objects defined in the manifests."""
    problems = []
    secrets = {
        doc["metadata"]["name"]: secret_values(doc) for doc in docs if doc.get("kind") == "Secret"
    }
    spec = pod_spec(only(docs, "Deployment"))
    for container in spec["containers"]:
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                continue
            if ref.get("name") not in secrets:
                problems.append(f"env {var['name']}: no Secret named {ref.get('name')!r}")
            elif ref.get("key") not in secrets[ref["name"]]:
                problems.append(
                    f"env {var['name']}: Secret {ref['name']} has no key {ref.get('key')!r}"
                )
    accounts = {doc["metadata"]["name"] for doc in docs if doc.get("kind") == "ServiceAccount"}
    if spec.get("serviceAccountName") not in accounts:
        problems.append(f"serviceAccountName {spec.get('serviceAccountName')!r} is not defined")
    return problems


def check_shutdown_budget(docs: list[Doc], version: str) -> list[str]:
    """The pod may take drain + graceful timeout after SIGTERM before the kubelet kills it."""
    spec = pod_spec(only(docs, "Deployment"))
    env = {
        v["name"]: v.get("value") for v in app_container(only(docs, "Deployment")).get("env", [])
    }

    def seconds(name: str) -> float:
        value = env.get(name)
        return float(value) if value is not None else Settings.model_fields[name].default

    needed = seconds("DRAIN_SECONDS") + seconds("GRACEFUL_TIMEOUT_SECONDS")
    grace = spec.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    if not grace > needed:
        return [f"terminationGracePeriodSeconds {grace} is not above drain + graceful = {needed}"]
    return []


def check_version(docs: list[Doc], version: str) -> list[str]:
    """Images are tagged with the package version (never latest), and no label states a
    version: rollouts and `rollout undo` change the image, and a label would go stale."""
    problems = []
    deployment = only(docs, "Deployment")
    spec = pod_spec(deployment)
    for container in spec["containers"] + (spec.get("initContainers") or []):
        image = container.get("image", "")
        # registry:5000/name:tag@sha256:... -> tag (a registry port is not a tag)
        tag = image.split("@")[0].split("/")[-1].partition(":")[2]
        if tag in ("", "latest"):
            problems.append(f"image {image!r} has no tag or the tag latest")
        elif tag != version:
            problems.append(f"image {image!r} is not tagged with the package version {version}")
    for where, labels in (
        ("Deployment", deployment["metadata"].get("labels") or {}),
        ("pod template", deployment["spec"]["template"]["metadata"].get("labels") or {}),
    ):
        if "app.kubernetes.io/version" in labels:
            problems.append(f"{where} label app.kubernetes.io/version goes stale on a rollout")
    return problems


def check_no_latest(docs: list[Doc], version: str) -> list[str]:
    """No `:latest` anywhere in any string of any object."""

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        if isinstance(node, list):
            return [s for value in node for s in strings(value)]
        return [node] if isinstance(node, str) else []

    return [f"{s!r} uses latest" for doc in docs for s in strings(doc) if s.endswith(":latest")]


def check_availability(docs: list[Doc], version: str) -> list[str]:
    """Rolling updates and node drains can proceed without dropping serving capacity."""
    problems = []
    spec = only(docs, "Deployment")["spec"]
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    if (
        spec.get("strategy", {}).get("type") != "RollingUpdate"
        or rolling.get("maxUnavailable") != 0
    ):
        problems.append("the Deployment must roll with maxUnavailable: 0")
    if "readinessProbe" not in app_container(only(docs, "Deployment")):
        problems.append("without a readinessProbe a rollout sends traffic to pods not yet serving")
    pdb = only(docs, "PodDisruptionBudget")["spec"]
    if pdb.get("maxUnavailable") != 1 or "minAvailable" in pdb:
        # minAvailable is a fixed count: as the HPA adds pods it allows ever more evictions.
        problems.append("the PDB must allow one eviction at a time (maxUnavailable: 1)")
    if "replicas" in spec:
        problems.append("the Deployment sets replicas: every apply would reset the HPA's count")
    return problems


def check_pod_monitor(docs: list[Doc], monitoring: list[Doc]) -> list[str]:
    """The PodMonitor selects the Deployment's pods, scrapes their `metrics` port and names
    the job as the plain scrape config does (`user-hasher`: the alerts select on it)."""
    problems = []
    deployment = only(docs, "Deployment")
    monitor = only(monitoring, "PodMonitor")
    if monitor["metadata"].get("namespace") != deployment["metadata"]["namespace"]:
        problems.append("the PodMonitor is not in the Deployment's namespace")
    pod_labels = _pod_labels(docs)
    if not selects(monitor["spec"].get("selector"), pod_labels):
        problems.append("the PodMonitor selector does not select the Deployment's pods")
    job_label = monitor["spec"].get("jobLabel")
    if pod_labels.get(job_label) != deployment["metadata"]["name"]:
        problems.append(f"the PodMonitor's jobLabel {job_label!r} does not make job user-hasher")
    endpoints = monitor["spec"].get("podMetricsEndpoints") or []
    if not endpoints:
        problems.append("the PodMonitor scrapes no port")
    for endpoint in endpoints:
        if endpoint.get("port") != METRICS_PORT_NAME:
            problems.append(
                f"PodMonitor endpoint port {endpoint.get('port')!r} is not the metrics port"
            )
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"PodMonitor endpoint path {endpoint.get('path')!r} is not /metrics")
    return problems


CHECKS: tuple[Check, ...] = (
    check_names,
    check_namespace,
    check_selectors,
    check_ports,
    check_metrics_port,
    check_references,
    check_shutdown_budget,
    check_version,
    check_no_latest,
    check_availability,
)


def all_problems(docs: list[Doc], version: str) -> list[str]:
    return [problem for check in CHECKS for problem in check(docs, version)]
