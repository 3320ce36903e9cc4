"""Readiness and the drain that makes a rolling deploy lose no request.

Kubernetes removes a terminating pod from the Service endpoints at the same time
as it sends SIGTERM, and kube-proxies and load balancers learn that a moment later.
So on the first signal the pod turns unready but keeps serving for `drain_seconds`,
telling every keep-alive client to reconnect (asgi.py adds `Connection: close`
to every response while `draining`), which sends them to pods that are still ready;
only then does Hypercorn stop listening and finish in-flight requests.
"""

import asyncio
import contextlib
import enum
import logging

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Lifecycle:
    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.phase = Phase.STARTING
        self._drain_started = asyncio.Event()
        self._drain_cut_short = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.phase is Phase.SERVING

    @property
    def draining(self) -> bool:
        return self.phase is Phase.DRAINING

    def mark_started(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.SERVING
            logger.info("ready", extra={"event": "ready"})

    def begin_shutdown(self, reason: str) -> None:
        """First call starts the drain; any later call ends it early."""
        if self.draining:
            logger.warning("drain cut short", extra={"event": "drain_cut_short", "reason": reason})
            self._drain_cut_short.set()
            return
        self.phase = Phase.DRAINING
        logger.info(
            "draining",
            extra={"event": "draining", "reason": reason, "drain_seconds": self.drain_seconds},
        )
        self._drain_started.set()

    async def drained(self) -> None:
        """Returns once shutdown began and the drain ran out: Hypercorn's shutdown trigger."""
        await self._drain_started.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain_cut_short.wait(), timeout=self.drain_seconds)
        logger.info("drain finished; closing listener", extra={"event": "drained"})
