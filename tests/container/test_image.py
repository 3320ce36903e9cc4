"""The built image itself: metadata, contents and what it must never carry."""

import json
import re
import subprocess

import pytest

from tests.container.docker_support import (
    REPO_ROOT,
    Image,
    docker,
    inspect_image,
    project_version,
)

pytestmark = pytest.mark.docker

SALT = "TESTSALT"
APP_USER = "10001:10001"
VENV_PYTHON = "/opt/venv/bin/python"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_tag_is_the_project_version_never_latest(container_image: Image) -> None:
    name, _, tag = container_image.ref.rpartition(":")
    assert name == "user-hasher"
    assert tag == project_version()
    print(f"{container_image.ref}: built in {container_image.build_seconds:.1f} s")


def test_runs_python_as_pid_1_as_a_numeric_non_root_user(container_image: Image) -> None:
    config = inspect_image(container_image.ref)["Config"]
    # Exec form: a JSON list, no `/bin/sh -c` between docker and python.
    assert config["Entrypoint"] == [VENV_PYTHON, "-m", "user_hasher"]
    assert not config["Cmd"]
    assert config["User"] == APP_USER
    assert list(config["ExposedPorts"]) == ["8000/tcp"]


def test_version_is_baked_in_as_env_and_oci_labels(container_image: Image) -> None:
    config = inspect_image(container_image.ref)["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    labels = config["Labels"]
    assert env["APP_VERSION"] == project_version()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert labels["org.opencontainers.image.version"] == project_version()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(rf"{head}(-dirty)?", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.source"]


def test_no_salt_in_history_env_or_labels(container_image: Image) -> None:
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", container_image.ref)
    config = json.dumps(inspect_image(container_image.ref)["Config"])
    for text in (history, config):
        assert SALT not in text
        # Not even an empty default: the salt only ever arrives at run time.
        assert "USER_SALT" not in text


def test_venv_holds_exactly_the_runtime_lock_and_the_package(container_image: Image) -> None:
    lock = (REPO_ROOT / "requirements" / "runtime.lock").read_text()
    locked = {normalized(m[1]) for m in re.finditer(r"^([A-Za-z0-9._-]+)==", lock, re.M)}
    listing = docker(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        VENV_PYTHON,
        container_image.ref,
        "-c",
        "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'])",
    )
    installed = {normalized(name) for name in listing.split()}
    # No dev tools, no pip: what the lock pins, plus the service.
    assert installed == locked | {"user-hasher"}
