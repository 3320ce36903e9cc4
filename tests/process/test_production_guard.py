"""The salt guard with the production flavour's own environment: the Deployment that
`kubectl kustomize k8s/production` renders, its container env resolved as the kubelet would
(the Secret being the one the secret manager provides), run as the real command. It refuses
an empty salt and the test salt, naming USER_SALT and never the value, and starts with a real
salt. Only the listen address is local: HOST and PORT point at 127.0.0.1 and a free port."""

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from proving.manifests import Doc, resolve_env
from proving.service import ServiceProcess, free_port, http_get
from tests.k8s.flavours import PRODUCTION_DIR, kustomize, provided_secret

# status.* fields exist only in a cluster; the app only logs them.
FIELD_VALUES = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
REFUSAL = (
    "invalid environment settings: USER_SALT: must be set, and not to the test salt,"
    " when REQUIRE_SALT is true"
)


@pytest.fixture(scope="module")
def production_docs() -> list[Doc]:
    return kustomize(PRODUCTION_DIR)


def production_env(docs: list[Doc], salt: str) -> dict[str, str]:
    env = resolve_env([*docs, provided_secret(salt)], FIELD_VALUES)
    assert env["REQUIRE_SALT"] == "true"  # from the flavour, not from this test
    assert env["USER_SALT"] == salt
    return {**env, "HOST": "127.0.0.1", "PORT": str(free_port())}


@pytest.mark.parametrize("salt", ["", "TESTSALT"], ids=["empty", "test-salt"])
def test_production_refuses_to_start_without_a_real_salt(
    production_docs: list[Doc], salt: str
) -> None:
    env = production_env(production_docs, salt)
    result = subprocess.run(
        [sys.executable, "-m", "user_hasher"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    error = json.loads(line)
    assert error["level"] == "CRITICAL"
    assert error["message"] == REFUSAL
    assert b"TESTSALT" not in result.stderr


def test_production_starts_with_a_real_salt(
    production_docs: list[Doc], start_service: Callable[..., ServiceProcess]
) -> None:
    env = production_env(production_docs, "a-real-production-salt-4711")
    service = start_service(**env)  # ready, or it raises with the process output
    status, _, body = http_get(service.port, "/user_hash?user_id=42")
    assert status == 200
    assert len(json.loads(body)) == 40
    # stop() and the check that the salt never reached the output run at teardown.
