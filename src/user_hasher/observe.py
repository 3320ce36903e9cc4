"""The one ASGI middleware that watches every HTTP response finish.

It records the status and the duration once and hands them to each observer (the
access log, the request metrics), so every request pays for one wrapper and one
clock read, however many things want to know how it went.
"""

import time
from collections.abc import Callable

from user_hasher.asgi import ASGIApp, Message, Receive, Scope, Send

# Called once per HTTP request with (scope, status, seconds); must not raise or await.
ResponseObserver = Callable[[Scope, int, float], None]


def observe_responses(app: ASGIApp, *observers: ResponseObserver) -> ASGIApp:
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
            seconds = time.perf_counter() - started
            for observer in observers:
                observer(scope, status, seconds)

    return middleware
