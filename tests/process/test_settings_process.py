"""The settings check seen from outside: the real command with a bad environment."""

import json
import subprocess
import sys


def test_process_exits_2_with_a_clear_error_and_no_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "user_hasher"],
        env={"PORT": "not-a-port", "USER_SALT": "SUPERSECRETSALT", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    error = json.loads(result.stderr)
    assert error["level"] == "CRITICAL"
    assert "PORT" in error["message"]
    assert b"SUPERSECRETSALT" not in result.stdout + result.stderr
