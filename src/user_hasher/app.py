"""Builds the service: the Quart app with its blueprints, error handlers and the state its
handlers read, inside the ASGI layer (asgi.py) that serves /metrics on its own port, times
every response, sheds past the in-flight bound and closes connections while the pod drains.
Nothing is built at import: `__main__.py` calls `create_service` once.

The service owns the process's state and hands each part to what uses it: the lifecycle
(the handlers, the ASGI layer, the server's signals) and admission control's counts (the
ASGI layer and the accept gate count and decide on them, the metrics read the refusals).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr
from quart import Quart

from user_hasher.admission import Admission
from user_hasher.asgi import ASGIApp, ResponseObserver, wrap_app
from user_hasher.blueprints import health, user_hash
from user_hasher.errors import register_error_handlers
from user_hasher.lifecycle import Lifecycle
from user_hasher.logs import AccessLog
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings

logger = logging.getLogger(__name__)


class UserHasherApp(Quart):
    """The Quart app and what its handlers read from it (blueprints.serving_app), as typed
    attributes: the salt, still a secret until it is hashed, the metrics and the lifecycle."""

    def __init__(self, salt: SecretStr, metrics: Metrics, lifecycle: Lifecycle) -> None:
        super().__init__(__name__, static_folder=None)  # no static files: no /static/ route
        self.salt = salt
        self.metrics = metrics
        self.lifecycle = lifecycle


@dataclass(frozen=True)
class Service:
    asgi: ASGIApp  # what Hypercorn serves
    quart: UserHasherApp
    lifecycle: Lifecycle
    admission: Admission  # one per process: the accept gate (server.py) shares it
    metrics: Metrics
    settings: Settings


def create_app(settings: Settings, lifecycle: Lifecycle, metrics: Metrics) -> UserHasherApp:
    app = UserHasherApp(settings.USER_SALT, metrics, lifecycle)
    app.register_blueprint(user_hash.blueprint)
    app.register_blueprint(health.blueprint)
    register_error_handlers(app)

    @app.before_serving
    async def startup() -> None:
        if not settings.salt_is_set:
            logger.warning(
                "USER_SALT is unset: hashes use an empty salt", extra={"event": "salt_unset"}
            )
        lifecycle.mark_started()

    return app


def create_service(
    settings: Settings,
    *,
    admission: Admission | None = None,
    metrics: Metrics | None = None,
    observers: Sequence[ResponseObserver] | None = None,
) -> Service:
    """`observers` of every response default to the request metrics and the access log.
    A given `metrics` publishes the shed counts it was built with: to publish this
    service's, build it with `shed_counts=admission.shed` and give that `admission` too."""
    lifecycle = Lifecycle(drain_seconds=settings.DRAIN_SECONDS)
    admission = admission if admission is not None else Admission.from_settings(settings)
    metrics = metrics if metrics is not None else Metrics(settings, shed_counts=admission.shed)
    quart = create_app(settings, lifecycle, metrics)
    if observers is None:
        observers = (metrics.observe_response, AccessLog(settings.SLOW_REQUEST_SECONDS))
    asgi = wrap_app(
        quart,
        routes=frozenset(rule.rule for rule in quart.url_map.iter_rules()),
        lifecycle=lifecycle,
        admission=admission,
        metrics=metrics,
        observers=observers,
        metrics_port=settings.METRICS_PORT,
    )
    return Service(
        asgi=asgi,
        quart=quart,
        lifecycle=lifecycle,
        admission=admission,
        metrics=metrics,
        settings=settings,
    )
