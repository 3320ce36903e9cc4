"""The locks pin every package by version and by content, and `make install` enforces it.

The image build's side (the Dockerfile installs with the same flag) is proven in
tests/container/test_locked_build.py.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.locks import (
    BROKEN_LOCK_CASES,
    LOCK_DIR,
    LOCK_NAMES,
    REPO_ROOT,
    TAMPERED_HASH,
    TAMPERED_PACKAGE,
    broken_lock,
    lock_path,
    normalized,
    read_pins,
    with_hashes_replaced,
)

# uv resolving from the index (cached wheels and metadata): seconds; generous for a slow index.
LOCK_TIMEOUT_SECONDS = 300.0
# `make install` in a fresh venv: pip collects every pin of the dev lock before it reports a
# hash mismatch (about a minute here).
INSTALL_TIMEOUT_SECONDS = 900.0


@pytest.mark.parametrize("lock_name", LOCK_NAMES)
def test_every_pin_carries_sha256_hashes(lock_name: str) -> None:
    lock_text = lock_path(lock_name).read_text()
    pins = read_pins(lock_text)
    # Every `name==version` line is an entry the parser saw: none escapes the check below.
    assert len(pins) == len(re.findall(r"^\S+==", lock_text, re.M)) > 0
    unhashed = [pin.name for pin in pins.values() if not pin.hashes]
    assert not unhashed, f"{lock_name}.lock pins without a hash: {unhashed}"
    for pin in pins.values():
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pin.hashes), pin


def test_the_dev_lock_pins_the_runtime_lock_as_is() -> None:
    """The tests run against the very files the image ships."""
    runtime = read_pins(lock_path("runtime").read_text())
    dev = read_pins(lock_path("dev").read_text())
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_dev_lock_pins_the_build_backend_pyproject_names() -> None:
    """`make install` builds the package with the dev lock's hatchling (--no-build-isolation):
    the same one [build-system] pins, so the editable install and the image build agree."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    dev = read_pins(lock_path("dev").read_text())
    build = read_pins(lock_path("build").read_text())
    for requirement in pyproject["build-system"]["requires"]:
        name, _, version = requirement.partition("==")
        assert version, f"[build-system] requires {requirement!r}: pin it exactly"
        assert dev[normalized(name)].version == version
        assert build[normalized(name)].version == version
    # The image's build backend (build.lock) is the one developers build with, file for file.
    for name, pin in build.items():
        assert dev[name].version == pin.version, name
        assert set(dev[name].hashes) == set(pin.hashes), name


def make(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_make_lock_reproduces_every_pin_and_hash(tmp_path: Path) -> None:
    """The locks are what `make lock` / `make checkov-lock` write, not hand edits: a copy of the
    tree re-locks to the same pins, and every committed hash is one uv finds on the index.
    (The index may hold files uploaded since, e.g. wheels for a new Python: those may be new.)
    """
    shutil.copy(REPO_ROOT / "Makefile", tmp_path)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(LOCK_DIR, tmp_path / "requirements")
    venv = REPO_ROOT / ".venv"
    for target in ("lock", "checkov-lock"):
        # -o install: use this tree's venv (its uv) as it is, not a fresh one in the copy.
        result = make(
            "-o", "install", target, f"VENV={venv}", cwd=tmp_path, timeout=LOCK_TIMEOUT_SECONDS
        )
        assert result.returncode == 0, result.stdout + result.stderr
    for lock_name in LOCK_NAMES:
        committed = read_pins(lock_path(lock_name).read_text())
        relocked = read_pins((tmp_path / "requirements" / f"{lock_name}.lock").read_text())
        assert {name: pin.version for name, pin in relocked.items()} == {
            name: pin.version for name, pin in committed.items()
        }, lock_name
        for name, pin in committed.items():
            assert set(pin.hashes) <= set(relocked[name].hashes), f"{lock_name}.lock: {name}"


def test_a_tampered_lock_is_a_real_tamper() -> None:
    """The copy the install tests use differs from the lock in exactly one package's hashes."""
    lock_text = lock_path("dev").read_text()
    original = read_pins(lock_text)
    tampered = read_pins(with_hashes_replaced(lock_text, TAMPERED_PACKAGE))
    changed = {name for name in original if original[name] != tampered[name]}
    assert changed == {TAMPERED_PACKAGE}
    assert set(tampered[TAMPERED_PACKAGE].hashes) == {TAMPERED_HASH}


@pytest.mark.slow
@pytest.mark.parametrize("case", BROKEN_LOCK_CASES)
def test_make_install_refuses_a_lock_it_cannot_verify(case: str, tmp_path: Path) -> None:
    """`make install` in a copy of the tree with a broken dev lock: pip refuses it, names the
    package, and no venv is marked installed."""
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path)
    shutil.copytree(REPO_ROOT / "src", tmp_path / "src")
    (tmp_path / "requirements").mkdir()
    lock = broken_lock(lock_path("dev").read_text(), case)
    (tmp_path / "requirements" / "dev.lock").write_text(lock.text)

    result = make("install", cwd=tmp_path, timeout=INSTALL_TIMEOUT_SECONDS)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert re.search(lock.refusal, output), output[-3000:]
    assert not (tmp_path / ".venv" / ".installed").exists()
