"""ASGI middleware recording every HTTP response in the request metrics.

Label values are bounded by construction, so no request can create new series:
the route is Quart's matched template or "unmatched" (see routing.py), a method
outside the standard set is "other", and a status becomes its class.
"""

import time

from user_hasher.asgi import ASGIApp, Message, Receive, Scope, Send
from user_hasher.metrics.registry import Metrics
from user_hasher.routing import route_of

# RFC 9110's methods; h11 accepts any token as a method, so anything else is one value.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "other"

_STATUS_CLASSES = {2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    # A 1xx never ends an exchange and a status outside 100-599 is a server bug:
    # either way the client got no proper answer, which is what 5xx counts.
    return _STATUS_CLASSES.get(status // 100, "5xx")


def measure_requests(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    observe = metrics.observe_response

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
        except Exception:
            # Whatever was sent before, the client got an error or a cut-off response.
            status = 500
            raise
        finally:
            method = scope["method"]
            observe(
                (
                    method if method in KNOWN_METHODS else OTHER_METHOD,
                    route_of(scope),
                    status_class(status),
                ),
                time.perf_counter() - started,
            )

    return middleware
