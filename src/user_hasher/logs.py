"""One JSON object per line on stdout, for every logger (app, Hypercorn, access)."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, app_version: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"app_version": app_version},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
