"""Logs: one JSON object per line on stdout for every logger, and the access log.

The access log records the route template, never the path or the query string: the
user_id this service exists to hide travels in the query string. Successful fast
requests are logged at DEBUG: the metrics count every one of them, and formatting a
JSON line per request would be the largest cost of serving it. Errors and slow
requests are logged at INFO, so they always reach the log.
"""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from user_hasher.asgi import Scope

access_logger = logging.getLogger("user_hasher.access")

# Kubelet probes every pod every few seconds: never worth a line at INFO.
_PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


def configure_logging(level: str, app_version: str, revision: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"app_version": app_version, "revision": revision},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


class AccessLog:
    """A response observer (see asgi.py) writing one line per request worth logging."""

    def __init__(self, slow_request_seconds: float) -> None:
        self.slow_request_seconds = slow_request_seconds

    def __call__(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        routine = status < 400 and seconds < self.slow_request_seconds
        level = logging.DEBUG if routine or route in _PROBE_ROUTES else logging.INFO
        if not access_logger.isEnabledFor(level):
            return
        access_logger.log(
            level,
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
