"""Admission control: past saturation the excess is refused at once, where refusing costs
least, so the requests that are admitted, and the probes, stay fast
(docs/capacity.md#overload).

The bound: while the event loop is saturated (its lag, smoothed, above `saturated_lag`),
at most `max_in_flight` requests in flight. Over HTTP/1.1 a connection carries one
request at a time, so they are counted at the socket (connections.py): the connections
with a request read and not yet answered, wherever it waits, in the loop's queue, in h11
or in the app; and at most `IN_APP_FACTOR` times as many connections open, idle or not,
since each can bring a request next. Past either a new connection is refused at accept:
a prebuilt 503 is written and the connection closed before asyncio builds a transport,
Hypercorn a task or h11 a parser, for ~40 us against the ~700 us of a served request. A
refusal in the ASGI layer instead costs nearly what serving does (the request has been
read, parsed and handed to a task), and a client that resends at once (most do, and
wrk) turns each such refusal into more work: why an earlier attempt, which shed there,
lowered the goodput under overload. So requests already on a connection are served, and
while the bound is exceeded their responses close the connection: the client's next
request meets the gate.

The ASGI layer (asgi.py) still sheds a /user_hash request past `max_in_flight` requests
in the app, with `Connection: close`: reached only when one connection carries several
requests at once (HTTP/2) or the exempt peers bring the load.

The probes are never refused: their peer (the node, whose kubelet sends them, and
loopback) passes the gate, and no /readyz, /healthz or /metrics request is shed.
"""

import asyncio
import json
import math

from user_hasher.settings import Settings

# Why a refusal was made, the `reason` of user_hasher_shed_total. `in_flight`: a request
# shed in the ASGI layer, so also a 503 in user_hasher_http_responses_total. The other two
# are connections refused at accept, never parsed, so in no other metric: `saturated`,
# the loop saturated with max_in_flight requests in flight; `connections`, max_connections.
IN_FLIGHT = "in_flight"
SATURATED = "saturated"
CONNECTIONS = "connections"
REASONS = (IN_FLIGHT, SATURATED, CONNECTIONS)
RETRY_AFTER_SECONDS = 1
# As a multiple of max_in_flight: the connections open (idle or busy) past which, while
# saturated, a new one is refused, and the requests inside the app past which one is shed.
IN_APP_FACTOR = 4
# How often the event loop's lag is sampled: a timer every 10 ms costs nothing.
LAG_SAMPLE_SECONDS = 0.01
# The lag is smoothed over about this many samples (an exponentially weighted average):
# ~100 ms, CoDel's interval, so a burst is absorbed and a standing queue is not.
LAG_SAMPLES_SMOOTHED = 10

SHED_BODY = json.dumps({"error": "overloaded, retry later"}).encode()
SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    (b"content-length", str(len(SHED_BODY)).encode()),
    (b"connection", b"close"),
]
# What a refused connection is sent, whole, without its request being read or parsed.
REFUSED_CONNECTION = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in SHED_HEADERS)
    + b"\r\n"
    + SHED_BODY
)


class Admission:
    """The counts the refusals are decided on, and the refusals by reason; one per process,
    the service's (app.py): the accept gate (connections.py) and the ASGI layer (asgi.py)
    count and decide on it, and the metrics read `shed` when Prometheus scrapes."""

    def __init__(
        self, max_in_flight: int, saturated_lag: float = 0.005, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        # Switched off (SHED_LOAD=false, to measure the service without it): no bound.
        self.max_in_flight = max_in_flight if enabled else math.inf
        self.saturated_lag = saturated_lag
        self.in_flight = 0  # requests inside the app
        # Connections with a request read and not yet answered, but exempt peers' ones
        # (connections.py): over HTTP/1.1, the requests in flight, queued or in the app.
        self.busy = 0
        self.open = 0  # connections open, but exempt peers' ones
        self.lag = 0.0  # seconds, the event loop's smoothed lag
        self.shed = dict.fromkeys(REASONS, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Admission":
        return cls(settings.in_flight_bound, settings.SATURATED_LAG_SECONDS, settings.SHED_LOAD)

    @property
    def saturated(self) -> bool:
        """The loop has had no idle moment for a while: every callback waits its turn."""
        return self.lag > self.saturated_lag

    def request_refusal(self) -> str | None:
        """Why a request that reached the app is shed, or None: a last resort, past
        `IN_APP_FACTOR` times the bound, since a refusal here saves little work."""
        if self.saturated and self.in_flight >= self.max_in_flight * IN_APP_FACTOR:
            return IN_FLIGHT
        return None

    def connection_refusal(self) -> str | None:
        """Why a new connection (not an exempt peer's) is refused, or None: while the
        loop is saturated, no more than `max_in_flight` requests are served at once."""
        if self.saturated and (
            self.busy >= self.max_in_flight or self.open >= self.max_in_flight * IN_APP_FACTOR
        ):
            return SATURATED
        return None

    def closes_connection(self) -> bool:
        """Whether a response closes its connection: while the loop is saturated with more
        than `max_in_flight` requests, so that the clients' next requests meet the gate."""
        return self.saturated and self.busy > self.max_in_flight

    def observe_lag(self, lag: float) -> None:
        self.lag += (max(0.0, lag) - self.lag) / LAG_SAMPLES_SMOOTHED

    async def watch_event_loop(self) -> None:
        """Samples the loop's lag until cancelled: how much later than asked a timer fires."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            self.observe_lag(loop.time() - asked - LAG_SAMPLE_SECONDS)
