"""The bound admission control keeps, and the 503 a refused client reads."""

import asyncio
import json
import time

import h11
import pytest

from user_hasher.admission import (
    CONNECTIONS,
    IN_APP_FACTOR,
    IN_FLIGHT,
    LAG_SAMPLE_SECONDS,
    LAG_SAMPLES_SMOOTHED,
    REASONS,
    REFUSED_CONNECTION,
    RETRY_AFTER_SECONDS,
    SATURATED,
    Admission,
)
from user_hasher.settings import Settings


def saturated(max_in_flight: int = 3) -> Admission:
    admission = Admission(max_in_flight=max_in_flight, saturated_lag=0.005)
    admission.lag = 0.0051
    return admission


def test_requests_in_the_app_are_shed_only_past_the_last_resort_bound() -> None:
    admission = saturated()
    admission.in_flight = 3 * IN_APP_FACTOR - 1
    assert admission.request_refusal() is None
    admission.in_flight = 3 * IN_APP_FACTOR
    assert admission.request_refusal() == IN_FLIGHT
    assert IN_APP_FACTOR == 4


def test_connections_under_the_bound_are_let_in_and_at_it_refused() -> None:
    admission = saturated()
    admission.busy = 2
    assert admission.connection_refusal() is None
    assert not admission.closes_connection()
    admission.busy = 3
    assert admission.connection_refusal() == SATURATED
    assert not admission.closes_connection()  # at the bound: kept, only none added
    admission.busy = 4
    assert admission.closes_connection()
    # Idle connections count too, at IN_APP_FACTOR times the bound: so many admitted at once
    # (before the loop saturated) bring that many requests next.
    admission.busy, admission.open = 0, 3 * IN_APP_FACTOR - 1
    assert admission.connection_refusal() is None
    admission.open = 3 * IN_APP_FACTOR
    assert admission.connection_refusal() == SATURATED
    admission.open = 0
    # Requests in the app do not refuse connections: the busy connections are the bound.
    admission.busy, admission.in_flight = 0, 100
    assert admission.connection_refusal() is None


def test_a_loop_that_is_not_saturated_refuses_nothing_whatever_the_counts() -> None:
    admission = saturated()
    admission.lag = 0.005  # at the threshold: not above it
    admission.busy = admission.in_flight = 100
    assert not admission.saturated
    assert admission.request_refusal() is None
    assert admission.connection_refusal() is None
    assert not admission.closes_connection()


def test_switched_off_nothing_is_ever_refused() -> None:
    admission = Admission(max_in_flight=1, enabled=False)
    admission.lag = 10.0
    admission.busy = admission.in_flight = 10**6
    assert admission.request_refusal() is None
    assert admission.connection_refusal() is None
    assert not admission.closes_connection()


def test_the_counts_start_at_zero_for_every_reason() -> None:
    admission = Admission(max_in_flight=1)
    assert (admission.in_flight, admission.busy, admission.open, admission.lag) == (0, 0, 0, 0.0)
    assert admission.saturated_lag == 0.005
    assert admission.shed == {IN_FLIGHT: 0, SATURATED: 0, CONNECTIONS: 0}
    assert (
        REASONS == (IN_FLIGHT, SATURATED, CONNECTIONS) == ("in_flight", "saturated", "connections")
    )


def test_from_settings_takes_the_bounds_and_the_switch() -> None:
    on = Admission.from_settings(Settings(MAX_IN_FLIGHT=7, SATURATED_LAG_SECONDS=0.02))
    assert (on.enabled, on.max_in_flight, on.saturated_lag) == (True, 7, 0.02)
    off = Admission.from_settings(Settings(MAX_IN_FLIGHT=7, SHED_LOAD=False))
    assert off.enabled is False
    assert off.max_in_flight == float("inf")


def test_the_lag_is_smoothed_over_about_ten_samples() -> None:
    admission = Admission(max_in_flight=1)
    admission.observe_lag(0.1)
    assert admission.lag == pytest.approx(0.1 / LAG_SAMPLES_SMOOTHED)
    for _ in range(50):
        admission.observe_lag(0.1)
    assert admission.lag == pytest.approx(0.1, rel=0.01)
    admission.observe_lag(-1.0)  # a timer cannot fire early: a negative sample is zero
    assert admission.lag == pytest.approx(0.1 * (1 - 1 / LAG_SAMPLES_SMOOTHED), rel=0.01)
    assert LAG_SAMPLES_SMOOTHED == 10
    assert LAG_SAMPLE_SECONDS == 0.01


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_the_watcher_sees_a_blocked_loop_and_stops_when_cancelled() -> None:
    async def scenario() -> float:
        admission = Admission(max_in_flight=1)
        watch = asyncio.get_running_loop().create_task(admission.watch_event_loop())
        await asyncio.sleep(LAG_SAMPLE_SECONDS * 3)
        idle = admission.lag
        for _ in range(3):
            block_the_loop(0.05)  # the timer fires late
            await asyncio.sleep(0)
        await asyncio.sleep(LAG_SAMPLE_SECONDS)
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
        assert admission.lag > idle + 0.005
        return idle

    assert asyncio.run(scenario()) < 0.003  # an idle loop's timers are on time


def test_the_refused_connection_is_a_whole_http_503_a_client_can_read() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/user_hash", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(REFUSED_CONNECTION)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert response.status_code == 503
    headers = {name.decode(): value.decode() for name, value in response.headers}
    assert headers["retry-after"] == str(RETRY_AFTER_SECONDS) == "1"
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    body = client.next_event()
    assert isinstance(body, h11.Data)
    assert json.loads(body.data) == {"error": "overloaded, retry later"}
    assert int(headers["content-length"]) == len(body.data)
    assert isinstance(client.next_event(), h11.EndOfMessage)
    assert REFUSED_CONNECTION.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


@pytest.mark.parametrize("max_in_flight", [1, 48])
def test_the_bound_is_exact(max_in_flight: int) -> None:
    admission = saturated(max_in_flight)
    admission.busy = max_in_flight - 1
    admission.open = max_in_flight * IN_APP_FACTOR - 1
    admission.in_flight = max_in_flight * IN_APP_FACTOR - 1
    assert admission.request_refusal() is admission.connection_refusal() is None
