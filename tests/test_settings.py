import json
import subprocess
import sys

import pytest

from user_hasher import __version__
from user_hasher.settings import SettingsError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "USER_SALT", "APP_VERSION", "POD_IP", "NODE_IP"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.HOST, settings.PORT) == ("0.0.0.0", 8000)
    assert settings.USER_SALT.get_secret_value() == ""
    assert not settings.salt_is_set
    assert settings.APP_VERSION == __version__
    assert (settings.POD_IP, settings.NODE_IP) == ("unknown", "unknown")


def test_salt_never_appears_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SALT", "SUPERSECRETSALT")
    settings = load_settings()
    assert settings.salt_is_set
    assert "SUPERSECRETSALT" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DRAIN_SECONDS", "-1"),
        ("GRACEFUL_TIMEOUT_SECONDS", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("APP_VERSION", ""),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


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
