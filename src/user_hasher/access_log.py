"""ASGI middleware writing one structured access-log line per HTTP request.

It logs the route template, never the path or query string: the user_id this
service exists to hide travels in the query string.
"""

import logging
import time

from user_hasher.asgi import ASGIApp, Message, Receive, Scope, Send
from user_hasher.routing import route_of

logger = logging.getLogger("user_hasher.access")


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
            logger.info(
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "route": route_of(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "http_version": scope.get("http_version"),
                },
            )

    return middleware
