"""The JSON error answers, and what an unexpected exception leaves in the log."""

import logging

import pytest

from user_hasher.app import Service


async def test_an_unexpected_exception_is_logged_with_its_traceback_for_the_on_call(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> str:
        raise RuntimeError("internal detail")

    service.quart.add_url_rule("/boom", view_func=boom)
    with caplog.at_level(logging.INFO):
        response = await service.quart.test_client().get("/boom")
    assert response.status_code == 500
    assert await response.get_json() == {"error": "internal server error"}
    # The runbook's query for a 5xx alert: `"event": "unhandled_error"`.
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "unhandled_error"]
    assert record.name == "user_hasher.errors"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
