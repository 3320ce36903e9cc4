"""The ASGI endpoint answering GET /metrics; every other request goes on to `app`.

It sits outside the access log and the request metrics: a scrape every few
seconds is monitoring, not traffic, and never pays for Quart.
"""

import json

import aioprometheus

from user_hasher.asgi import ASGIApp, Receive, Scope, Send
from user_hasher.metrics.registry import Metrics

METRICS_PATH = "/metrics"
_ALLOWED_METHODS = ("GET", "HEAD")  # Hypercorn drops the body of a HEAD response


def serve_metrics(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await app(scope, receive, send)
            return
        if scope["method"] not in _ALLOWED_METHODS:
            body = json.dumps({"error": "method not allowed"}).encode()
            headers = {"Content-Type": "application/json", "Allow": ", ".join(_ALLOWED_METHODS)}
            await _respond(send, 405, headers, body)
            return
        accepts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"accept"]
        metrics.refresh()
        body, headers = aioprometheus.render(metrics.registry, accepts)
        await _respond(send, 200, headers, body)

    return endpoint


async def _respond(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *((name.lower().encode(), value.encode()) for name, value in headers.items()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
