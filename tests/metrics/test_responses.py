"""The response recorder behind observe_responses, driven as an ASGI app: labels,
status classes, exceptions."""

import httpx
import pytest
from aioprometheus import render

from tests.metrics.support import RESPONSES, by_response
from user_hasher.asgi import Message, Receive, Scope, Send
from user_hasher.main import Service
from user_hasher.metrics.registry import Metrics
from user_hasher.metrics.responses import record_responses, status_class
from user_hasher.observe import observe_responses
from user_hasher.routing import ROUTE_SCOPE_KEY
from user_hasher.settings import Settings


def measured(app, metrics: Metrics):
    return observe_responses(app, record_responses(metrics))


def responses(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    metrics.refresh()
    return dict(by_response(render(metrics.registry, [])[0].decode(), RESPONSES))


def app_answering(status: int, route: str | None = "/user_hash"):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if route is not None:
            scope[ROUTE_SCOPE_KEY] = route  # as Quart's before_request hook does
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def call(app, method: str = "GET") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/x", "headers": []}, receive, send)
    return sent


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(200, "2xx"), (204, "2xx"), (301, "3xx"), (404, "4xx"), (499, "4xx")],
        *[(500, "5xx"), (503, "5xx"), (101, "5xx"), (600, "5xx"), (0, "5xx")],
    ],
)
def test_status_class(status: int, expected: str) -> None:
    assert status_class(status) == expected


async def test_labels_come_from_method_route_and_status() -> None:
    metrics = Metrics(Settings())
    await call(measured(app_answering(200), metrics))
    await call(measured(app_answering(200), metrics))
    await call(measured(app_answering(404, route=None), metrics), method="DELETE")
    assert responses(metrics) == {
        ("GET", "/user_hash", "2xx"): 2,
        ("DELETE", "unmatched", "4xx"): 1,
    }


@pytest.mark.parametrize("method", ["BREW", "get", "PROPFIND", "X" * 100])
async def test_methods_outside_the_standard_set_are_one_value(method: str) -> None:
    metrics = Metrics(Settings())
    await call(measured(app_answering(405, route=None), metrics), method=method)
    assert responses(metrics) == {("other", "unmatched", "4xx"): 1}


async def test_an_exception_before_the_response_counts_as_5xx_and_propagates() -> None:
    metrics = Metrics(Settings())

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_SCOPE_KEY] = "/user_hash"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await call(measured(failing, metrics))
    assert responses(metrics) == {("GET", "/user_hash", "5xx"): 1}


async def test_an_exception_after_a_200_started_counts_as_5xx() -> None:
    # The client got a cut-off response: that is a server error, whatever the status said.
    metrics = Metrics(Settings())

    async def failing_midway(scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_SCOPE_KEY] = "/user_hash"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await call(measured(failing_midway, metrics))
    assert responses(metrics) == {("GET", "/user_hash", "5xx"): 1}


async def test_non_http_scopes_pass_through_uncounted() -> None:
    metrics = Metrics(Settings())
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await measured(app, metrics)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]
    assert responses(metrics) == {}


async def test_a_handler_exception_in_the_real_stack_is_a_json_500_counted_as_5xx(
    service: Service,
) -> None:
    async def broken() -> str:
        raise RuntimeError("internal detail that must not leak")

    service.quart.add_url_rule("/broken", view_func=broken)
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert responses(service.quart.extensions["metrics"]) == {("GET", "/broken", "5xx"): 1}
