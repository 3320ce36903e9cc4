"""The minikube side of the Makefile, as far as it can be exercised without a cluster (the
live cluster runs the targets for real: tests/cluster): its names agree with the manifests,
minikube is called only from scripts/k8s/minikube_steps.sh, that script does what it says,
and `make smoke`'s port-forward wrapper finds the forwarded port, runs the smoke test
through it and always stops the forward.

There is no minikube here, so `minikube` and `kubectl` are stand-ins on PATH: one records
its calls, the other does what `kubectl port-forward` does (listens on a free port, prints
kubectl's line, proxies)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proving.manifests import REPO, Doc, only
from proving.waiting import wait_until
from tests.support.needs import require_docker_engine

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
    # Stand-in for `kubectl port-forward`: records its arguments and pid, then
    # forwards a free local port to $TARGET_PORT like kubectl would.
    import os, socket, sys, threading
    with open(os.environ["RECORD"], "w") as record:
        record.write(f"{{os.getpid()}}\\n{{' '.join(sys.argv[1:])}}\\n")
    if os.environ.get("FAIL"):
        print('error: services "user-hasher" not found', file=sys.stderr)
        sys.exit(1)
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
        upstream = socket.create_connection(("127.0.0.1", int(os.environ["TARGET_PORT"])))
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
    result = run_port_forward_smoke(tmp_path, TARGET_PORT=str(service.port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: PASS http://127.0.0.1:" in result.stdout

    pid, args = (tmp_path / "kubectl-record").read_text().splitlines()
    assert args == (
        "--context minikube --namespace user-hasher port-forward --address 127.0.0.1 "
        "service/user-hasher :http"
    )
    assert wait_until(lambda: forwarder_gone(int(pid)), timeout=10), "port-forward left running"


def test_make_smoke_fails_when_the_forward_fails(tmp_path: Path) -> None:
    result = run_port_forward_smoke(tmp_path, FAIL="1")
    assert result.returncode == 1
    assert 'services "user-hasher" not found' in result.stderr


FAKE_MINIKUBE = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    # Stand-in for the minikube CLI: records each call; `status` says it is stopped.
    echo "$*" >>"$RECORD"
    case $* in
      *status*) exit 7 ;;
      *docker-env*) echo 'export MINIKUBE_ACTIVE_DOCKERD=minikube' ;;
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


def test_the_minikube_steps_are_the_only_minikube_calls() -> None:
    """The deploy targets reach minikube only through MINIKUBE_STEPS, which the cluster
    tests replace; every other step is kubectl."""
    assert make_variable("MINIKUBE_STEPS") == "scripts/k8s/minikube_steps.sh"
    dry_run = subprocess.run(
        ["make", "-n", "minikube-deploy", "rollout", "MINIKUBE_STEPS=stand-in"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "stand-in start" in dry_run.stdout
    assert "stand-in build-image" in dry_run.stdout
    assert not re.search(r"\bminikube (-p|status|start|docker-env)", dry_run.stdout)


def test_minikube_steps_start_starts_a_stopped_profile(tmp_path: Path) -> None:
    result = run_minikube_steps(tmp_path, "start")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "minikube-record").read_text().splitlines() == [
        "-p demo status",
        "-p demo start",
    ]


@pytest.mark.docker
def test_minikube_steps_build_image_prints_only_the_unique_reference(tmp_path: Path) -> None:
    require_docker_engine()
    result = run_minikube_steps(tmp_path, "build-image")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "minikube-record").read_text().splitlines() == ["-p demo docker-env"]
    assert re.fullmatch(r"user-hasher:\d+\.\d+\.\d+-[0-9a-f]{12}\n", result.stdout)
    assert "image: built" in result.stderr
