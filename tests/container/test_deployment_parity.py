"""The image run the way the Deployment runs it, and the smoke test passing against it.

The docker flags are derived from the parsed manifest (user_hasher.yaml), not written out
again, so a change to the Deployment's securityContext, limits or env changes this run too:
  runAsUser/runAsGroup         -> --user UID:GID (runAsNonRoot: UID must not be 0)
  readOnlyRootFilesystem       -> --read-only
  capabilities drop/add        -> --cap-drop / --cap-add
  allowPrivilegeEscalation     -> --security-opt no-new-privileges
  seccompProfile RuntimeDefault -> Docker's default seccomp profile (on unless disabled)
  resources.limits             -> --memory / --cpus
  env (value, secretKeyRef, fieldRef) -> --env, the salt from the Secret's stringData
Then the kernel's view of PID 1 is read from /proc, and scripts/smoke.sh runs against it.
"""

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from proving.docker import Container
from proving.manifests import (
    MANIFEST,
    REPO,
    Doc,
    app_container,
    load_documents,
    only,
    pod_spec,
    resolve_env,
)

SMOKE = REPO / "scripts/smoke.sh"
# What the kubelet would put in the downward-API variables: the container shares the
# host's network here, so both are loopback.
FIELD_VALUES = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
SMOKE_TIMEOUT_SECONDS = 60
# Kubernetes quantity suffixes docker understands as-is, after dropping the `i`.
MEMORY_SUFFIXES = {"Ki": "k", "Mi": "m", "Gi": "g"}

pytestmark = pytest.mark.docker


def docker_memory(quantity: str) -> str:
    for suffix, docker_suffix in MEMORY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return quantity.removesuffix(suffix) + docker_suffix
    raise AssertionError(f"memory limit {quantity!r}: use Ki, Mi or Gi")


def docker_cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def docker_run_args(deployment: Doc) -> list[str]:
    """The Deployment's pod and container security settings and limits as docker flags."""
    pod_context = pod_spec(deployment).get("securityContext") or {}
    container = app_container(deployment)
    # Container-level settings override pod-level ones, as in Kubernetes.
    context = {**pod_context, **(container.get("securityContext") or {})}

    uid, gid = context["runAsUser"], context["runAsGroup"]
    if context.get("runAsNonRoot"):
        assert uid != 0, "runAsNonRoot with runAsUser 0 would never start"
    args = ["--user", f"{uid}:{gid}"]
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    capabilities = context.get("capabilities") or {}
    args += [arg for cap in capabilities.get("drop", []) for arg in ("--cap-drop", cap)]
    args += [arg for cap in capabilities.get("add", []) for arg in ("--cap-add", cap)]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = (context.get("seccompProfile") or {}).get("type")
    assert seccomp == "RuntimeDefault", "Docker's default seccomp profile is RuntimeDefault"
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", docker_memory(limits["memory"])]
    if "cpu" in limits:
        args += ["--cpus", docker_cpus(str(limits["cpu"]))]
    return args


@pytest.fixture
def deployment_docs() -> list[Doc]:
    return load_documents(MANIFEST)


@pytest.fixture
def deployment_container(
    deployment_docs: list[Doc], start_container: Callable[..., Container]
) -> Container:
    env = resolve_env(deployment_docs, FIELD_VALUES)
    # docker_support runs every container on a free loopback port (host network); the app's
    # default PORT and METRICS_PORT are the container ports in the cluster
    # (tests/k8s/test_semantics.py checks).
    assert not {"PORT", "METRICS_PORT"} & set(env)
    deployment = only(deployment_docs, "Deployment")
    return start_container(*docker_run_args(deployment), **env)


def proc_status(container: Container) -> dict[str, str]:
    lines = Path(f"/proc/{container.host_pid()}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_flags_follow_the_manifest(deployment_docs: list[Doc]) -> None:
    args = docker_run_args(only(deployment_docs, "Deployment"))
    assert args == [
        "--user",
        "10001:10001",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "256m",
        "--cpus",
        "1",
    ]


def test_the_container_runs_as_the_deployment_says(deployment_container: Container) -> None:
    host_config = deployment_container.inspect()["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]

    status = proc_status(deployment_container)
    assert status["Uid"].split()[:2] == ["10001", "10001"]  # real, effective
    assert status["Gid"].split()[:2] == ["10001", "10001"]
    assert int(status["CapEff"], 16) == 0, "no capability left"
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2", "a seccomp filter is active (RuntimeDefault)"


def test_smoke_passes_against_the_container(deployment_container: Container) -> None:
    result = subprocess.run(
        [
            str(SMOKE),
            f"http://127.0.0.1:{deployment_container.port}",
            f"http://127.0.0.1:{deployment_container.metrics_port}",
        ],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: PASS" in result.stdout


def test_probe_paths_answer_in_the_container(
    deployment_docs: list[Doc], deployment_container: Container
) -> None:
    container = app_container(only(deployment_docs, "Deployment"))
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe_name]["httpGet"]["path"]
        assert deployment_container.get(path)[0] == 200, f"{probe_name} {path}"


def test_sigterm_exits_cleanly_inside_the_grace_period(
    deployment_docs: list[Doc], deployment_container: Container
) -> None:
    grace = pod_spec(only(deployment_docs, "Deployment"))["terminationGracePeriodSeconds"]
    # `docker stop -t grace` is the kubelet's SIGTERM, then SIGKILL after the grace period.
    seconds = deployment_container.stop(grace)
    assert deployment_container.inspect()["State"]["ExitCode"] == 0, "killed, not drained"
    assert seconds < grace
