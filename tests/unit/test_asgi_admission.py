"""Admission control in the ASGI layer: what is shed, what a shed request is answered,
and the in-flight count the bound reads."""

import asyncio
import json

import pytest

from tests.unit.test_asgi import METRICS_PORT, Recorder, answering, call
from user_hasher.admission import IN_APP_FACTOR, RETRY_AFTER_SECONDS, Admission
from user_hasher.asgi import SHEDDABLE_ROUTES, ASGIApp, Receive, Scope, Send, wrap_app
from user_hasher.lifecycle import Lifecycle
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings


def protected(app: ASGIApp, admission: Admission, recorder: Recorder) -> ASGIApp:
    return wrap_app(
        app,
        routes={"/user_hash", "/readyz", "/healthz"},
        lifecycle=Lifecycle(drain_seconds=0),
        admission=admission,
        metrics=Metrics(Settings()),
        observers=[recorder],
        metrics_port=METRICS_PORT,
    )


def saturated_admission(max_in_flight: int = 2) -> Admission:
    admission = Admission(max_in_flight)
    admission.lag = 1.0
    return admission


def headers_of(message: dict) -> dict[bytes, bytes]:
    return dict(message["headers"])


async def test_past_the_bound_a_user_hash_request_is_answered_503_at_once() -> None:
    admission, recorder = saturated_admission(), Recorder()
    admission.in_flight = 2 * IN_APP_FACTOR
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    start, body = await call(protected(app, admission, recorder))
    assert reached == []  # the app never saw it
    assert (start["type"], body["type"]) == ("http.response.start", "http.response.body")
    assert start["status"] == 503
    headers = headers_of(start)
    assert headers[b"retry-after"] == str(RETRY_AFTER_SECONDS).encode()
    assert headers[b"connection"] == b"close"  # its next request meets the accept gate
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body["body"]) == {"error": "overloaded, retry later"}
    assert int(headers[b"content-length"]) == len(body["body"])
    assert admission.shed == {"in_flight": 1, "saturated": 0, "connections": 0}
    assert recorder.calls == [("GET", "/user_hash", 503)]  # observed like any response
    await call(protected(app, admission, recorder))
    assert admission.shed["in_flight"] == 2
    assert admission.in_flight == 2 * IN_APP_FACTOR


@pytest.mark.parametrize("path", ["/readyz", "/healthz", "/metrics", "/elsewhere"])
async def test_probes_metrics_and_other_paths_are_never_shed(path: str) -> None:
    admission, recorder = saturated_admission(), Recorder()
    admission.in_flight = 100
    messages = await call(protected(answering(200), admission, recorder), path=path)
    assert messages[0]["status"] == 200
    assert admission.shed["in_flight"] == 0


def test_only_user_hash_is_sheddable() -> None:
    assert frozenset({"/user_hash"}) == SHEDDABLE_ROUTES


async def test_a_request_counts_in_flight_while_in_the_app_and_not_after() -> None:
    admission, recorder = saturated_admission(max_in_flight=10), Recorder()
    seen: list[int] = []

    inside = asyncio.Barrier(3)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await inside.wait()  # all three are in the app at once
        seen.append(admission.in_flight)
        await answering(200)(scope, receive, send)

    wrapped = protected(app, admission, recorder)
    await asyncio.gather(call(wrapped), call(wrapped), call(wrapped, path="/readyz"))
    assert seen[0] == 3  # the first to leave saw all three inside
    assert admission.in_flight == 0


async def test_the_count_drops_when_the_app_fails() -> None:
    admission, recorder = saturated_admission(), Recorder()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await call(protected(failing, admission, recorder))
    assert admission.in_flight == 0


async def test_while_saturated_responses_above_the_bound_close_their_connection() -> None:
    admission, recorder = saturated_admission(max_in_flight=2), Recorder()
    app = protected(answering(200, [(b"connection", b"keep-alive")]), admission, recorder)
    admission.busy = 2
    (start, _) = await call(app)
    assert headers_of(start)[b"connection"] == b"keep-alive"
    admission.busy = 3
    (start, _) = await call(app)
    assert headers_of(start)[b"connection"] == b"close"
    assert start["status"] == 200  # served: only its connection is handed back
    admission.lag = 0.0
    (start, _) = await call(app)
    assert headers_of(start)[b"connection"] == b"keep-alive"


async def test_without_saturation_nothing_is_shed_whatever_the_count() -> None:
    admission, recorder = saturated_admission(), Recorder()
    admission.lag = 0.0
    admission.in_flight = 100
    (start, _) = await call(protected(answering(200), admission, recorder))
    assert start["status"] == 200
