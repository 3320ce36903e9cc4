"""`python -m user_hasher`'s main(), called in the test process: its exit codes and the
one-line JSON it leaves for the operator. tests/process/test_server.py runs the real command."""

import json
import logging
import socket
from collections.abc import Iterator

import pytest

from user_hasher.__main__ import main
from user_hasher.app import Service


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clean environment, and the root logger back as it was: main() configures it."""
    for name in ("PORT", "USER_SALT", "REQUIRE_SALT", "DRAIN_SECONDS", "LOG_LEVEL", "POD_IP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NODE_IP", raising=False)
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("APP_VERSION", "7.7.7-main")
    monkeypatch.setenv("APP_REVISION", "deadbeef-main")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers, level = saved
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_bad_settings_exit_2_with_one_json_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    monkeypatch.setenv("USER_SALT", "SUPERSECRETSALT")
    assert main() == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = json_lines(err)
    assert line["level"] == "CRITICAL"
    assert line["message"].startswith("invalid environment settings: PORT: ")
    assert "SUPERSECRETSALT" not in err


@pytest.mark.parametrize("salt", [None, "TESTSALT"])
def test_a_required_salt_refused_exits_2_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], salt: str | None
) -> None:
    monkeypatch.setenv("REQUIRE_SALT", "true")
    if salt is not None:
        monkeypatch.setenv("USER_SALT", salt)
    assert main() == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = json_lines(err)
    assert line["level"] == "CRITICAL"
    assert line["message"].startswith("invalid environment settings: USER_SALT: ")
    assert "TESTSALT" not in err


def test_a_taken_port_exits_1_with_one_json_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("LOG_LEVEL", "WARNING")
        assert main() == 1
    (line,) = [line for line in json_lines(capsys.readouterr().out) if line["level"] != "WARNING"]
    assert line["level"] == "CRITICAL"
    assert line["logger"] == "user_hasher"
    assert line["event"] == "serve_failed"
    assert line["app_version"] == "7.7.7-main"
    assert line["revision"] == "deadbeef-main"
    # Why, in the operating system's words: the one thing the on-call needs to read.
    assert line["message"].startswith("cannot serve: ")
    assert "address already in use" in line["message"].lower()


def test_serves_the_service_its_settings_describe_then_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # serve() itself runs for real in test_serve.py (and as a process in test_server.py);
    # here it stands in, so that main() returns as soon as the service has been served.
    served: list[Service] = []

    async def serve_and_stop(service: Service) -> None:
        served.append(service)
        logging.getLogger("user_hasher.server").info("below the level")
        logging.getLogger("user_hasher.server").warning("stopped", extra={"event": "stopped"})

    monkeypatch.setattr("user_hasher.__main__.serve", serve_and_stop)
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("USER_SALT", "TESTSALT")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    assert main() == 0
    (service,) = served
    assert service.settings.PORT == 8123
    assert service.settings.salt_is_set
    (line,) = json_lines(capsys.readouterr().out)
    assert (line["logger"], line["level"], line["event"]) == (
        "user_hasher.server",
        "WARNING",
        "stopped",
    )
    assert (line["app_version"], line["revision"]) == ("7.7.7-main", "deadbeef-main")
