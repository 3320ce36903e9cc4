"""The accept gate: a connection over the bound is refused before anything in this process
spends more on it than a few system calls.

Hypercorn has no connection limit and no accept hook: it hands its listening socket to
`asyncio.start_server` (hypercorn/asyncio/run.py), whose selector loop calls that
socket's `accept()` each time it is readable (selector_events._accept_connection) and
only then builds a protocol, a transport and Hypercorn's per-connection task. So the
listening socket here is a `GatedSocket`: its `accept()` asks the `ConnectionGate`
about each new peer and returns only the connections let in; asyncio never sees the
others.

Let in always: peers in `exempt` (the node, whose kubelet sends the probes, and
loopback): a probe is never refused for load. Refused otherwise: past `max_connections`
open (memory, docs/capacity.md#sizing), or past admission.py's bound on what is served
at once.

A refused connection is sent the prebuilt 503 (admission.REFUSED_CONNECTION) and closed,
at once while the refusals stay under `REFUSALS_PER_SECOND`. Past that rate it waits,
unread, until the budget allows its turn (oldest first): a client that reconnects as
soon as it is refused (wrk does, as do naive retry loops) would otherwise turn every
refusal into another one, and with enough of them take the core from the requests
being served. Waiting connections cost a file descriptor and the kernel's buffers, no
CPU; they count against `max_connections`.

The listen backlog is raised to `ACCEPT_BACKLOG`: the kernel drops a SYN when the
accept queue is full, and a dropped SYN is retried a second later, which is how a
probe would come to take a second under a connection storm.
"""

import asyncio
import collections
import contextlib
import math
import socket
import time
from collections.abc import AsyncIterator, Collection

from hypercorn.config import Config, Sockets

from user_hasher.admission import CONNECTIONS, REFUSED_CONNECTION, Admission
from user_hasher.settings import Settings

# Connections accepted per accept() call at most, refused or waiting, before the event
# loop serves what it has: ~1-5 ms of the core (a refusal costs ~40 us, parking ~5 us).
MAX_REFUSALS_PER_ACCEPT = 128
# 2,500 refusals a second at ~40 us each take ~10% of the core at most: the excess of
# an open loop at 3x saturation is answered at once, a storm of reconnecting clients waits.
REFUSALS_PER_SECOND = 2500.0
# How often waiting connections are answered when the budget allows: their 503 comes at
# most this much later than the budget would allow.
ANSWER_INTERVAL_SECONDS = 0.01
# All a refused client may have sent by then: read and dropped, so the close is no reset.
REQUEST_BYTES = 65536
# Beyond one loop iteration's arrivals under a storm, within Linux's default somaxconn.
ACCEPT_BACKLOG = 1024
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


class ConnectionGate:
    def __init__(
        self,
        admission: Admission,
        max_connections: int,
        exempt: Collection[str] = LOOPBACK,
        refusals_per_second: float = REFUSALS_PER_SECOND,
    ) -> None:
        self.admission = admission
        self.max_connections = max_connections if admission.enabled else math.inf
        self.exempt = frozenset(exempt)
        self.refusals_per_second = refusals_per_second
        self.open = 0  # connections let in and not yet closed, exempt peers' too
        self.waiting: collections.deque[int] = collections.deque()  # refused, not answered
        self._budget = math.inf  # full: the first _spend clamps it to one interval's worth
        self._budget_at = time.monotonic()
        self._answering: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, admission: Admission, settings: Settings) -> "ConnectionGate":
        exempt = {*settings.SHED_EXEMPT_ADDRESSES, settings.NODE_IP}
        return cls(admission, settings.MAX_CONNECTIONS, exempt)

    def refusal(self) -> str | None:
        """Why a new connection from a peer not exempt is refused, or None."""
        if self.open + len(self.waiting) >= self.max_connections:
            return CONNECTIONS
        return self.admission.connection_refusal()

    def refuse(self, fd: int, reason: str) -> None:
        """Counts the refusal and answers it now, or queues it when over the budget."""
        self.admission.shed[reason] += 1
        if reason == CONNECTIONS or (not self.waiting and self._spend()):
            # At max_connections nothing more may wait: answered whatever the budget.
            answer(fd)
            return
        self.waiting.append(fd)
        if self._answering is None:
            loop = asyncio.get_running_loop()
            self._answering = loop.call_later(ANSWER_INTERVAL_SECONDS, self._answer_waiting)

    def _spend(self) -> bool:
        """Takes one refusal from the budget, refilled at refusals_per_second (a token
        bucket holding one interval's worth); False when it is empty."""
        now = time.monotonic()
        capacity = self.refusals_per_second * ANSWER_INTERVAL_SECONDS
        refill = (now - self._budget_at) * self.refusals_per_second
        self._budget = min(capacity, self._budget + refill)
        self._budget_at = now
        if self._budget < 1:
            return False
        self._budget -= 1
        return True

    def _answer_waiting(self) -> None:
        self._answering = None
        while self.waiting and self._spend():
            answer(self.waiting.popleft())
        if self.waiting:
            loop = asyncio.get_running_loop()
            self._answering = loop.call_later(ANSWER_INTERVAL_SECONDS, self._answer_waiting)


def answer(fd: int) -> None:
    """Sends the 503 and closes. What the client sent so far is read first: closing with
    unread data would send a reset, which can lose the 503 on its way."""
    connection = socket.socket(fileno=fd)
    try:
        connection.send(REFUSED_CONNECTION)  # ~200 bytes into an empty buffer: never blocks
        connection.recv(REQUEST_BYTES, socket.MSG_DONTWAIT)
    except OSError:  # nothing sent yet (BlockingIOError), or the peer is gone
        pass
    finally:
        connection.close()


class GatedSocket(socket.socket):
    """A listening socket whose accept() lets in only what its gate admits."""

    gate: ConnectionGate

    def accept(self) -> tuple[socket.socket, object]:
        gate = self.gate
        for _ in range(MAX_REFUSALS_PER_ACCEPT):
            fd, address = self._accept()  # type: ignore[attr-defined]
            exempt = isinstance(address, tuple) and address[0] in gate.exempt
            reason = None if exempt else gate.refusal()
            if reason is None:
                return OpenConnection(gate, exempt, fd), address
            gate.refuse(fd, reason)
        raise BlockingIOError  # asyncio reads it as "accept queue empty", until next time


class OpenConnection(socket.socket):
    """An admitted connection, counted while open and while busy.

    Busy: from the first bytes of a request read (recv) to the first bytes of its response
    written (send), as asyncio's transport calls these on this socket: over HTTP/1.1, a
    request in flight, whether it waits in the event loop's queue, in h11 or in the app.
    A new connection is busy from its accept: its client connected to send a request, and
    a burst of new connections accepted in one loop iteration, none of them read yet, must
    not all pass the bound (on a pod throttled by its CPU limit, a burst is the connections
    of the whole throttled period). Idle keep-alive connections are not busy, so a client
    pool with many of them is not refused for their number.

    Open until closed, or until the client has closed its side: Hypercorn holds the
    socket until its idle timer (keep_alive_timeout, 5 s) ends, and the slot must not
    wait for it.
    """

    def __init__(self, gate: ConnectionGate, exempt: bool, fd: int) -> None:
        super().__init__(fileno=fd)  # family, type and protocol read from the descriptor
        self._gate: ConnectionGate | None = gate
        # Exempt peers' requests are never refused, and their count refuses no one else.
        self._admission = None if exempt else gate.admission
        self._busy_in: Admission | None = None  # whose count holds this busy connection
        gate.open += 1
        if self._admission is not None:
            self._admission.open += 1
            self._busy_in = self._admission
            self._admission.busy += 1

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if not data:  # the client's FIN: it sends nothing more
            self._release()
        elif self._busy_in is None and self._admission is not None:
            self._busy_in = self._admission
            self._busy_in.busy += 1
        return data

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        self._idle()
        return super().send(data, flags)

    def close(self) -> None:
        self._release()
        super().close()

    def _idle(self) -> None:
        if self._busy_in is not None:
            self._busy_in.busy -= 1
            self._busy_in = None

    def _release(self) -> None:
        self._idle()
        if self._gate is not None:
            self._gate.open -= 1
            if self._admission is not None:
                self._admission.open -= 1
            self._gate = None


def gated(sock: socket.socket, gate: ConnectionGate) -> GatedSocket:
    """The same listening socket (its file descriptor moves over) behind `gate`."""
    timeout = sock.gettimeout()
    gated_socket = GatedSocket(fileno=sock.detach())
    gated_socket.settimeout(timeout)
    gated_socket.gate = gate
    return gated_socket


def gate_connections(config: Config, gate: ConnectionGate, port: int) -> None:
    """Makes the sockets Hypercorn creates for `config` that listen on `port` gated;
    others (a metrics-only port) are left as they are."""
    create_sockets = config.create_sockets

    def create_gated_sockets() -> Sockets:
        sockets = create_sockets()
        insecure = [
            gated(sock, gate) if _port(sock) == port else sock for sock in sockets.insecure_sockets
        ]
        return Sockets(sockets.secure_sockets, insecure, sockets.quic_sockets)

    config.create_sockets = create_gated_sockets  # type: ignore[method-assign]
    config.backlog = max(config.backlog, ACCEPT_BACKLOG)


def _port(sock: socket.socket) -> int | None:
    name = sock.getsockname()
    return name[1] if isinstance(name, tuple) else None


@contextlib.asynccontextmanager
async def admission_control(
    config: Config, admission: Admission, settings: Settings
) -> AsyncIterator[ConnectionGate]:
    """While it lasts: the app's port (settings.PORT) behind a gate and the event loop's
    lag watched. The one hook serve() needs. `admission`: the service's, the one its ASGI
    layer counts on, so the gate and the app see the same requests in flight."""
    gate = ConnectionGate.from_settings(admission, settings)
    gate_connections(config, gate, settings.PORT)
    lag_watch = asyncio.get_running_loop().create_task(admission.watch_event_loop())
    try:
        yield gate
    finally:
        lag_watch.cancel()
