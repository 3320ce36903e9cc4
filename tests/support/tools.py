"""Finding the external tools tests drive (haproxy, promtool, docker, ...).

Outside CI a missing tool skips its tests with a loud reason; in CI (CI=true) it
is a failure, because .ci/run installs every tool and a skip there would hide that
a check never ran.
"""

import os
import shutil

import pytest


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed ({install_hint}); .ci/run installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(f"SKIPPED LOUDLY: {message}")
