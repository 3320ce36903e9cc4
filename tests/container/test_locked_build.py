"""The image build installs only what the runtime lock's hashes vouch for.

The real Dockerfile builds a copy of the build context whose runtime lock is broken; the build
must stop at the dependency install and name the package. It fails within seconds: the builder
stage's first layers come from the cache and pip refuses the lock before anything is installed.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proving.docker import BUILD_TIMEOUT_SECONDS, DOCKER, Image
from tests.support.locks import BROKEN_LOCK_CASES, REPO_ROOT, broken_lock, lock_path

pytestmark = pytest.mark.docker

# What the Dockerfile copies (.dockerignore leaves the rest of the tree out anyway).
BUILD_CONTEXT = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "src",
    "requirements",
)
# Each lock the build installs from, and a package of it whose hashes a broken copy replaces.
BUILD_LOCKS = {"runtime": "quart", "build": "hatchling"}


def local_base_args() -> list[str]:
    """The local base `make image` uses where Docker Hub is unreachable, when the engine has it."""
    base = "user-hasher-base:bookworm"
    found = subprocess.run([DOCKER, "image", "inspect", base], capture_output=True, timeout=60)
    return ["--build-arg", f"BASE_IMAGE={base}"] if found.returncode == 0 else []


@pytest.mark.parametrize("lock_name", BUILD_LOCKS)
@pytest.mark.parametrize("case", BROKEN_LOCK_CASES)
def test_the_image_build_refuses_a_lock_it_cannot_verify(
    case: str, lock_name: str, container_image: Image, tmp_path: Path
) -> None:
    for name in BUILD_CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    lock = broken_lock(lock_path(lock_name).read_text(), case, BUILD_LOCKS[lock_name])
    (tmp_path / "requirements" / f"{lock_name}.lock").write_text(lock.text)

    result = subprocess.run(
        # --force-rm: the failed step's container goes too; nothing is tagged.
        [DOCKER, "build", "--network=host", "--force-rm", *local_base_args(), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert re.search(lock.refusal, output), output[-3000:]
    # It stopped at the lock's install: the build never reached the package's source.
    assert "COPY pyproject.toml README.md /src/" not in output
    assert "Successfully built" not in output
