"""The ASGI layer in front of the Quart app, driven as ASGI: what each observer is
told, /metrics on the metrics port only (routing by the port a request came in on), the
refused ambiguous-length request, Connection: close while draining."""

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from proving.contract import CONTRACT_TARGET
from tests.metrics_text import HASHES, RESPONSES, by_response, value
from user_hasher.admission import Admission
from user_hasher.app import Service, create_app, create_service
from user_hasher.asgi import ASGIApp, Message, Receive, Scope, Send, arrived_on, wrap_app
from user_hasher.lifecycle import Lifecycle
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings

Observed = tuple[str, str, int]  # method, route, status
SERVICE_PORT = Settings().PORT
METRICS_PORT = Settings().METRICS_PORT


class Recorder:
    """A response observer that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[Observed] = []
        self.seconds: list[float] = []

    def __call__(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        self.calls.append((scope["method"], route, status))
        self.seconds.append(seconds)


def wrapped(app: ASGIApp, recorder: Recorder, lifecycle: Lifecycle | None = None) -> ASGIApp:
    return wrap_app(
        app,
        routes={"/user_hash", "/healthz"},
        lifecycle=lifecycle or Lifecycle(drain_seconds=0),
        admission=Admission.from_settings(Settings()),
        metrics=Metrics(Settings()),
        observers=[recorder],
        metrics_port=METRICS_PORT,
    )


def answering(status: int, headers: list[tuple[bytes, bytes]] | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"body"})

    return app


async def call(
    app: ASGIApp,
    method: str = "GET",
    path: str = "/user_hash",
    headers: list | None = None,
    port: int = SERVICE_PORT,
) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers or [],
        "server": ("10.244.0.7", port),
    }
    await app(scope, receive, send)
    return sent


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """Requests to the service port (httpx puts the URL's host and port in scope["server"])."""
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://test:{SERVICE_PORT}"
    ) as client:
        yield client


@pytest.fixture
async def metrics_client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """Requests to the metrics port."""
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://test:{METRICS_PORT}"
    ) as client:
        yield client


async def test_observers_get_the_route_for_known_paths_and_unmatched_for_others() -> None:
    recorder = Recorder()
    await call(wrapped(answering(200), recorder))
    await call(wrapped(answering(405), recorder), method="POST")
    await call(wrapped(answering(404), recorder), path="/user_hash/extra")
    await call(wrapped(answering(404), recorder), path="/private-user-4711")
    assert recorder.calls == [
        ("GET", "/user_hash", 200),
        ("POST", "/user_hash", 405),
        ("GET", "unmatched", 404),
        ("GET", "unmatched", 404),
    ]
    assert all(0 <= seconds < 5 for seconds in recorder.seconds)


async def test_the_duration_covers_the_whole_response() -> None:
    recorder = Recorder()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})

    await call(wrapped(slow, recorder))
    assert 0.05 <= recorder.seconds[0] < 5


async def test_an_exception_before_the_response_is_a_5xx_and_propagates() -> None:
    recorder = Recorder()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await call(wrapped(failing, recorder))
    assert recorder.calls == [("GET", "/user_hash", 500)]


async def test_an_exception_after_a_200_started_is_a_5xx() -> None:
    # The client got a cut-off response: a server error, whatever the status said.
    recorder = Recorder()

    async def failing_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await call(wrapped(failing_midway, recorder))
    assert recorder.calls == [("GET", "/user_hash", 500)]


async def test_lifespan_scopes_pass_through_unobserved() -> None:
    recorder = Recorder()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await wrapped(app, recorder)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
    assert recorder.calls == []


async def test_lifespan_reaches_the_app_both_ways_and_startup_makes_it_ready(
    service: Service,
) -> None:
    # Hypercorn's startup and shutdown events pass the ASGI layer to Quart, which runs the
    # startup hook (ready) and answers each event through the ASGI layer too.
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    for event in ("lifespan.startup", "lifespan.shutdown"):
        incoming.put_nowait({"type": event})
    answers: list[tuple[str, bool]] = []

    async def send(message: Message) -> None:
        answers.append((message["type"], service.lifecycle.ready))

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    await asyncio.wait_for(service.asgi(scope, incoming.get, send), timeout=10)
    assert answers == [("lifespan.startup.complete", True), ("lifespan.shutdown.complete", True)]


async def test_an_app_that_never_answers_is_observed_as_a_500() -> None:
    recorder = Recorder()

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    assert await call(wrapped(silent, recorder)) == []
    assert recorder.calls == [("GET", "/user_hash", 500)]


async def test_a_request_cancelled_before_answering_is_observed_as_a_500() -> None:
    # Hypercorn cancels a request still running when its graceful timeout runs out: the
    # client got no answer, and the cancellation must go on (it is not an error to handle).
    recorder = Recorder()

    async def abandoned(scope: Scope, receive: Receive, send: Send) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await call(wrapped(abandoned, recorder))
    assert recorder.calls == [("GET", "/user_hash", 500)]


async def test_connection_close_only_while_draining_and_other_headers_kept() -> None:
    lifecycle = Lifecycle(drain_seconds=0)
    kept = [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"4"),
    ]
    headers = [*kept[:2], (b"Connection", b"keep-alive"), *kept[2:]]
    app = wrapped(answering(200, headers), Recorder(), lifecycle)

    (start, body) = await call(app)
    assert start["headers"] == headers
    lifecycle.begin_shutdown("test")
    (start, body) = await call(app)
    assert start["status"] == 200
    # Every other header stays, in order (repeated ones too); only `connection` is replaced.
    assert start["headers"] == [*kept, (b"connection", b"close")]
    assert body == {"type": "http.response.body", "body": b"body"}


async def test_connection_close_while_draining_when_the_app_sends_no_headers_field() -> None:
    # ASGI lets a response start without a `headers` key.
    lifecycle = Lifecycle(drain_seconds=0)

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    lifecycle.begin_shutdown("test")
    (start, _) = await call(wrapped(bare, Recorder(), lifecycle))
    assert start == {"type": "http.response.start", "status": 204, "headers": [_CLOSE]}


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked"), (b"host", b"x"), (b"content-length", b"0")],
    ],
)
async def test_content_length_with_transfer_encoding_is_refused_and_closed(headers) -> None:
    recorder = Recorder()
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    (start, body) = await call(wrapped(app, recorder), method="POST", headers=headers)
    assert reached == [], "the request must not reach the app"
    assert start["status"] == 400
    assert (b"connection", b"close") in start["headers"]
    assert (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body["body"]) == {
        "error": "request has both Content-Length and Transfer-Encoding"
    }
    assert recorder.calls == [("POST", "/user_hash", 400)]


@pytest.mark.parametrize(
    "headers", [[(b"content-length", b"5")], [(b"transfer-encoding", b"chunked")], []]
)
async def test_one_length_header_is_fine(headers) -> None:
    recorder = Recorder()
    await call(wrapped(answering(200), recorder), method="POST", headers=headers)
    assert recorder.calls == [("POST", "/user_hash", 200)]


async def test_metrics_is_answered_unobserved_and_never_reaches_the_app() -> None:
    recorder = Recorder()
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    (start, body) = await call(wrapped(app, recorder), path="/metrics", port=METRICS_PORT)
    assert start["status"] == 200
    assert b"user_hasher_build_info" in body["body"]
    assert reached == []
    assert recorder.calls == []


# ASGI servers expect lowercase header names; these are every header /metrics sends.
_CLOSE = (b"connection", b"close")
_JSON = (b"content-type", b"application/json")
_TEXT_FORMAT = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_ALLOW = (b"allow", b"GET, HEAD")


@pytest.mark.parametrize("draining", [False, True])
@pytest.mark.parametrize(
    ("method", "status", "headers"),
    [("GET", 200, [_TEXT_FORMAT]), ("HEAD", 200, [_TEXT_FORMAT]), ("POST", 405, [_JSON, _ALLOW])],
)
async def test_metrics_headers_exactly(
    method: str, status: int, headers: list, draining: bool
) -> None:
    lifecycle = Lifecycle(drain_seconds=0)
    if draining:
        lifecycle.begin_shutdown("test")
    (start, body) = await call(
        wrapped(answering(200), Recorder(), lifecycle),
        method=method,
        path="/metrics",
        port=METRICS_PORT,
    )
    length = (b"content-length", str(len(body["body"])).encode())
    assert start["status"] == status
    assert start["headers"] == [*headers, length, *([_CLOSE] if draining else [])]


# What Prometheus 2.x and 3.x send (scrape_protocols defaults); aioprometheus answers
# the text format whatever it is offered.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT, "text/plain", "garbage/;;"])
async def test_metrics_answers_the_text_format(metrics_client: httpx.AsyncClient, accept) -> None:
    response = await metrics_client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "\n# TYPE user_hasher_build_info gauge\n" in f"\n{response.text}"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "BREW"])
async def test_metrics_refuses_other_methods(
    metrics_client: httpx.AsyncClient, method: str
) -> None:
    response = await metrics_client.request(method, "/metrics")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "method not allowed"}


async def test_metrics_while_draining_closes_the_connection(
    service: Service, metrics_client: httpx.AsyncClient
) -> None:
    assert "connection" not in (await metrics_client.get("/metrics")).headers
    service.lifecycle.begin_shutdown("test")
    # Still answered while the pod drains: Prometheus collects its last counts.
    response = await metrics_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("target", [CONTRACT_TARGET, "/healthz", "/readyz", "/", "/metrics/", "/x"])
async def test_the_metrics_port_serves_nothing_but_metrics(
    service: Service, metrics_client: httpx.AsyncClient, target: str
) -> None:
    service.lifecycle.mark_started()  # /readyz would answer 200 on the service port
    response = await metrics_client.get(target)
    assert (response.status_code, response.json()) == (404, {"error": "not found"})
    assert response.headers["content-type"] == "application/json"
    assert "connection" not in response.headers
    # Neither a hash computed nor a response counted: the app never saw it.
    text = service.metrics.render([])[0].decode()
    assert by_response(text, RESPONSES) == {}
    assert value(text, HASHES) == 0


async def test_the_metrics_port_refuses_other_paths_without_reaching_the_app_or_observers() -> None:
    recorder = Recorder()
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    lifecycle = Lifecycle(drain_seconds=0)
    lifecycle.begin_shutdown("test")
    (start, body) = await call(wrapped(app, recorder, lifecycle), port=METRICS_PORT)
    assert start["status"] == 404
    assert start["headers"] == [_JSON, (b"content-length", b"22"), _CLOSE]
    assert json.loads(body["body"]) == {"error": "not found"}
    assert reached == []
    assert recorder.calls == []


async def test_the_service_port_does_not_serve_metrics(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get("/metrics")
    assert (response.status_code, response.json()) == (404, {"error": "not found"})
    # An unknown path there like any other: counted and logged as one.
    text = service.metrics.render([])[0].decode()
    assert by_response(text, RESPONSES) == {("GET", "unmatched", "4xx"): 1}
    assert (await client.get("/user_hash", params={"user_id": "TESTUSERID"})).status_code == 200


@pytest.mark.parametrize(
    ("server", "on_metrics_port"),
    [
        (("10.244.0.7", METRICS_PORT), True),
        (("::", METRICS_PORT), True),
        (("10.244.0.7", SERVICE_PORT), False),
        (("10.244.0.7", METRICS_PORT + 1), False),
        (None, False),  # ASGI: a Unix socket, or no address known
    ],
)
def test_a_request_arrives_on_the_port_of_its_listener(server, on_metrics_port: bool) -> None:
    assert arrived_on({"type": "http", "server": server}, METRICS_PORT) is on_metrics_port


def test_a_scope_without_a_server_is_not_on_the_metrics_port() -> None:
    assert arrived_on({"type": "http"}, METRICS_PORT) is False


async def test_a_handler_exception_in_the_real_stack_is_a_json_500_counted_as_5xx() -> None:
    settings = Settings()
    lifecycle, metrics = Lifecycle(drain_seconds=0), Metrics(settings)
    quart = create_app(settings, lifecycle, metrics)

    async def broken() -> str:
        raise RuntimeError("internal detail that must not leak")

    quart.add_url_rule("/broken", view_func=broken)
    app = wrap_app(
        quart,
        routes={"/broken"},
        lifecycle=lifecycle,
        admission=Admission.from_settings(settings),
        metrics=metrics,
        observers=[metrics.observe_response],
        metrics_port=METRICS_PORT,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert by_response(metrics.render([])[0].decode(), RESPONSES) == {("GET", "/broken", "5xx"): 1}


def test_every_route_is_a_static_path() -> None:
    # The ASGI layer finds a request's route by its path; a route with variables
    # (`/users/<id>`) would be labelled "unmatched" and needs a lookup through Quart.
    service = create_service(Settings())
    rules = list(service.quart.url_map.iter_rules())
    assert {rule.rule for rule in rules} == {"/user_hash", "/healthz", "/readyz"}
    assert all(not rule.arguments for rule in rules)
