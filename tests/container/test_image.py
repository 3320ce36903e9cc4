"""The built image itself: metadata, contents and what it must never carry."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from proving.contract import CONTRACT_SALT
from proving.docker import (
    BUILD_TIMEOUT_SECONDS,
    DOCKER,
    REPO_ROOT,
    Image,
    docker,
    inspect_image,
)
from proving.manifests import package_version

# `make base-image`'s local base (the Makefile's LOCAL_BASE_IMAGE), used where present.
LOCAL_BASE = "user-hasher-base:bookworm"

pytestmark = pytest.mark.docker

SALT = CONTRACT_SALT
APP_USER = "10001:10001"
VENV_PYTHON = "/opt/venv/bin/python"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_tag_is_the_version_and_the_image_id_never_latest(container_image: Image) -> None:
    """`make image` tags each build VERSION-<12 hex of its image ID>: unique and immutable."""
    name, _, tag = container_image.ref.rpartition(":")
    assert name == "user-hasher"
    version, _, build = tag.rpartition("-")
    assert version == package_version()
    image_id = inspect_image(container_image.ref)["Id"].removeprefix("sha256:")
    assert build == image_id[:12]
    print(f"{container_image.ref}: built in {container_image.build_seconds:.1f} s")


def test_runs_python_as_pid_1_as_a_numeric_non_root_user(container_image: Image) -> None:
    config = inspect_image(container_image.ref)["Config"]
    # Exec form: a JSON list, no `/bin/sh -c` between docker and python.
    assert config["Entrypoint"] == [VENV_PYTHON, "-m", "user_hasher"]
    assert not config["Cmd"]
    assert config["User"] == APP_USER
    assert sorted(config["ExposedPorts"]) == ["8000/tcp", "9797/tcp"]


def test_no_app_settings_in_env_and_the_version_in_oci_labels(container_image: Image) -> None:
    """The app's own defaults rule (settings.py), the version from the package itself; the
    labels carry what `make image` passed."""
    config = inspect_image(container_image.ref)["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    labels = config["Labels"]
    assert not {"APP_VERSION", "HOST", "PORT", "METRICS_PORT"} & set(env)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert labels["org.opencontainers.image.version"] == package_version()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(rf"{head}(-dirty)?", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.source"]


def plain_build(tmp_path: Path, *build_args: str) -> subprocess.CompletedProcess[str]:
    """`docker build .` the way a person types it; only the base is named, where Docker Hub
    is unreachable (the local base, as `make image` picks it)."""
    base = LOCAL_BASE if has_image(LOCAL_BASE) else None
    args = ["--build-arg", f"BASE_IMAGE={base}"] if base else []
    iid = tmp_path / "iid"
    return subprocess.run(
        [DOCKER, "build", "--network=host", "--iidfile", str(iid), *args, *build_args, "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )


def test_a_plain_docker_build_needs_no_build_args(container_image: Image, tmp_path: Path) -> None:
    result = plain_build(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    image_id = (tmp_path / "iid").read_text().strip()
    try:
        labels = inspect_image(image_id)["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == "unknown"
    finally:
        subprocess.run([DOCKER, "rmi", image_id], capture_output=True, timeout=60)


def test_a_version_arg_that_is_not_the_package_version_fails(
    container_image: Image, tmp_path: Path
) -> None:
    result = plain_build(tmp_path, "--build-arg", "VERSION=9.9.9")
    assert result.returncode != 0
    assert f"VERSION=9.9.9 but the package is {package_version()}" in result.stdout + result.stderr


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


def has_image(ref: str) -> bool:
    return (
        subprocess.run(
            [DOCKER, "image", "inspect", ref], capture_output=True, timeout=60
        ).returncode
        == 0
    )
