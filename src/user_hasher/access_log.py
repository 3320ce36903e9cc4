"""ASGI middleware writing one structured access-log line per HTTP request.

It logs the route template, never the path or query string: the user_id this
service exists to hide travels in the query string.
"""

import logging
import time

from user_hasher.asgi import ASGIApp, Message, Receive, Scope, Send
from user_hasher.routing import route_of

logger = logging.getLogger("user_hasher.access")

# Kubelet probes every pod every few seconds; at INFO they would drown the traffic.
_PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


def log_access(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_recording)
        finally:
            route = route_of(scope)
            logger.log(
                logging.DEBUG if route in _PROBE_ROUTES else logging.INFO,
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "http_version": scope.get("http_version"),
                },
            )

    return middleware
