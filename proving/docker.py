"""Build the real image and run real containers of it.

Used by the container tests (tests/container/conftest.py), the cluster tests and the
rehearsal (`from proving.docker import build_image, run_container, ...`).

Every container runs with `--network=host` and binds 127.0.0.1 on a free port: this machine's
dockerd has no bridge (scripts/docker/start-dockerd.sh), and nothing may listen beyond loopback.
Every docker call has a timeout; callers remove what they start (`Container.remove`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proving.manifests import REPO as REPO_ROOT
from proving.service import free_port, http_get
from proving.waiting import WaitTimeoutError

# The Makefile's DOCKER (default `docker`): the same client builds and runs.
DOCKER = os.environ.get("DOCKER", "docker")

# A cold build took 17 s here (base image present, wheels from PyPI); 15 min covers a slow
# index without letting CI hang.
BUILD_TIMEOUT_SECONDS = 900.0
# One docker CLI call (run, inspect, logs, rm): normally well under a second.
DOCKER_CALL_TIMEOUT_SECONDS = 60.0
# `docker run` to /readyz 200 took 0.7 s here; generous for a busy 2-core machine.
READY_TIMEOUT_SECONDS = 30.0

# The hardened run: what a locked-down pod allows, expressed as docker flags.
HARDENED_RUN_ARGS: tuple[str, ...] = (
    "--read-only",
    "--user",
    "10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--memory",
    "128m",
)


class DockerError(RuntimeError):
    """A docker or `make image` call failed, or a container stopped before it served."""


def docker(*args: str, timeout: float = DOCKER_CALL_TIMEOUT_SECONDS) -> str:
    """Runs `docker ARGS`, returns stdout; a non-zero exit raises with docker's stderr."""
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise DockerError(
            f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    if shutil.which(DOCKER) is None:
        return f"no docker client ({DOCKER!r}) on PATH"
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout=20)
    except (DockerError, subprocess.TimeoutExpired) as error:
        return f"the docker engine does not answer ({error})"
    return None


@dataclass(frozen=True)
class Image:
    ref: str
    build_seconds: float


def _make(*args: str, timeout: float) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        raise DockerError(f"make {' '.join(args)} exited {result.returncode}:\n{output}")
    return result.stdout


def build_image() -> Image:
    """`make image`: the one build definition (base, version, labels) CI and developers use."""
    started = time.monotonic()
    _make("image", timeout=BUILD_TIMEOUT_SECONDS)
    build_seconds = time.monotonic() - started
    return Image(ref=_make("-s", "image-ref", timeout=30).strip(), build_seconds=build_seconds)


def inspect_image(ref: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", ref))[0]


@dataclass
class Container:
    id: str
    port: int
    metrics_port: int
    run_started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("container", "inspect", self.id))[0]

    def logs(self) -> str:
        result = subprocess.run(
            [DOCKER, "logs", self.id],
            capture_output=True,
            text=True,
            timeout=DOCKER_CALL_TIMEOUT_SECONDS,
            check=False,
        )
        return result.stdout + result.stderr

    def get(self, target: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.port, target, timeout=timeout)

    def get_metrics(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """GET /metrics on the metrics port."""
        return http_get(self.metrics_port, "/metrics", timeout=timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> Container:
        """Polls /readyz until 200; records the time since `docker run` started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz", timeout=1)[0] == 200:
                    self.ready_seconds = time.monotonic() - self.run_started
                    return self
            except OSError:
                if not self.inspect()["State"]["Running"]:
                    raise DockerError(f"container exited before ready:\n{self.logs()}") from None
            time.sleep(0.05)
        raise WaitTimeoutError(f"container not ready after {timeout} s:\n{self.logs()}")

    def host_pid(self) -> int:
        """The container's PID 1 as the host sees it (for reading /proc/<pid>/...)."""
        return int(self.inspect()["State"]["Pid"])

    def stop(self, grace_seconds: int) -> float:
        """`docker stop -t grace_seconds` (SIGTERM, SIGKILL after the grace); returns seconds."""
        started = time.monotonic()
        docker("stop", "-t", str(grace_seconds), self.id, timeout=grace_seconds + 30)
        return time.monotonic() - started

    def remove(self) -> None:
        subprocess.run(
            [DOCKER, "rm", "--force", self.id],
            capture_output=True,
            timeout=DOCKER_CALL_TIMEOUT_SECONDS,
            check=False,
        )


def run_container(
    image_ref: str,
    *extra_args: str,
    env: dict[str, str] | None = None,
    command: Sequence[str] = (),
) -> Container:
    """`docker run -d` on the host network, serving on 127.0.0.1 and a free port, /metrics on
    another.

    `extra_args` go before the image (e.g. HARDENED_RUN_ARGS, or a Deployment's securityContext
    as docker flags); `env` adds `-e NAME=VALUE`; `command` goes after the image (arguments to
    the entrypoint). Not waited for: call `.wait_ready()`.
    """
    port = free_port()
    metrics_port = free_port(other_than=port)
    listen = {"HOST": "127.0.0.1", "PORT": str(port), "METRICS_PORT": str(metrics_port)}
    env_args = [
        arg
        for name, value in {**listen, **(env or {})}.items()
        for arg in ("--env", f"{name}={value}")
    ]
    started = time.monotonic()
    container_id = docker(
        "run", "--detach", "--network=host", *env_args, *extra_args, image_ref, *command
    ).strip()
    return Container(id=container_id, port=port, metrics_port=metrics_port, run_started=started)
