"""The open-loop load generator (proving/openloop.py) against real sockets.

Process tests run it against a real `python -m user_hasher` and real signals; the
error kinds a healthy service never produces (5xx, a wrong body, silence) come from
tiny servers on real loopback sockets here. No test asserts an absolute duration:
timing checks compare the generator's records with moments the test itself took.
"""

import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_SALT, CONTRACT_USER_ID
from proving.openloop import (
    Client,
    Error,
    LoadPlan,
    LoadRun,
    RequestRecord,
    Target,
    expected_body,
    in_window,
    keep_alive_closes,
    measure_saturation,
    percentile,
    summarize,
)
from proving.service import ServiceProcess, free_port
from tests.support.needs import require

StartService = Callable[..., ServiceProcess]
SALT = CONTRACT_SALT
# Low enough to be far below saturation on a busy 2-core machine, high enough that
# every window the tests look at holds many requests of both kinds.
RATE = 300.0
CONNECTION_LOSS = {Error.REFUSED, Error.RESET, Error.EMPTY}


def plan(**overrides: float) -> LoadPlan:
    settings = {"rate": RATE, "duration": 30.0, "max_requests": 20_000, **overrides}
    return LoadPlan(**settings)  # type: ignore[arg-type]


def target_of(service: ServiceProcess) -> Target:
    return Target("127.0.0.1", service.port, SALT)


def failures(records: list[RequestRecord]) -> list[RequestRecord]:
    return [record for record in records if not record.ok]


def wait_for_records(run: LoadRun, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(run.records) < count:
        assert time.monotonic() < deadline, f"only {len(run.records)} requests answered"
        time.sleep(0.02)


# --- Against the real service ---------------------------------------------------------


@pytest.mark.slow
def test_a_healthy_server_answers_every_scheduled_request(start_service: StartService) -> None:
    service = start_service(USER_SALT=SALT)
    load_plan = plan(duration=2.0)
    records = LoadRun(target_of(service), load_plan).start().wait()

    summary = summarize(records)
    print(f"healthy: {summary}")
    assert failures(records) == []
    # Open loop: exactly the scheduled requests, evenly spaced, half of each kind.
    assert summary.requests == 600
    assert summary.requests_by_client == {"keep-alive": 300, "new-connection": 300}
    starts = sorted(record.intended for record in records)
    assert starts[-1] - starts[0] == pytest.approx(599 / RATE)
    # Keep-alive clients reuse their connections; new-connection clients never do.
    keep_alive = [record for record in records if record.client is Client.KEEP_ALIVE]
    assert sum(record.connected for record in keep_alive) <= load_plan.keep_alive_connections
    assert all(record.connected for record in records if record.client is Client.NEW_CONNECTION)
    assert summary.p50 is not None
    assert summary.p99 is not None
    assert 0 < summary.p50 <= summary.p99


@pytest.mark.slow
def test_the_run_stops_by_itself_at_max_requests(start_service: StartService) -> None:
    service = start_service(USER_SALT=SALT)
    records = LoadRun(target_of(service), plan(rate=1000, max_requests=100)).start().wait()
    assert len(records) == 100
    assert failures(records) == []


@pytest.mark.slow
def test_latency_counts_from_the_intended_start(start_service: StartService) -> None:
    """A paused server: requests scheduled during the pause are still sent on time
    (open loop), and their latency includes the pause instead of hiding it."""
    service = start_service(USER_SALT=SALT)
    assert service.process is not None
    with LoadRun(target_of(service), plan()) as run:
        wait_for_records(run, 100)
        service.send_signal(signal.SIGSTOP)
        # The stop takes effect a moment after kill() returns; leave that moment out.
        paused = run.elapsed() + 0.05
        try:
            time.sleep(0.6)
        finally:
            resumed = run.elapsed()
            service.send_signal(signal.SIGCONT)
        wait_for_records(run, len(run.records) + 100)
    records = run.records

    during_pause = in_window(records, paused, resumed)
    latencies = sorted(record.latency for record in during_pause)
    print(
        f"paused {resumed - paused:.2f} s: {len(during_pause)} requests scheduled in it, "
        f"latency {latencies[0]:.3f}..{latencies[-1]:.3f} s"
    )
    assert failures(records) == []
    # Scheduled at the fixed rate whatever the server did (rounding at both ends).
    assert len(during_pause) >= int((resumed - paused) * RATE) - 1
    assert {record.client for record in during_pause} == set(Client)
    # None could be answered before the server resumed.
    assert all(record.intended + record.latency >= resumed for record in during_pause)
    earliest = min(during_pause, key=lambda record: record.intended)
    assert earliest.latency >= resumed - earliest.intended
    # Every keep-alive connection was stuck, so later requests waited for one to free up.
    assert any(
        record.intended + record.wait >= resumed
        for record in during_pause
        if record.client is Client.KEEP_ALIVE
    )


@pytest.mark.slow
def test_a_killed_server_shows_as_refused_reset_or_empty(start_service: StartService) -> None:
    service = start_service(USER_SALT=SALT)
    with LoadRun(target_of(service), plan()) as run:
        wait_for_records(run, 100)
        killed = run.elapsed()
        service.send_signal(signal.SIGKILL)
        time.sleep(0.7)
    records = run.records

    lost = failures(records)
    print(f"SIGKILL: {summarize(records).errors_by_kind}")
    assert service.wait_exit(timeout=10) == -signal.SIGKILL
    assert lost
    assert {record.error for record in lost} <= CONNECTION_LOSS
    # Both kinds end up knocking on a closed port once the process is gone.
    refused = {record.client for record in lost if record.error is Error.REFUSED}
    assert refused == set(Client)
    answered_before = [r for r in records if r.intended + r.latency < killed]
    assert len(answered_before) >= 100
    assert all(record.ok for record in answered_before)


def sigterm_under_load(
    start_service: StartService, drain_seconds: float
) -> tuple[list[RequestRecord], float, int]:
    """SIGTERM under load; the load stops 1 s later, the way a Service stops routing to
    a pod once its endpoint is removed. Returns the records, the signal's moment on
    the records' clock, and the exit code."""
    service = start_service(
        USER_SALT=SALT, DRAIN_SECONDS=str(drain_seconds), GRACEFUL_TIMEOUT_SECONDS="5"
    )
    with LoadRun(target_of(service), plan()) as run:
        wait_for_records(run, 100)
        signalled = run.elapsed()
        service.send_signal(signal.SIGTERM)
        time.sleep(1.0)
    return run.records, signalled, service.wait_exit(timeout=drain_seconds + 15)


@pytest.mark.slow
def test_sigterm_with_a_drain_loses_nothing(start_service: StartService) -> None:
    records, signalled, exit_code = sigterm_under_load(start_service, drain_seconds=2)
    after = in_window(records, signalled)
    print(f"drain 2 s: {summarize(records)}")
    assert failures(records) == []
    assert exit_code == 0
    assert {record.client for record in after} == set(Client)
    # The drain's `Connection: close` made keep-alive clients open new connections.
    assert any(record.connected for record in after if record.client is Client.KEEP_ALIVE)


@pytest.mark.slow
def test_sigterm_without_a_drain_fails_requests(start_service: StartService) -> None:
    records, _, exit_code = sigterm_under_load(start_service, drain_seconds=0)
    lost = failures(records)
    print(f"no drain: {summarize(records).errors_by_kind}")
    assert exit_code == 0
    assert lost
    assert {record.error for record in lost} <= CONNECTION_LOSS


@pytest.mark.slow
def test_saturation_probe_counts_answers_of_a_closed_loop(start_service: StartService) -> None:
    service = start_service(USER_SALT=SALT)
    saturation = measure_saturation(target_of(service), connections=4, seconds=1.0)
    print(f"saturation with 4 connections: {saturation.rate:.0f} req/s")
    assert saturation.errors == 0
    assert saturation.requests > 0
    assert saturation.rate == saturation.requests / saturation.seconds


@pytest.mark.slow
def test_a_wrong_salt_is_a_bad_response(start_service: StartService) -> None:
    service = start_service(USER_SALT="another-salt")
    records = LoadRun(target_of(service), plan(max_requests=20)).start().wait()
    assert {(record.error, record.status) for record in records} == {(Error.BAD_RESPONSE, 200)}


# --- Against tiny servers that misbehave on purpose -----------------------------------


@pytest.fixture
def fixed_answer_server() -> Iterator[Callable[[bytes | None], int]]:
    """start(answer) -> port of a server that reads each request head and writes
    `answer`, or closes the connection at once when answer is None."""
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(answer: bytes | None) -> int:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while answer is not None and self.rfile.readline():
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    self.wfile.write(answer)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_briefly(port: int, timeout: float = 5.0) -> list[RequestRecord]:
    target = Target("127.0.0.1", port, SALT)
    return LoadRun(target, plan(rate=100, max_requests=10, timeout=timeout)).start().wait()


def test_5xx_and_a_wrong_body_are_told_apart(
    fixed_answer_server: Callable[[bytes | None], int],
) -> None:
    unavailable = fixed_answer_server(b"HTTP/1.1 503 \r\ncontent-length: 2\r\n\r\n{}")
    wrong_body = fixed_answer_server(b'HTTP/1.1 200 \r\ncontent-length: 4\r\n\r\n"x"\n')
    assert {(r.error, r.status) for r in run_briefly(unavailable)} == {(Error.SERVER_ERROR, 503)}
    assert {(r.error, r.status) for r in run_briefly(wrong_body)} == {(Error.BAD_RESPONSE, 200)}


def test_a_connection_closed_without_an_answer_is_an_empty_response(
    fixed_answer_server: Callable[[bytes | None], int],
) -> None:
    records = run_briefly(fixed_answer_server(None))
    assert {record.error for record in records} <= {Error.EMPTY, Error.RESET}
    assert Error.EMPTY in {record.error for record in records}


def test_nothing_listening_is_refused() -> None:
    records = run_briefly(free_port())
    assert {(record.error, record.status) for record in records} == {(Error.REFUSED, None)}


def test_a_refused_request_names_the_address_its_syn_left_from() -> None:
    """What lets a capture of the refusing host's ICMP be matched to the very request."""
    records = run_briefly(free_port())
    sources = [record.source for record in records]
    assert all(re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", source) for source in sources), sources
    # Each new connection is a new SYN from a port of its own.
    new_connections = [r.source for r in records if r.client is Client.NEW_CONNECTION]
    assert len(set(new_connections)) == len(new_connections) > 1


@pytest.mark.slow
def test_answered_requests_name_their_connection_and_its_close(
    start_service: StartService,
) -> None:
    service = start_service(USER_SALT=SALT)
    records = LoadRun(target_of(service), plan(duration=1.0)).start().wait()
    assert failures(records) == []
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", record.source) for record in records)
    # A new-connection request asks for `Connection: close` and the server agrees; a
    # keep-alive connection is not told to close by a server that is not draining.
    assert all(r.closing for r in records if r.client is Client.NEW_CONNECTION)
    assert keep_alive_closes(records) == 0


@pytest.fixture
def host_unreachable_port() -> Iterator[int]:
    """A loopback port whose connections the kernel answers with ICMP host unreachable, as
    it does for a pod IP that no longer answers ARP; the iptables rule goes afterwards."""
    tools = os.geteuid() == 0 and shutil.which("iptables")
    require(None if tools else "needs root and iptables", "this test (an ICMP reject rule)")
    port = free_port()
    rule = ["OUTPUT", "-d", "127.0.0.1/32", "-p", "tcp", "--dport", str(port)]
    rule += ["-m", "comment", "--comment", "user_hasher test", "-j", "REJECT"]
    rule += ["--reject-with", "icmp-host-unreachable"]
    subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)
    try:
        yield port
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, timeout=30)


def test_an_address_with_no_host_is_unreachable(host_unreachable_port: int) -> None:
    records = run_briefly(host_unreachable_port)
    assert {(record.error, record.status) for record in records} == {(Error.UNREACHABLE, None)}
    assert "Errno 113" in records[0].detail  # EHOSTUNREACH


def test_a_server_that_never_answers_is_a_timeout_counted_from_the_intended_start() -> None:
    with socket.socket() as silent:  # the kernel completes handshakes; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        records = run_briefly(silent.getsockname()[1], timeout=0.3)
    assert {record.error for record in records} == {Error.TIMEOUT}
    assert all(record.latency >= 0.3 for record in records)


# --- Summaries ------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_summarize_counts_a_window_and_times_only_the_answered() -> None:
    def record(intended: float, latency: float, error: Error | None = None) -> RequestRecord:
        client = Client.KEEP_ALIVE if intended < 2 else Client.NEW_CONNECTION
        status = None if error else 200
        return RequestRecord(intended, latency, client, status, error, wait=latency / 2)

    records = [
        record(0.5, 0.001),
        record(1.0, 0.002),
        record(1.5, 9.0, Error.TIMEOUT),
        record(2.5, 0.000_1, Error.REFUSED),
        record(3.5, 0.004),
    ]
    summary = summarize(records, start=1.0, end=3.0)
    assert summary.requests == 3
    assert summary.failed == 2
    assert summary.requests_by_client == {"keep-alive": 2, "new-connection": 1}
    assert summary.failed_by_client == {"keep-alive": 1, "new-connection": 1}
    assert summary.errors_by_kind == {"refused": 1, "timeout": 1}
    assert (summary.p50, summary.p99) == (0.002, 0.002)
    assert summary.p99_wait == 4.5
    assert summarize([]).p99 is None


@pytest.mark.parametrize(
    "bad", [{"rate": 0}, {"duration": -1}, {"keep_alive_share": 1.5}, {"keep_alive_connections": 0}]
)
def test_a_plan_that_cannot_run_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        plan(**bad)


def test_expected_body_is_the_contract() -> None:
    assert expected_body(CONTRACT_USER_ID, CONTRACT_SALT) == CONTRACT_BODY
