"""Runs the service on Hypercorn in one process: one worker per pod, scaling is by replicas.

Hypercorn's own signal handling closes the listener at once and its master/worker
mode delays signals; here SIGTERM/SIGINT start the drain in lifecycle.py instead, and
Hypercorn is told to stop only when the drain is over. While it serves, the app's port
is behind the accept gate of the service's admission control (connections.py).
"""

import asyncio
import gc
import logging
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from user_hasher.app import Service
from user_hasher.connections import admission_control
from user_hasher.settings import Settings

logger = logging.getLogger(__name__)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.HOST}]" if ":" in settings.HOST else settings.HOST
    # Both listeners in one serve: they open together, and both stay open through the drain
    # (Prometheus still scrapes a draining pod, so its last counts are not lost) and close
    # together when it ends. asgi.py tells them apart by the port a request came in on.
    config.bind = [f"{host}:{settings.PORT}", f"{host}:{settings.METRICS_PORT}"]
    config.graceful_timeout = settings.GRACEFUL_TIMEOUT_SECONDS
    config.accesslog = None  # logs.py writes its own, without the query string
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    # Request line plus headers may not exceed this; h11 answers 431 and closes
    # that one connection. Hypercorn's default, stated because memory depends on it.
    config.h11_max_incomplete_size = 16 * 1024
    # A connection with no request under way (idle keep-alive, or one that has not
    # finished sending its headers) is closed after this long: with the size above,
    # what bounds the memory that open connections hold (docs/capacity.md#sizing).
    config.keep_alive_timeout = 5
    return config


async def serve(service: Service) -> None:
    # What exists by now (modules, the app, its routes) lives as long as the process. Frozen
    # out of the garbage collector's sight, it is no longer walked by each full collection,
    # which stops the event loop, and so every request in flight, while it runs.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.lifecycle.begin_shutdown, signum.name)
    config = hypercorn_config(service.settings)
    async with admission_control(config, service.admission, service.settings):
        await hypercorn_serve(
            service.asgi,  # type: ignore[arg-type]
            config,
            shutdown_trigger=service.lifecycle.drained,
        )
    logger.info("stopped", extra={"event": "stopped"})
