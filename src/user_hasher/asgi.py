"""The ASGI layer in front of the Quart app: what happens to every HTTP request outside
Quart. One wrapper (`wrap_app`), its jobs each a function named for it:

- `serve_metrics`: the metrics port (METRICS_PORT, a listener of its own) answers GET
  /metrics here and nothing else (404 JSON for any other path). A scrape is monitoring, not
  traffic, so it never reaches Quart and is not timed, counted or access-logged. The
  service port does not serve /metrics: there it is a path like any unknown one (404).
  Which port a request came in on is the listening socket's (`scope["server"]`), never a
  header a client writes, so no request can pass for a scrape or the other way round.
- `refuse_ambiguous_length`: a request with both Content-Length and Transfer-Encoding is
  refused (400) and its connection closed (RFC 9112, 6.3): a proxy in front may read its
  length the other way, and whatever follows it on the connection could be smuggled in.
- timing: everything else goes to the app, timed; its route, status and duration are
  handed to each `ResponseObserver` (the request metrics, the access log).
- admission (admission.py): a request for a `SHEDDABLE_ROUTES` route past the in-flight
  bound is answered 503 at once, with `Connection: close`, so the client's next request
  meets the accept gate (connections.py), which refuses for far less. The `Admission` is
  the service's (app.py), shared with the gate: the requests in the app are counted on
  it, and the requests shed here.
- `close_connection`: while the pod drains, every response carries `Connection: close`
  (lifecycle.py).

The jobs share one wrapper rather than being stacked as four middlewares: each layer would
add a call and an await to every request, and one clock read serves every observer.
"""

import json
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from typing import Any

from user_hasher.admission import SHED_BODY, SHED_HEADERS, Admission
from user_hasher.lifecycle import Lifecycle
from user_hasher.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Called once per request with (scope, route, status, seconds); must not raise or await.
ResponseObserver = Callable[[Scope, str, int, float], None]
Headers = Sequence[tuple[bytes, bytes]]

METRICS_PATH = "/metrics"
# The traffic admission control may shed; the probes and /metrics are never shed.
SHEDDABLE_ROUTES = frozenset({"/user_hash"})
# Every path that is no route shares this one label value: unknown paths must not
# create new log fields or metric series.
UNMATCHED_ROUTE = "unmatched"

_METRICS_METHODS = ("GET", "HEAD")  # Hypercorn drops the body of a HEAD response
_CONNECTION_CLOSE = (b"connection", b"close")
_AMBIGUOUS_LENGTH = "request has both Content-Length and Transfer-Encoding"


def wrap_app(
    app: ASGIApp,
    *,
    routes: Collection[str],
    lifecycle: Lifecycle,
    admission: Admission,
    metrics: Metrics,
    observers: Sequence[ResponseObserver],
    metrics_port: int,
) -> ASGIApp:
    """`routes`: the app's route templates; all are static paths, so a request's route is
    its path when the path is one of them. `metrics_port`: the listening port that serves
    /metrics and only /metrics; every other port serves the app."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: startup and shutdown hooks
            await app(scope, receive, send)
            return
        path = scope["path"]
        if arrived_on(scope, metrics_port):
            if path == METRICS_PATH:
                await serve_metrics(scope, send, metrics, closing=lifecycle.draining)
            else:
                await _respond_error(send, 404, "not found", closing=lifecycle.draining)
            return

        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if lifecycle.draining or admission.closes_connection():
                    message = close_connection(message)
            await send(message)

        try:
            if has_ambiguous_length(scope["headers"]):
                await refuse_ambiguous_length(send_observed)
            elif path in SHEDDABLE_ROUTES and (reason := admission.request_refusal()):
                admission.shed[reason] += 1
                await send_observed(
                    {"type": "http.response.start", "status": 503, "headers": SHED_HEADERS}
                )
                await send_observed({"type": "http.response.body", "body": SHED_BODY})
            else:
                admission.in_flight += 1
                try:
                    await app(scope, receive, send_observed)
                finally:
                    admission.in_flight -= 1
        except Exception:
            # Whatever was sent before, the client got an error or a cut-off response.
            status = 500
            raise
        finally:
            seconds = time.perf_counter() - started
            route = path if path in routes else UNMATCHED_ROUTE
            for observer in observers:
                observer(scope, route, status, seconds)

    return asgi


async def serve_metrics(scope: Scope, send: Send, metrics: Metrics, closing: bool) -> None:
    """Answers /metrics in the format the Accept headers ask for; 405 for other methods."""
    if scope["method"] not in _METRICS_METHODS:
        allow = (b"allow", ", ".join(_METRICS_METHODS).encode())
        await _respond_error(send, 405, "method not allowed", closing, extra_headers=[allow])
        return
    accepts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"accept"]
    body, headers = metrics.render(accepts)
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await _respond(send, 200, encoded, body, closing)


def arrived_on(scope: Scope, port: int) -> bool:
    """Whether the request came in on the listener bound to `port`. A server that names no
    address (a Unix socket, a test client) is not that listener."""
    server = scope.get("server")
    return server is not None and server[1] == port


def has_ambiguous_length(headers: Headers) -> bool:
    """Whether a request says its length two ways: the shape of a smuggling attempt."""
    has_content_length = has_transfer_encoding = False
    for name, _ in headers:
        if name == b"content-length":
            has_content_length = True
        elif name == b"transfer-encoding":
            has_transfer_encoding = True
    return has_content_length and has_transfer_encoding


async def refuse_ambiguous_length(send: Send) -> None:
    """A 400 that closes the connection, so nothing sent after the request is read."""
    await _respond_error(send, 400, _AMBIGUOUS_LENGTH, closing=True)


def close_connection(message: Message) -> Message:
    """The response start with `Connection: close` in place of any connection header: the
    client reconnects, and a draining pod is no longer among the Service's endpoints."""
    headers = [
        (name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"
    ]
    headers.append(_CONNECTION_CLOSE)
    return {**message, "headers": headers}


async def _respond_error(
    send: Send, status: int, message: str, closing: bool, extra_headers: Headers = ()
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), *extra_headers]
    await _respond(send, status, headers, body, closing)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, closing: bool
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if closing:
        headers.append(_CONNECTION_CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
