"""Assembles the service: the Quart app, its blueprints and error handlers, and the
ASGI middlewares around it. `hypercorn user_hasher.main:app` serves `app` as is;
`python -m user_hasher` adds the drain-aware lifecycle (see server.py).
"""

import logging
from dataclasses import dataclass

from quart import Quart
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from user_hasher.access_log import log_access
from user_hasher.asgi import ASGIApp
from user_hasher.blueprints import hashing, health
from user_hasher.lib.errors import APIError
from user_hasher.lifecycle import Lifecycle, close_connections_while_draining
from user_hasher.metrics.endpoint import serve_metrics
from user_hasher.metrics.registry import Metrics
from user_hasher.metrics.responses import record_responses
from user_hasher.observe import observe_responses
from user_hasher.routing import record_route
from user_hasher.settings import Settings, load_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    asgi: ASGIApp
    quart: Quart
    lifecycle: Lifecycle
    settings: Settings


def create_quart_app(settings: Settings, lifecycle: Lifecycle, metrics: Metrics) -> Quart:
    app = Quart(__name__, static_folder=None)  # no static files: no /static/ route either
    app.config["USER_SALT"] = settings.USER_SALT.get_secret_value()
    app.extensions["lifecycle"] = lifecycle
    app.extensions["metrics"] = metrics

    app.before_request(record_route)
    app.register_blueprint(hashing.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)

    @app.before_serving
    async def startup() -> None:
        if not settings.salt_is_set:
            logger.warning(
                "USER_SALT is unset: hashes use an empty salt",
                extra={"event": "salt_unset"},
            )
        lifecycle.mark_started()

    return app


def create_service(settings: Settings | None = None) -> Service:
    settings = settings if settings is not None else load_settings()
    lifecycle = Lifecycle(drain_seconds=settings.DRAIN_SECONDS)
    metrics = Metrics(settings)
    quart_app = create_quart_app(settings, lifecycle, metrics)
    # Innermost first. Scrapes are answered by serve_metrics, outside the access log
    # and the request metrics (monitoring is not traffic), but inside the drain, so a
    # draining pod tells Prometheus to reconnect too.
    asgi: ASGIApp = observe_responses(quart_app, record_responses(metrics), log_access)
    asgi = serve_metrics(asgi, metrics)
    asgi = close_connections_while_draining(asgi, lifecycle)
    return Service(asgi=asgi, quart=quart_app, lifecycle=lifecycle, settings=settings)


def _error(status_code: int, message: str) -> tuple[dict[str, str], int]:
    return {"error": message}, status_code


async def _api_error(error: APIError) -> tuple[dict[str, str], int]:
    return _error(error.status_code, error.message)


async def _http_error(error: HTTPException) -> tuple[dict[str, str], int, dict[str, str]]:
    headers = {}
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return *_error(error.code or 500, (error.name or "error").lower()), headers


async def _unexpected_error(error: Exception) -> tuple[dict[str, str], int]:
    # The traceback goes to the log; the client learns nothing about internals.
    logger.exception("unhandled error", extra={"event": "unhandled_error"})
    return _error(500, "internal server error")


app = create_service().asgi
