"""An open-loop HTTP load generator on raw asyncio streams, for zero-downtime proofs.

Open loop: requests are scheduled at a fixed total rate, each at its intended start
time, whatever the server does, and a request's latency counts from that intended
time. A stalled server therefore shows up as latency and timeouts; a closed-loop
client would hide it by simply sending less. Two client kinds run at once, the two
a rolling deploy can hurt:

- keep-alive: a fixed pool of connections takes the scheduled requests in order. A
  connection is replaced when the server answers `Connection: close`, when it fails,
  or when the server closed it while idle (what any connection pool checks). When
  every connection is busy, requests wait for one, and the wait counts.
- new connection per request: each request opens its own connection at its intended
  time and asks the server to close it (`Connection: close`), so the TIME_WAIT state
  stays with the server instead of using up the client's ephemeral ports.

Every request is recorded: intended start, latency, client kind, status and, when it
failed, an error kind. There are no retries and no health checks: the generator
reports what a client sees. A request not answered within `timeout` of its intended
start is a timeout, so a run ends at most `timeout` after its last intended start.
Each body is checked against sha1(user_id + salt), computed here.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import hashlib
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class Client(enum.StrEnum):
    KEEP_ALIVE = "keep-alive"
    NEW_CONNECTION = "new-connection"


class Error(enum.StrEnum):
    REFUSED = "refused"  # nothing listens on the port
    RESET = "reset"  # the connection was reset, or broke while the request was written
    EMPTY = "empty-response"  # the connection closed before the first byte of an answer
    TIMEOUT = "timeout"  # no full answer within `timeout` of the intended start
    SERVER_ERROR = "5xx"
    BAD_RESPONSE = "bad-response"  # another status, a wrong body, or an answer cut short
    # No host at the address: a pod's IP gone (its ARP unanswered, ~3 s) while traffic is
    # still sent to it.
    UNREACHABLE = "unreachable"
    OTHER = "other"  # any other socket error, e.g. no ephemeral port left


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    salt: str  # the server's salt: every body is checked against sha1(user_id + salt)


@dataclass(frozen=True)
class LoadPlan:
    rate: float  # requests per second, both client kinds together
    duration: float  # seconds of scheduled requests; the run stops by itself after them
    max_requests: int  # or after this many, whichever comes first
    keep_alive_share: float = 0.5  # of the requests, the rest use a new connection each
    # Enough that at a few hundred requests per second of millisecond answers the pool
    # is rarely all busy (so steady-state queueing stays rare), and enough to spread
    # over several pods: a Service balances per connection, not per request.
    keep_alive_connections: int = 16
    timeout: float = 5.0  # seconds from the intended start to a full answer
    # Bounds the sockets a stalled server can make the generator hold open; requests
    # beyond it wait for a slot, and that wait counts in their latency.
    max_new_connections_in_flight: int = 512

    @classmethod
    def bounded(cls, rate: float, seconds: float, **options: Any) -> LoadPlan:
        """`rate` requests per second for `seconds`, and no more requests than that."""
        return cls(rate, seconds, math.ceil(rate * seconds), **options)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.duration > 0 and self.timeout > 0):
            raise ValueError(f"rate, duration and timeout must be positive: {self}")
        if not 0 <= self.keep_alive_share <= 1:
            raise ValueError(f"keep_alive_share must be within [0, 1]: {self}")
        if self.keep_alive_connections < 1 or self.max_new_connections_in_flight < 1:
            raise ValueError(f"connection counts must be at least 1: {self}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    intended: float  # intended start, seconds on the run's clock (LoadRun.elapsed)
    latency: float  # seconds from the intended start to the full answer or the failure
    client: Client
    status: int | None  # None when no answer came
    error: Error | None  # None: 200 with the expected body
    detail: str = ""  # the failure in a few words, for reports
    connected: bool = False  # this request opened a new connection
    # Seconds from the intended start until the request began: the generator's own
    # lag plus any wait for a free keep-alive connection. Part of the latency, kept
    # apart so a report can tell the client's queueing from the server's.
    wait: float = 0.0
    # The local "ip:port" of the request's connection: where its SYN left from, known also
    # when the connection was refused, so a refusal can be matched to a packet capture.
    source: str = ""
    closing: bool = False  # the answer said `Connection: close`

    @property
    def ok(self) -> bool:
        return self.error is None


def expected_body(user_id: str, salt: str) -> bytes:
    digest = hashlib.sha1((user_id + salt).encode(), usedforsecurity=False).hexdigest()
    return f'"{digest}"'.encode()


# --- One HTTP/1.1 exchange -----------------------------------------------------------

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Answer = tuple[str, int, bytes]  # user_id asked for, status, body


def _request_bytes(target: Target, user_id: str, close: bool) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return (
        f"GET /user_hash?user_id={user_id} HTTP/1.1\r\n"
        f"Host: {target.host}:{target.port}\r\n{connection}\r\n"
    ).encode()


async def _exchange(connection: Connection, request: bytes) -> tuple[int, bool, bytes]:
    """Sends one request; returns (status, server closes the connection, body)."""
    reader, writer = connection
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, closing = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            closing = "close" in value
    return status, closing, await reader.readexactly(length)


# What a failed exchange can raise; anything else is a bug here and stops the run.
_FAILURES = (OSError, EOFError, asyncio.LimitOverrunError, ValueError, IndexError)


def _classify(error: BaseException) -> Error:
    match error:
        case ConnectionRefusedError():
            return Error.REFUSED
        case ConnectionResetError() | ConnectionAbortedError() | BrokenPipeError():
            return Error.RESET
        case TimeoutError():
            return Error.TIMEOUT
        case OSError(errno=errno.EHOSTUNREACH | errno.ENETUNREACH):
            return Error.UNREACHABLE
        case asyncio.IncompleteReadError(partial=b""):
            return Error.EMPTY
        case OSError():
            return Error.OTHER
        case _:  # an answer cut short or not HTTP
            return Error.BAD_RESPONSE


def _close(connection: Connection | None) -> None:
    if connection is not None:
        connection[1].close()


def _local_address(sock: socket.socket) -> str:
    try:
        host, port, *_ = sock.getsockname()
    except OSError:
        return ""
    return f"{host}:{port}"


class _Dial:
    """One connection attempt. `source` is the local address its SYN left from, set once
    the connect began, whether it then succeeded or failed (asyncio.open_connection alone
    would not tell which port a refused connection used)."""

    def __init__(self) -> None:
        self.source = ""

    async def open(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        addresses = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        failure: OSError = OSError(f"{target.host} resolves to no address")
        for family, kind, protocol, _, address in addresses:  # as open_connection tries them
            sock = socket.socket(family, kind, protocol)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except BaseException as error:
                self.source = _local_address(sock)
                sock.close()
                if not isinstance(error, OSError):
                    raise
                failure = error
                continue
            self.source = _local_address(sock)
            return await asyncio.open_connection(sock=sock)
        raise failure


def _client_kind(n: int, keep_alive_share: float) -> Client:
    """The kind of the n-th request (or client): the keep-alive ones spread evenly."""
    keep_alive = math.floor((n + 1) * keep_alive_share) > math.floor(n * keep_alive_share)
    return Client.KEEP_ALIVE if keep_alive else Client.NEW_CONNECTION


# --- The open-loop run ----------------------------------------------------------------


class LoadRun:
    """Runs a LoadPlan against a target on its own thread and event loop.

        with LoadRun(target, plan) as run:  # starts the schedule
            ...                             # run.elapsed() is the clock records use
        run.records                         # complete once the block is left

    Leaving the block stops scheduling (requests already due still finish, within
    their timeout); `wait()` instead lets the plan run to its end. `clock_origin`
    (a time.monotonic() value) lets several runs share one clock.
    """

    def __init__(self, target: Target, plan: LoadPlan, clock_origin: float | None = None) -> None:
        self.target, self.plan = target, plan
        self.origin = time.monotonic() if clock_origin is None else clock_origin
        self.records: list[RequestRecord] = []
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="openloop", daemon=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.origin

    def start(self) -> LoadRun:
        self._thread.start()
        return self

    def snapshot(self) -> list[RequestRecord]:
        """The records so far, while the run goes on (it appends from its own thread)."""
        return self.records.copy()

    def answered(self) -> int:
        """How many requests so far got the right answer."""
        return sum(record.ok for record in self.snapshot())

    def stop(self) -> list[RequestRecord]:
        self._stop.set()
        return self.wait()

    def wait(self) -> list[RequestRecord]:
        """Blocks until the run ended (by its plan or by stop()); returns the records."""
        self._thread.join(self.plan.duration + self.plan.timeout + 30)
        if self._thread.is_alive():
            raise TimeoutError("the load generator did not stop")
        if self._failure is not None:
            raise RuntimeError("the load generator failed") from self._failure
        return self.records

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # reported to the caller by wait()
            self._failure = error

    def _schedule(self, start: float) -> Iterator[tuple[int, float, Client]]:
        plan = self.plan
        count = min(plan.max_requests, math.ceil(plan.duration * plan.rate))
        for n in range(count):
            yield n, start + n / plan.rate, _client_kind(n, plan.keep_alive_share)

    async def _run(self) -> None:
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        workers = [
            asyncio.create_task(self._keep_alive_worker(queue))
            for _ in range(self.plan.keep_alive_connections)
        ]
        slots = asyncio.Semaphore(self.plan.max_new_connections_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        for n, intended, client in self._schedule(self.elapsed()):
            if (delay := intended - self.elapsed()) > 0:
                await asyncio.sleep(delay)
            if self._stop.is_set():
                break
            if client is Client.KEEP_ALIVE:
                queue.put_nowait((n, intended))
            else:
                task = asyncio.create_task(self._new_connection_request(n, intended, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers, *in_flight)

    def _deadline(self, intended: float) -> float:
        """The request's timeout as an event-loop time (asyncio's clock is monotonic)."""
        return self.origin + intended + self.plan.timeout

    def _record(
        self,
        attempt: _Attempt,
        status: int | None,
        error: Error | None,
        detail: str = "",
        closing: bool = False,
    ) -> None:
        latency, wait = self.elapsed() - attempt.intended, attempt.began - attempt.intended
        self.records.append(
            RequestRecord(
                attempt.intended,
                latency,
                attempt.client,
                status,
                error,
                detail,
                attempt.connected,
                wait,
                attempt.source,
                closing,
            )
        )

    def _record_answer(self, attempt: _Attempt, answer: Answer, closing: bool) -> None:
        user_id, status, body = answer
        if status == 200 and body == expected_body(user_id, self.target.salt):
            self._record(attempt, status, None, closing=closing)
            return
        error = Error.SERVER_ERROR if status >= 500 else Error.BAD_RESPONSE
        self._record(attempt, status, error, f"status {status}: {body[:60]!r}", closing)

    def _record_failure(self, attempt: _Attempt, failure: Exception) -> None:
        detail = f"{type(failure).__name__}: {failure}"[:120]
        self._record(attempt, None, _classify(failure), detail)

    async def _keep_alive_worker(self, queue: asyncio.Queue[tuple[int, float] | None]) -> None:
        connection: Connection | None = None
        source = ""
        try:
            while (item := await queue.get()) is not None:
                n, intended = item
                attempt = _Attempt(intended, self.elapsed(), Client.KEEP_ALIVE, False, source)
                if time.monotonic() >= self._deadline(intended):
                    waited = "no keep-alive connection was free before the timeout"
                    self._record(attempt, None, Error.TIMEOUT, waited)
                    continue
                if connection is not None and connection[0].at_eof():
                    _close(connection)  # the server closed it while idle
                    connection = None
                attempt.connected = connection is None
                user_id = f"openloop-{n}"
                dial = _Dial()
                try:
                    async with asyncio.timeout_at(self._deadline(intended)):
                        if connection is None:
                            try:
                                connection = await dial.open(self.target)
                            finally:
                                source = attempt.source = dial.source
                        request = _request_bytes(self.target, user_id, close=False)
                        status, closing, body = await _exchange(connection, request)
                except _FAILURES as failure:
                    self._record_failure(attempt, failure)
                    _close(connection)
                    connection = None
                    continue
                self._record_answer(attempt, (user_id, status, body), closing)
                if closing:
                    _close(connection)
                    connection = None
        finally:
            _close(connection)

    async def _new_connection_request(
        self, n: int, intended: float, slots: asyncio.Semaphore
    ) -> None:
        user_id = f"openloop-{n}"
        connection: Connection | None = None
        attempt = _Attempt(intended, math.nan, Client.NEW_CONNECTION, True)
        dial = _Dial()
        try:
            async with asyncio.timeout_at(self._deadline(intended)), slots:
                attempt.began = self.elapsed()
                connection = await dial.open(self.target)
                request = _request_bytes(self.target, user_id, close=True)
                status, closing, body = await _exchange(connection, request)
        except _FAILURES as failure:
            if math.isnan(attempt.began):  # never got a slot
                attempt.began = self.elapsed()
            attempt.source = dial.source
            self._record_failure(attempt, failure)
            return
        finally:
            _close(connection)
        attempt.source = dial.source
        self._record_answer(attempt, (user_id, status, body), closing)


@dataclass
class _Attempt:
    """What a request's record needs beyond its outcome."""

    intended: float
    began: float
    client: Client
    connected: bool
    source: str = ""


# --- Closed-loop saturation probe ---------------------------------------------------


@dataclass(frozen=True)
class Saturation:
    connections: int
    keep_alive_share: float
    seconds: float
    requests: int  # answered 200 with the expected body
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def measure_saturation(
    target: Target,
    connections: int = 8,
    seconds: float = 3.0,
    timeout: float = 5.0,
    keep_alive_share: float = 1.0,
) -> Saturation:
    """Closed loop: `connections` clients each send their next request as soon as the
    last is answered, for `seconds`. With a `keep_alive_share` below 1 the other clients
    open a new connection per request, which costs both sides more: probe with the mix
    the open loop will send. The rate is what the target (and this
    generator, on the same machine) can sustain; pick an open-loop rate below it."""
    return asyncio.run(_saturate(target, connections, seconds, timeout, keep_alive_share))


async def _saturate(
    target: Target,
    connections: int,
    seconds: float,
    request_timeout: float,
    keep_alive_share: float,
) -> Saturation:
    counts = Counter[bool]()
    end = time.monotonic() + seconds

    async def client(number: int) -> None:
        keep_alive = _client_kind(number, keep_alive_share) is Client.KEEP_ALIVE
        connection: Connection | None = None
        sequence = 0
        try:
            while time.monotonic() < end:
                user_id = f"saturation-{number}-{sequence}"
                sequence += 1
                try:
                    async with asyncio.timeout(request_timeout):
                        if connection is None:
                            connection = await _Dial().open(target)
                        request = _request_bytes(target, user_id, close=not keep_alive)
                        status, closing, body = await _exchange(connection, request)
                except _FAILURES:
                    counts[False] += 1
                    _close(connection)
                    connection = None
                    continue
                counts[status == 200 and body == expected_body(user_id, target.salt)] += 1
                if closing or not keep_alive:
                    _close(connection)
                    connection = None
        finally:
            _close(connection)

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(connections)))
    elapsed = time.monotonic() - started
    return Saturation(connections, keep_alive_share, elapsed, counts[True], counts[False])


# --- Summaries ------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of unsorted values; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Summary:
    requests: int
    failed: int
    requests_by_client: dict[str, int]
    failed_by_client: dict[str, int]
    errors_by_kind: dict[str, int]
    p50: float | None  # seconds, over the successful requests
    p99: float | None
    p99_wait: float | None  # seconds, over all requests: RequestRecord.wait


def _count(names: Iterable[str]) -> dict[str, int]:
    return {str(name): count for name, count in sorted(Counter(names).items())}


def keep_alive_closes(records: Iterable[RequestRecord]) -> int:
    """Answers on keep-alive connections that said `Connection: close` (a draining server
    says it; a new-connection request asks for it, so its answers do not count)."""
    return sum(r.closing for r in records if r.client is Client.KEEP_ALIVE)


def in_window(
    records: Iterable[RequestRecord], start: float = -math.inf, end: float = math.inf
) -> list[RequestRecord]:
    """The records whose intended start lies in [start, end)."""
    return [record for record in records if start <= record.intended < end]


def summarize(
    records: Iterable[RequestRecord], start: float = -math.inf, end: float = math.inf
) -> Summary:
    """Counts, errors by kind and by client kind, and latency percentiles of the
    requests intended in [start, end). Failed requests are counted, not timed."""
    window = in_window(records, start, end)
    failures = [record for record in window if not record.ok]
    latencies = [record.latency for record in window if record.ok]
    return Summary(
        requests=len(window),
        failed=len(failures),
        requests_by_client=_count(record.client for record in window),
        failed_by_client=_count(record.client for record in failures),
        errors_by_kind=_count(str(record.error) for record in failures),
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        p99_wait=percentile([record.wait for record in window], 0.99),
    )
