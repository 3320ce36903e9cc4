"""The service as create_service assembles it, driven as ASGI (httpx.ASGITransport): every
request reaches the metrics and the access log, with the settings it was built from."""

import logging
from collections.abc import Sequence

import httpx
import pytest
from pydantic import SecretStr

from proving.contract import CONTRACT_BODY, CONTRACT_TARGET
from tests.conftest import SALT
from tests.metrics_text import HASHES, RESPONSES, by_response, samples, value
from user_hasher.admission import CONNECTIONS, IN_APP_FACTOR, IN_FLIGHT, SATURATED, Admission
from user_hasher.app import Service, create_service
from user_hasher.asgi import Scope
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings

SHED = "user_hasher_shed_total"


async def send(service: Service, requests: Sequence[tuple[str, str]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [await client.request(method, target) for method, target in requests]


def shed_by_reason(metrics: Metrics) -> dict[str, float]:
    return {
        dict(labels)["reason"]: count
        for (name, labels), count in samples(metrics.render([])[0].decode()).items()
        if name == SHED
    }


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, int]]:
    return [
        (record.levelname, record.method, record.route, record.status)
        for record in caplog.records
        if record.name == "user_hasher.access"
    ]


async def test_every_request_is_counted_and_access_logged(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="user_hasher.access")
    responses = await send(
        service,
        [
            ("GET", CONTRACT_TARGET),
            ("HEAD", CONTRACT_TARGET),
            ("GET", "/private-user-4711"),
            ("POST", CONTRACT_TARGET),
        ],
    )
    assert [r.status_code for r in responses] == [200, 200, 404, 405]
    assert responses[0].content == CONTRACT_BODY

    text = service.metrics.render([])[0].decode()
    assert by_response(text, RESPONSES) == {
        ("GET", "/user_hash", "2xx"): 1,
        ("HEAD", "/user_hash", "2xx"): 1,
        ("GET", "unmatched", "4xx"): 1,
        ("POST", "/user_hash", "4xx"): 1,
    }
    assert value(text, HASHES) == 1
    assert access_lines(caplog) == [
        ("DEBUG", "GET", "/user_hash", 200),
        ("DEBUG", "HEAD", "/user_hash", 200),
        ("INFO", "GET", "unmatched", 404),
        ("INFO", "POST", "/user_hash", 405),
    ]


async def test_the_slow_request_threshold_comes_from_the_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="user_hasher.access")
    service = create_service(Settings(USER_SALT=SecretStr(SALT), SLOW_REQUEST_SECONDS=0))
    await send(service, [("GET", CONTRACT_TARGET)])
    assert access_lines(caplog) == [("INFO", "GET", "/user_hash", 200)]


async def test_metrics_are_served_on_the_port_the_settings_name() -> None:
    service = create_service(Settings(METRICS_PORT=9123))
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(transport=transport) as client:
        on_the_setting = await client.get("http://test:9123/metrics")
        on_the_default = await client.get("http://test:9797/metrics")
    assert on_the_setting.status_code == 200
    assert "user_hasher_build_info" in on_the_setting.text
    assert on_the_default.status_code == 404


async def test_a_given_metrics_registry_is_the_one_that_counts() -> None:
    settings = Settings()
    metrics = Metrics(settings)
    service = create_service(settings, metrics=metrics)
    assert service.metrics is metrics
    await send(service, [("GET", "/healthz")])
    assert by_response(metrics.render([])[0].decode(), RESPONSES) == {("GET", "/healthz", "2xx"): 1}


async def test_the_service_admission_sheds_in_the_app_and_its_refusals_are_on_metrics() -> None:
    service = create_service(Settings(MAX_IN_FLIGHT=1))
    service.admission.lag = 1.0  # saturated
    service.admission.in_flight = IN_APP_FACTOR  # the bound in the app, for MAX_IN_FLIGHT=1
    (shed,) = await send(service, [("GET", CONTRACT_TARGET)])
    assert shed.status_code == 503
    assert service.admission.shed == {IN_FLIGHT: 1, SATURATED: 0, CONNECTIONS: 0}
    service.admission.shed[CONNECTIONS] += 2  # as the accept gate counts its refusals
    assert shed_by_reason(service.metrics) == {IN_FLIGHT: 1.0, SATURATED: 0.0, CONNECTIONS: 2.0}


async def test_a_given_admission_is_the_one_that_decides_and_counts() -> None:
    settings = Settings()
    admission = Admission(max_in_flight=1)
    metrics = Metrics(settings, shed_counts=admission.shed)
    service = create_service(settings, admission=admission, metrics=metrics)
    assert service.admission is admission
    admission.lag, admission.in_flight = 1.0, IN_APP_FACTOR
    (shed,) = await send(service, [("GET", CONTRACT_TARGET)])
    assert shed.status_code == 503
    assert shed_by_reason(metrics) == {IN_FLIGHT: 1.0, SATURATED: 0.0, CONNECTIONS: 0.0}


def test_the_service_admission_follows_the_settings() -> None:
    off = create_service(Settings(MAX_IN_FLIGHT=5, SHED_LOAD=False)).admission
    assert off.enabled is False
    on = create_service(Settings(MAX_IN_FLIGHT=5, SATURATED_LAG_SECONDS=0.02)).admission
    assert (on.enabled, on.max_in_flight, on.saturated_lag) == (True, 5, 0.02)


async def test_given_observers_replace_the_metrics_and_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What `make bench` uses to measure the service without one of them.
    caplog.set_level(logging.DEBUG, logger="user_hasher.access")
    seen: list[tuple[str, int]] = []

    def observer(scope: Scope, route: str, status: int, seconds: float) -> None:
        seen.append((route, status))

    service = create_service(Settings(), observers=[observer])
    await send(service, [("GET", "/healthz"), ("GET", "/nope")])
    assert seen == [("/healthz", 200), ("unmatched", 404)]
    assert by_response(service.metrics.render([])[0].decode(), RESPONSES) == {}
    assert access_lines(caplog) == []


def test_the_service_keeps_its_settings_and_drain() -> None:
    settings = Settings(DRAIN_SECONDS=12.5)
    service = create_service(settings)
    assert service.settings is settings
    assert service.lifecycle.drain_seconds == 12.5


def test_the_app_holds_its_state_as_attributes_and_the_salt_as_a_secret() -> None:
    settings = Settings(USER_SALT=SecretStr(SALT))
    service = create_service(settings)
    app = service.quart
    assert (app.metrics, app.lifecycle) == (service.metrics, service.lifecycle)
    # Opened only where it is hashed: nothing on the app holds the salt in the clear.
    assert app.salt is settings.USER_SALT
    assert SALT not in repr(app.salt)
    assert SALT not in str(dict(app.config))
    assert not app.extensions


@pytest.mark.parametrize(("salt", "warnings"), [("", ["salt_unset"]), (SALT, [])])
async def test_startup_warns_once_when_the_salt_is_unset_and_turns_ready(
    caplog: pytest.LogCaptureFixture, salt: str, warnings: list[str]
) -> None:
    caplog.set_level(logging.INFO)
    service = create_service(Settings(USER_SALT=SecretStr(salt)))
    assert not service.lifecycle.ready
    async with service.quart.test_app():
        assert service.lifecycle.ready
    found = [
        record.event
        for record in caplog.records
        if record.name == "user_hasher.app" and record.levelno == logging.WARNING
    ]
    assert found == warnings
