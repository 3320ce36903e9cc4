"""The servers the benchmark compares, each on the shipped service's Hypercorn config:

    python -m bench.servers VARIANT      (settings from the environment, like the service)

- raw:            a bare ASGI app doing the same hash: the ceiling of this server;
- quart:          a minimal Quart app with the same route: the framework's floor;
- no-access-log:  the shipped service with the access log left out;
- no-metrics:     the shipped service with the request metrics left out.
The shipped service itself is the real entry point, `python -m user_hasher`.
"""

import asyncio
import hashlib
import json
import sys
from urllib.parse import parse_qs

from hypercorn.asyncio import serve as hypercorn_serve
from quart import Quart, request

from user_hasher.admission import Admission
from user_hasher.app import create_service
from user_hasher.asgi import ASGIApp, Receive, Scope, Send
from user_hasher.logs import AccessLog, configure_logging
from user_hasher.metrics import Metrics
from user_hasher.server import hypercorn_config, serve
from user_hasher.settings import Settings, load_settings


def raw_app(salt: str) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        user_id = parse_qs(scope["query_string"].decode())["user_id"][0]
        body = json.dumps(hashlib.sha1((user_id + salt).encode()).hexdigest()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def quart_app(salt: str) -> ASGIApp:
    app = Quart(__name__)

    @app.get("/user_hash")
    async def user_hash() -> tuple[str, dict[str, str]]:
        digest = hashlib.sha1((request.args["user_id"] + salt).encode()).hexdigest()
        return json.dumps(digest), {"content-type": "application/json"}

    return app


VARIANTS = ("raw", "quart", "no-access-log", "no-metrics")


async def serve_variant(variant: str, settings: Settings) -> None:
    salt = settings.USER_SALT.get_secret_value()
    if variant in ("raw", "quart"):
        app = raw_app(salt) if variant == "raw" else quart_app(salt)
        await hypercorn_serve(app, hypercorn_config(settings))  # type: ignore[arg-type]
        return
    admission = Admission.from_settings(settings)  # so the variant's /metrics counts its refusals
    metrics = Metrics(settings, shed_counts=admission.shed)
    access_log = AccessLog(settings.SLOW_REQUEST_SECONDS)
    observers = {"no-access-log": [metrics.observe_response], "no-metrics": [access_log]}[variant]
    await serve(create_service(settings, admission=admission, metrics=metrics, observers=observers))


def main() -> None:
    settings = load_settings()
    configure_logging(settings.LOG_LEVEL, settings.APP_VERSION, settings.APP_REVISION)
    asyncio.run(serve_variant(sys.argv[1], settings))


if __name__ == "__main__":
    main()
