"""README "Checking a real cluster by hand", run as written on a fresh cluster: the server-side
dry run (which needs the namespace to exist first), admission with zero warnings, a weakened
copy refused or warned by Pod Security admission, the apply, and `kubectl diff` empty after it,
for user_hasher.yaml and for `kubectl apply -k k8s/` alike."""

import json
import re
from pathlib import Path

from proving.local_cluster import LocalCluster
from proving.manifests import MANIFEST, REPO
from tests.cluster.conftest import APP, NAMESPACE, report

README = (REPO / "README.md").read_text()
OBJECTS = 8
# README step 1: only the Namespace carries the Pod Security labels, so this selects it alone.
CREATE_NAMESPACE = [
    "apply",
    "-f",
    "user_hasher.yaml",
    "--selector",
    "pod-security.kubernetes.io/enforce",
]
DRY_RUN = ["apply", "--dry-run=server", "-f", "user_hasher.yaml"]
APPLY = ["apply", "-f", "user_hasher.yaml"]
WAIT_FOR_HPA = ["--namespace", NAMESPACE, "wait", "deployment/user-hasher"]
WAIT_FOR_HPA += ["--for=jsonpath={.spec.replicas}=3", "--timeout=120s"]
ROLLOUT_STATUS = ["--namespace", NAMESPACE, "rollout", "status", "deployment/user-hasher"]
ROLLOUT_STATUS += ["--timeout=300s"]
DIFF = ["diff", "-f", "user_hasher.yaml"]


def in_readme(args: list[str]) -> None:
    """The command is the one README documents (for any context CTX)."""
    command = " ".join(args).replace("{.spec.replicas}=3", "'{.spec.replicas}'=3")
    flat = re.sub(r"\s+", " ", README.replace("\\\n", " "))
    assert f"kubectl --context CTX {command}" in flat, f"README does not document: {command}"


def server_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


def test_a_plain_server_dry_run_fails_on_a_fresh_cluster(cluster: LocalCluster) -> None:
    """Why README creates the namespace first: a dry run creates nothing, so every object
    inside the namespace is refused."""
    assert cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
    result = cluster.kubectl(*DRY_RUN, check=False)
    assert result.returncode != 0
    assert f'namespaces "{NAMESPACE}" not found' in result.stderr


def test_readme_procedure_on_a_fresh_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    for step in (CREATE_NAMESPACE, DRY_RUN, APPLY, WAIT_FOR_HPA, ROLLOUT_STATUS, DIFF):
        in_readme(step)
    created = cluster.kubectl(*CREATE_NAMESPACE)
    assert created.stdout.splitlines() == [f"namespace/{NAMESPACE} created"]

    dry_run = cluster.kubectl(*DRY_RUN)
    lines = dry_run.stdout.splitlines()
    assert len(lines) == OBJECTS
    assert all(line.endswith("(server dry run)") for line in lines), lines
    assert server_warnings(dry_run.stderr) == [], dry_run.stderr
    assert cluster.get_json("all", "--namespace", NAMESPACE)["items"] == [], "a dry run created"

    applied = cluster.kubectl(*APPLY)
    assert len(applied.stdout.splitlines()) == OBJECTS
    assert applied.stderr == "", "apply printed warnings"
    cluster.kubectl(*WAIT_FOR_HPA, timeout=180)
    cluster.kubectl(*ROLLOUT_STATUS, timeout=360)
    diff = cluster.kubectl(*DIFF, check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    report(f"README procedure: {OBJECTS} objects admitted with 0 warnings, kubectl diff empty")


def test_kustomize_applies_the_same_objects(cluster: LocalCluster) -> None:
    """`kubectl apply -k k8s/` and user_hasher.yaml are the same objects, as the API server
    sees them: after the apply above, a diff against k8s/ is empty too."""
    diff = cluster.kubectl("diff", "-k", "k8s/", check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr


def test_pod_security_admission_is_live(cluster: LocalCluster, tmp_path: Path) -> None:
    """A weakened copy is warned about (a Deployment) and refused (a bare Pod): the zero
    warnings above mean something."""
    text = MANIFEST.read_text()
    assert text.count("allowPrivilegeEscalation: false") == 1
    weakened = tmp_path / "weakened.yaml"
    weakened.write_text(
        text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    )
    result = cluster.kubectl("apply", "--dry-run=server", "-f", str(weakened))
    warnings = server_warnings(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert (
        'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
        in (warnings[0])
    )

    template = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)["spec"]["template"]
    template["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "weakened", "namespace": NAMESPACE},
        "spec": template["spec"],
    }
    refused = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert refused.returncode != 0
    assert (
        'pods "weakened" is forbidden: violates PodSecurity "restricted:latest"' in refused.stderr
    )
