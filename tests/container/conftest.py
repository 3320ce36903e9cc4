"""Fixtures for tests that build and run the real image.

- `container_image` (session): `make image` once per session; an `Image(ref, build_seconds)`.
  Without a reachable engine it fails in CI (CI set) and skips loudly elsewhere.
- `start_container` (function): factory `start_container(*docker_run_args, **env)` that runs the
  image on 127.0.0.1 and a free port and returns a ready `Container` (`wait_ready=False` to
  skip the wait; `command=[...]` for arguments after the image). At teardown every container
  is removed and its logs checked for the salt.

To run the image the way a manifest does (e.g. the Deployment's securityContext), put the test in
this directory and pass the equivalent docker flags:

    def test_runs_with_deployment_security_context(start_container):
        container = start_container("--read-only", "--user", "10001:10001", USER_SALT="x")

Tests elsewhere can import the same helpers from proving/docker.py.
"""

from collections.abc import Callable, Iterator, Sequence

import pytest

from proving.docker import Container, Image, build_image, run_container
from tests.support.needs import require_docker_engine


@pytest.fixture(scope="session")
def container_image() -> Image:
    require_docker_engine()
    return build_image()


@pytest.fixture
def start_container(container_image: Image) -> Iterator[Callable[..., Container]]:
    started: list[tuple[Container, dict[str, str]]] = []

    def start(
        *docker_run_args: str,
        wait_ready: bool = True,
        command: Sequence[str] = (),
        **env: str,
    ) -> Container:
        container = run_container(container_image.ref, *docker_run_args, env=env, command=command)
        started.append((container, env))
        return container.wait_ready() if wait_ready else container

    yield start
    for container, env in started:
        logs = container.logs()
        container.remove()
        salt = env.get("USER_SALT")
        if salt:
            assert salt not in logs, "the salt value appeared in the container's output"
