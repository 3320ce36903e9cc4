"""The minikube side of the Makefile, as far as it can be exercised without a cluster (the
live cluster runs the targets for real, with only the operator's tools on PATH:
tests/cluster/test_operator_path.py): its names agree with the manifests, minikube is called
only from scripts/k8s/minikube_steps.sh, that script does what it says, the deploy path runs
no make and no Python, build_and_run.sh needs only docker and bash, and `make smoke`'s
port-forward wrapper finds the forwarded port, runs the smoke test through it and always
stops the forward.

There is no minikube here, so `minikube` and `kubectl` are stand-ins on PATH: one records
its calls, the other does what `kubectl port-forward` does (listens on a free port, prints
kubectl's line, proxies)."""

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_TARGET
from proving.manifests import REPO, Doc, only
from proving.minikube_stand_in import operator_path
from proving.service import answers_ready, free_port, http_get
from proving.waiting import wait_until
from tests.support.needs import require_docker_engine, require_tool

PORT_FORWARD_SMOKE = REPO / "scripts/k8s/port_forward_smoke.sh"
MINIKUBE_STEPS = REPO / "scripts/k8s/minikube_steps.sh"


def make_variable(name: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_makefile_names_match_the_manifests(manifest_docs: list[Doc]) -> None:
    assert make_variable("K8S_NAMESPACE") == only(manifest_docs, "Namespace")["metadata"]["name"]
    assert make_variable("K8S_APP") == only(manifest_docs, "Deployment")["metadata"]["name"]
    assert make_variable("K8S_APP") == only(manifest_docs, "Service")["metadata"]["name"]
    assert make_variable("MANIFEST") == "user_hasher.yaml"
    assert make_variable("KUBECTL") == "kubectl --context minikube"


FAKE_KUBECTL = textwrap.dedent(
    """\
    #!{python}
    # Stand-in for `kubectl port-forward`: records its pid and arguments (a line each), then
    # forwards a free local port to $TARGET_PORT (`:http`) or $METRICS_TARGET_PORT
    # (`:metrics`) like kubectl would.
    import os, socket, sys, threading
    with open(os.environ["RECORD"], "a") as record:
        record.write(f"{{os.getpid()}}\\n{{' '.join(sys.argv[1:])}}\\n")
    if os.environ.get("FAIL") == sys.argv[-1]:
        print('error: services "user-hasher" not found', file=sys.stderr)
        sys.exit(1)
    target = os.environ["TARGET_PORT" if sys.argv[-1] == ":http" else "METRICS_TARGET_PORT"]
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"Forwarding from 127.0.0.1:{{listener.getsockname()[1]}} -> 8000", flush=True)

    def pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", int(target)))
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    """
)


def run_port_forward_smoke(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    return subprocess.run(
        [str(PORT_FORWARD_SMOKE), "minikube", "user-hasher", "user-hasher"],
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RECORD": str(tmp_path / "kubectl-record"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=90,
    )


def forwarder_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_make_smoke_forwards_runs_the_smoke_test_and_stops(start_service, tmp_path: Path) -> None:
    service = start_service(USER_SALT="TESTSALT", POD_IP="10.244.0.7", NODE_IP="192.168.49.2")
    result = run_port_forward_smoke(
        tmp_path, TARGET_PORT=str(service.port), METRICS_TARGET_PORT=str(service.metrics_port)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: PASS http://127.0.0.1:" in result.stdout
    assert "smoke: ok: /metrics is not served on the service port" in result.stdout

    service_pid, service_args, metrics_pid, metrics_args = (
        (tmp_path / "kubectl-record").read_text().splitlines()
    )
    forward = "--context minikube --namespace user-hasher port-forward --address 127.0.0.1 "
    assert service_args == forward + "service/user-hasher :http"
    assert metrics_args == forward + "deployment/user-hasher :metrics"
    for pid in (int(service_pid), int(metrics_pid)):
        assert wait_until(lambda pid=pid: forwarder_gone(pid), timeout=10), "a forward left running"


@pytest.mark.parametrize("failing", [":http", ":metrics"])
def test_make_smoke_fails_when_a_forward_fails_and_stops_the_other(
    tmp_path: Path, failing: str
) -> None:
    result = run_port_forward_smoke(
        tmp_path, FAIL=failing, TARGET_PORT=str(free_port()), METRICS_TARGET_PORT="1"
    )
    assert result.returncode == 1
    assert 'services "user-hasher" not found' in result.stderr
    assert "smoke: PASS" not in result.stdout
    pids = (tmp_path / "kubectl-record").read_text().splitlines()[::2]
    assert len(pids) == (1 if failing == ":http" else 2)
    for pid in map(int, pids):
        assert wait_until(lambda pid=pid: forwarder_gone(pid), timeout=10), "a forward left running"


FAKE_MINIKUBE = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    # Stand-in for the minikube CLI: records each call; `status` says it is stopped.
    echo "$*" >>"$RECORD"
    case $* in
      *status*) exit 7 ;;
    esac
    """
)


def run_minikube_steps(tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    minikube = bin_dir / "minikube"
    minikube.write_text(FAKE_MINIKUBE)
    minikube.chmod(0o755)
    return subprocess.run(
        [str(MINIKUBE_STEPS), command],
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RECORD": str(tmp_path / "minikube-record"),
            "MINIKUBE_PROFILE": "demo",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )


def dry_run(*targets: str) -> str:
    result = subprocess.run(
        # --no-print-directory: under a parent make (make check) it would print where it runs.
        ["make", "--no-print-directory", "-n", *targets, "MINIKUBE=stand-in"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_minikube_steps_are_the_only_minikube_calls() -> None:
    """The deploy targets reach minikube only through scripts/k8s/minikube_steps.sh, with
    the command MINIKUBE names (the cluster tests put a stand-in there); every other step
    is kubectl."""
    assert make_variable("MINIKUBE") == "minikube"
    commands = dry_run("minikube-deploy", "rollout")
    assert 'MINIKUBE="stand-in" scripts/k8s/minikube_steps.sh start' in commands
    assert 'MINIKUBE="stand-in" scripts/k8s/minikube_steps.sh build-image' in commands
    assert not re.search(r"\bminikube (-p|status|start|image|docker-env)", commands)


def command_lines(script: Path) -> list[str]:
    return [
        line
        for line in script.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_deploy_path_runs_no_make_and_no_python() -> None:
    """What an operator runs needs docker, minikube, kubectl, bash and coreutils only: no
    recipe of the deploy targets calls make again or the venv, and no script they run (or
    build_and_run.sh) calls make or Python. tests/cluster/test_operator_path.py runs them
    with nothing else on PATH."""
    commands = dry_run("minikube-deploy", "rollout", "smoke", "undeploy")
    assert not re.search(r"\b(make|python3?)\b|\.venv", commands), commands
    scripts = [
        *sorted((REPO / "scripts/k8s").glob("*.sh")),
        REPO / "scripts/docker/build-image.sh",
        REPO / "scripts/smoke.sh",
        REPO / "build_and_run.sh",
    ]
    for script in scripts:
        for line in command_lines(script):
            assert not re.search(r"(^|[;&|]\s*|\$\(\s*)(make|python3?)\b", line.strip()), (
                f"{script.name}: {line.strip()}"
            )


def test_minikube_steps_start_starts_a_stopped_profile(tmp_path: Path) -> None:
    result = run_minikube_steps(tmp_path, "start")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "minikube-record").read_text().splitlines() == [
        "-p demo status",
        "-p demo start",
    ]


@pytest.mark.docker
def test_minikube_steps_build_image_loads_it_and_prints_only_its_reference(
    tmp_path: Path,
) -> None:
    require_docker_engine()
    result = run_minikube_steps(tmp_path, "build-image")
    assert result.returncode == 0, result.stdout + result.stderr
    ref = result.stdout.strip()
    assert re.fullmatch(r"user-hasher:\d+\.\d+\.\d+-[0-9a-f]{12}\n", result.stdout)
    assert (tmp_path / "minikube-record").read_text().splitlines() == [f"-p demo image load {ref}"]
    assert f"image: built {ref}" in result.stderr


def test_make_and_the_build_script_name_the_same_local_base() -> None:
    script = (REPO / "scripts/docker/build-image.sh").read_text()
    assert f"LOCAL_BASE_IMAGE:-{make_variable('LOCAL_BASE_IMAGE')}}}" in script


@pytest.mark.docker
@pytest.mark.slow
def test_build_and_run_needs_only_docker_and_bash(tmp_path: Path) -> None:
    """build_and_run.sh with an operator's PATH minus make (and no Python on it): it builds,
    serves the contract on 127.0.0.1:PORT, and stops on SIGTERM."""
    require_tool("docker", "Debian package docker.io")
    path = operator_path(tmp_path / "bin")
    for tool in ("make", "kubectl", "minikube"):
        (tmp_path / "bin" / tool).unlink()
    port = free_port()
    env = {**os.environ, "PATH": path, "PORT": str(port), "USER_SALT": "TESTSALT"}
    with subprocess.Popen(
        [str(REPO / "build_and_run.sh")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            served = wait_until(
                lambda: process.poll() is not None or answers_ready(port), timeout=600, interval=0.5
            )
            assert served, "build_and_run.sh did not serve within 600 s"
            assert process.poll() is None, "build_and_run.sh exited"
            status, _, body = http_get(port, CONTRACT_TARGET)
            assert (status, body) == (200, CONTRACT_BODY)
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=120)
    assert "build_and_run: serving user-hasher:" in output, output[-3000:]
    assert process.returncode == 0, output[-3000:]
