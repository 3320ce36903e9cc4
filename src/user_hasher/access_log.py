"""One structured access-log line per HTTP request (a response observer, see observe.py).

It logs the route template, never the path or query string: the user_id this
service exists to hide travels in the query string.
"""

import logging

from user_hasher.asgi import Scope
from user_hasher.routing import route_of

logger = logging.getLogger("user_hasher.access")

# Kubelet probes every pod every few seconds; at INFO they would drown the traffic.
_PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


def log_access(scope: Scope, status: int, seconds: float) -> None:
    route = route_of(scope)
    logger.log(
        logging.DEBUG if route in _PROBE_ROUTES else logging.INFO,
        "request",
        extra={
            "event": "request",
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "http_version": scope.get("http_version"),
        },
    )
