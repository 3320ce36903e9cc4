"""The first apply on a fresh cluster, as an operator does it by hand
(scripts/k8s/first_apply.sh, which docs/operating.md shows): the server-side dry run (which
needs the namespace to exist first), admission with zero warnings, the apply, and `kubectl diff`
empty after it; a weakened copy refused or warned by Pod Security admission, and refused by the
script; `kubectl apply -k k8s/dev` gives the same objects.

The by-hand commands live in a script the test runs, rather than in a document the test
parses: what an operator copies is the thing that was run."""

import json
import subprocess
from pathlib import Path

from proving.local_cluster import CONTEXT, LocalCluster
from proving.manifests import MANIFEST, REPO
from tests.cluster.conftest import APP, NAMESPACE, report

FIRST_APPLY = REPO / "scripts" / "k8s" / "first_apply.sh"
OBJECTS = 8
DRY_RUN = ["apply", "--dry-run=server", "-f", "user_hasher.yaml"]
SCRIPT_TIMEOUT_SECONDS = 600


def first_apply(cluster: LocalCluster, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FIRST_APPLY), CONTEXT, str(manifest)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        env=cluster.env(),
    )


def server_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


def weakened_copy(tmp_path: Path) -> Path:
    """user_hasher.yaml with one setting Pod Security `restricted` forbids."""
    text = MANIFEST.read_text()
    assert text.count("allowPrivilegeEscalation: false") == 1
    weakened = tmp_path / "weakened.yaml"
    weakened.write_text(
        text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    )
    return weakened


def test_a_plain_server_dry_run_fails_on_a_fresh_cluster(cluster: LocalCluster) -> None:
    """Why the script creates the namespace first: a dry run creates nothing, so every object
    inside the namespace is refused."""
    assert cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
    result = cluster.kubectl(*DRY_RUN, check=False)
    assert result.returncode != 0
    assert f'namespaces "{NAMESPACE}" not found' in result.stderr


def test_first_apply_on_a_fresh_cluster(cluster: LocalCluster) -> None:
    result = first_apply(cluster, MANIFEST)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"namespace/{NAMESPACE} created", lines
    dry_run = lines[1 : 1 + OBJECTS]
    assert all(line.endswith("(server dry run)") for line in dry_run), lines
    applied = lines[1 + OBJECTS : 1 + 2 * OBJECTS]
    assert len(applied) == OBJECTS, lines
    assert all(line.endswith((" created", " unchanged")) for line in applied), lines
    assert lines[-1].startswith("first_apply: PASS"), lines
    assert server_warnings(result.stderr) == [], result.stderr
    shown = [line for line in result.stderr.splitlines() if line.startswith("+ kubectl")]
    assert len(shown) == 6, result.stderr  # every step is shown to the operator
    diff = cluster.kubectl("diff", "-f", "user_hasher.yaml", check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    report(f"first_apply.sh: {OBJECTS} objects admitted with 0 warnings, kubectl diff empty")


def test_kustomize_applies_the_same_objects(cluster: LocalCluster) -> None:
    """`kubectl apply -k k8s/dev` and user_hasher.yaml are the same objects, as the API server
    sees them: after the apply above, a diff against k8s/dev is empty too."""
    diff = cluster.kubectl("diff", "-k", "k8s/dev/", check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr


def test_pod_security_admission_is_live(cluster: LocalCluster, tmp_path: Path) -> None:
    """A weakened copy is warned about (a Deployment) and refused (a bare Pod): the zero
    warnings above mean something."""
    weakened = weakened_copy(tmp_path)
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


def test_first_apply_refuses_what_admission_warns_about(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The script stops at the dry run's warning, before anything is applied."""
    before = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)["metadata"]
    result = first_apply(cluster, weakened_copy(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "first_apply: FAIL: the API server warned" in result.stderr
    assert len(server_warnings(result.stderr)) == 1, result.stderr
    after = cluster.get_json("deployment", APP, "--namespace", NAMESPACE)["metadata"]
    assert after["generation"] == before["generation"], "the weakened copy was applied"
