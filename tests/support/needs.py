"""What a test needs from the machine (a tool, the Docker engine, the cluster bundle), and the
one rule when it is missing: on a workstation the test skips LOUDLY, with a reason that names
what is missing; in CI (CI set) it fails, because .ci/run provides everything and a skip there
would hide that a check never ran.

    require_tool("haproxy", "Debian package haproxy")         # its path, or skip/fail
    require_docker_engine()                                    # a client AND an engine answering
    require(bundle_problem(), "the live-cluster tests")        # any problem string, or None
"""

from __future__ import annotations

import os
import shutil

import pytest

from proving.docker import engine_problem


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false"}


def require(problem: str | None, what: str, remedy: str = "") -> None:
    """Nothing when `problem` is None; else `what` cannot run: fail in CI, skip loudly here."""
    if problem is None:
        return
    remedy = f"; {remedy}" if remedy else ""
    if running_in_ci():
        pytest.fail(f"CI is set but {what} cannot run: {problem}{remedy}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {what} NOT RUN: {problem}{remedy}")


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path on PATH."""
    path = shutil.which(name)
    problem = None if path else f"{name} is not installed ({install_hint})"
    require(problem, f"this test (needs {name})", ".ci/run installs it")
    return path or ""


def require_docker_engine() -> None:
    """A docker client on PATH and an engine that answers it (a client alone is not enough)."""
    require(
        engine_problem(),
        "this test (needs a Docker engine)",
        "start one with scripts/docker/start-dockerd.sh",
    )
