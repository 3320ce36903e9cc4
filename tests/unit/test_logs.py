"""The JSON log format and the access log's levels and fields."""

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from user_hasher.logs import AccessLog, configure_logging

SCOPE = {"type": "http", "method": "GET", "http_version": "1.1", "path": "/user_hash"}


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict]]]:
    """configure_logging at DEBUG; returns a reader of the JSON lines written to stdout."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("DEBUG", "9.9.9", "abc123-build")

    def read() -> list[dict]:
        return [json.loads(line) for line in stdout.getvalue().splitlines()]

    yield read
    root.handlers, level = saved
    root.setLevel(level)


@pytest.mark.parametrize(
    ("route", "status", "seconds", "level"),
    [
        ("/user_hash", 200, 0.001, "DEBUG"),  # routine: counted by the metrics only
        ("/user_hash", 304, 0.001, "DEBUG"),
        ("/user_hash", 200, 0.25, "INFO"),  # slow: at the threshold
        ("/user_hash", 200, 3.0, "INFO"),
        ("/user_hash", 400, 0.001, "INFO"),  # every error
        ("unmatched", 404, 0.001, "INFO"),
        ("/user_hash", 500, 0.001, "INFO"),
        ("/readyz", 503, 0.001, "DEBUG"),  # probes never reach INFO
        ("/healthz", 200, 3.0, "DEBUG"),
    ],
)
def test_levels(json_logs, route: str, status: int, seconds: float, level: str) -> None:
    AccessLog(slow_request_seconds=0.25)(SCOPE, route, status, seconds)
    (line,) = json_logs()
    assert line["level"] == level


def test_an_access_line_has_every_field(json_logs) -> None:
    AccessLog(slow_request_seconds=0.25)({**SCOPE, "method": "POST"}, "/user_hash", 405, 0.0123456)
    (line,) = json_logs()
    time = line.pop("time")
    assert line == {
        "level": "INFO",
        "logger": "user_hasher.access",
        "message": "request",
        "app_version": "9.9.9",
        "revision": "abc123-build",
        "event": "request",
        "method": "POST",
        "route": "/user_hash",
        "status": 405,
        "duration_ms": 12.346,
        "http_version": "1.1",
    }
    assert len(time) == len("2026-01-01T00:00:00+0000")


def test_nothing_is_formatted_below_the_level(json_logs) -> None:
    logging.getLogger().setLevel("INFO")
    AccessLog(slow_request_seconds=0.25)(SCOPE, "/user_hash", 200, 0.001)
    AccessLog(slow_request_seconds=0.25)(SCOPE, "/user_hash", 404, 0.001)
    assert [line["status"] for line in json_logs()] == [404]


def test_every_line_names_the_version_and_the_revision(json_logs) -> None:
    # Two builds of one version are told apart in the logs by the revision.
    logging.getLogger("user_hasher.anything").warning("some event")
    (line,) = json_logs()
    assert (line["app_version"], line["revision"]) == ("9.9.9", "abc123-build")
