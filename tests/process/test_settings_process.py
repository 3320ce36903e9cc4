"""The settings check seen from outside: the real command with a bad environment."""

import json
import subprocess
import sys

import pytest

from proving.service import free_port


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "user_hasher"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_process_exits_2_with_a_clear_error_and_no_secret() -> None:
    result = run_service({"PORT": "not-a-port", "USER_SALT": "SUPERSECRETSALT"})
    assert result.returncode == 2
    error = json.loads(result.stderr)
    assert error["level"] == "CRITICAL"
    assert "PORT" in error["message"]
    assert b"SUPERSECRETSALT" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "salt_env", [{}, {"USER_SALT": ""}, {"USER_SALT": "TESTSALT"}, {"USER_SALT": "TESTSALT\n"}]
)
def test_the_salt_guard_refuses_to_start_naming_the_variable_never_the_value(
    salt_env: dict[str, str],
) -> None:
    # A free port: past the guard, the process would serve until the run times out.
    env = {"REQUIRE_SALT": "true", "HOST": "127.0.0.1", "PORT": str(free_port()), **salt_env}
    result = run_service(env)
    assert result.returncode == 2
    assert result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    error = json.loads(line)
    assert error["level"] == "CRITICAL"
    assert error["message"] == (
        "invalid environment settings: USER_SALT: must be set, and not to the test salt,"
        " when REQUIRE_SALT is true"
    )
    assert b"TESTSALT" not in result.stderr
