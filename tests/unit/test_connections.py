"""The accept gate on real loopback sockets: who is let in, what a refused client reads,
the refusal budget, and the hook that puts Hypercorn's listening socket behind it."""

import asyncio
import select
import socket
import time
from collections.abc import Iterator

import pytest
from hypercorn.config import Config

from user_hasher import connections
from user_hasher.admission import CONNECTIONS, REFUSED_CONNECTION, SATURATED, Admission
from user_hasher.connections import (
    ACCEPT_BACKLOG,
    ANSWER_INTERVAL_SECONDS,
    LOOPBACK,
    MAX_REFUSALS_PER_ACCEPT,
    REFUSALS_PER_SECOND,
    ConnectionGate,
    GatedSocket,
    OpenConnection,
    admission_control,
    gate_connections,
    gated,
)
from user_hasher.settings import Settings

OTHER_PEER = "127.0.0.3"  # a client; 127.0.0.1 is loopback, exempt by default


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)  # as asyncio's server sets it
    yield sock
    sock.close()


def gate_for(
    max_in_flight: int = 1, max_connections: int = 100, **kwargs: object
) -> ConnectionGate:
    """A gate on a saturated loop: its bounds hold."""
    admission = Admission(max_in_flight)
    admission.lag = 1.0
    return ConnectionGate(admission, max_connections, **kwargs)  # type: ignore[arg-type]


def connect(server: socket.socket, source: str = OTHER_PEER) -> socket.socket:
    client = socket.create_connection(server.getsockname(), source_address=(source, 0))
    client.settimeout(5)
    return client


def read_all(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):  # until the server's FIN; a reset raises
        received += chunk
    return received


def wait_queued(count: int) -> None:
    time.sleep(0.05 + count * 0.001)  # the kernel finishes the handshakes


def test_a_connection_under_the_bound_is_let_in_and_counted_until_closed(
    listener: socket.socket,
) -> None:
    gate = gate_for(max_in_flight=2)
    server = gated(listener, gate)
    client = connect(server)
    accepted, address = server.accept()
    assert isinstance(accepted, OpenConnection)
    assert address[0] == OTHER_PEER  # type: ignore[index]
    # New: busy already, its request is on its way (a burst of them must meet the bound).
    assert (gate.open, gate.admission.open, gate.admission.busy) == (1, 1, 1)
    client.sendall(b"request")
    assert accepted.recv(3, socket.MSG_PEEK) == b"req"  # flags reach the socket
    assert accepted.recv(3) == b"req"
    assert gate.admission.busy == 1  # a request read, not answered: in flight
    assert accepted.recv(10) == b"uest"
    assert gate.admission.busy == 1  # the rest of the same request
    assert accepted.send(b"hello") == 5
    assert client.recv(5) == b"hello"  # the connection is the client's, whole
    assert gate.admission.busy == 0  # answered: idle again
    assert accepted.send(b"!", socket.MSG_OOB) == 1  # flags reach the socket
    assert select.select([], [], [client], 5)[2] == [client]  # urgent data: only if sent OOB
    client.settimeout(None)  # a timeout would wait for ordinary data first
    assert client.recv(1, socket.MSG_OOB) == b"!"
    client.settimeout(5)
    assert gate.admission.busy == 0
    client.sendall(b"next")
    accepted.recv(10)
    assert gate.admission.busy == 1
    accepted.close()
    accepted.close()  # closing twice counts once
    assert (gate.open, gate.admission.open, gate.admission.busy) == (0, 0, 0)
    client.close()


def test_a_burst_of_new_connections_meets_the_bound_before_any_is_read(
    listener: socket.socket,
) -> None:
    gate = gate_for(max_in_flight=2)
    server = gated(listener, gate)
    clients = [connect(server) for _ in range(3)]
    wait_queued(3)
    accepted = [server.accept()[0] for _ in range(2)]  # neither has sent a byte yet
    with pytest.raises(BlockingIOError):
        server.accept()  # the third is refused: the two new ones are requests on their way
    assert gate.admission.shed[SATURATED] == 1
    assert (gate.admission.open, gate.admission.busy) == (2, 2)
    for sock in [*accepted, *clients]:
        sock.close()


def test_two_busy_connections_count_two(listener: socket.socket) -> None:
    gate = gate_for(max_in_flight=5)
    server = gated(listener, gate)
    clients = [connect(server) for _ in range(2)]
    accepted = [server.accept()[0] for _ in clients]
    assert gate.admission.open == 2
    for client, sock in zip(clients, accepted, strict=True):
        client.sendall(b"GET")
        sock.recv(10)
    assert gate.admission.busy == 2
    for sock in accepted:
        sock.send(b"answer")
    assert gate.admission.busy == 0  # both kept alive, idle
    for client, sock in zip(clients, accepted, strict=True):
        client.sendall(b"GET")  # the next request on each
        sock.recv(10)
    assert gate.admission.busy == 2
    for sock in [*accepted, *clients]:
        sock.close()
    assert (gate.admission.open, gate.admission.busy) == (0, 0)


def test_the_slot_is_free_once_the_client_has_closed_its_side(listener: socket.socket) -> None:
    gate = gate_for(max_in_flight=2)
    server = gated(listener, gate)
    client = connect(server)
    accepted, _ = server.accept()
    client.sendall(b"x")
    assert accepted.recv(10) == b"x"
    assert (gate.open, gate.admission.busy) == (1, 1)
    client.close()
    assert accepted.recv(10) == b""  # the FIN, before any answer
    assert (gate.open, gate.admission.open, gate.admission.busy) == (0, 0, 0)
    accepted.close()  # and counted once
    assert (gate.open, gate.admission.busy) == (0, 0)


def test_a_refused_client_reads_the_whole_503_and_an_orderly_close(
    listener: socket.socket,
) -> None:
    gate = gate_for(max_in_flight=1)
    server = gated(listener, gate)
    first = connect(server)
    kept, _ = server.accept()
    first.sendall(b"GET")  # a request under way: the one in flight the bound allows
    kept.recv(10)
    refused = connect(server)
    refused.sendall(b"GET /user_hash?user_id=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_queued(1)
    with pytest.raises(BlockingIOError):
        server.accept()  # the refused one is not handed over: nothing else waits
    assert read_all(refused) == REFUSED_CONNECTION  # its request was read: a FIN, no reset
    assert gate.admission.shed == {"in_flight": 0, SATURATED: 1, CONNECTIONS: 0}
    assert (gate.open, gate.admission.busy) == (1, 1)
    for sock in (kept, first, refused):
        sock.close()


def test_an_exempt_peer_is_let_in_past_every_bound_and_not_counted_against_it(
    listener: socket.socket,
) -> None:
    gate = gate_for(max_in_flight=1, max_connections=1)
    server = gated(listener, gate)
    clients = [connect(server, "127.0.0.1") for _ in range(3)]
    accepted = [server.accept()[0] for _ in clients]
    for client, sock in zip(clients, accepted, strict=True):
        client.sendall(b"GET")
        sock.recv(10)
    assert (gate.open, gate.admission.open, gate.admission.busy) == (3, 0, 0)
    assert gate.admission.shed == {"in_flight": 0, SATURATED: 0, CONNECTIONS: 0}
    for sock in accepted:
        sock.close()
    assert gate.open == 0
    for client in clients:
        client.close()


def test_past_max_connections_the_refusal_is_for_connections(listener: socket.socket) -> None:
    # Exempt peers fill the connections: a client is refused for memory, not load.
    gate = gate_for(max_in_flight=10, max_connections=2)
    server = gated(listener, gate)
    exempt = [connect(server, "127.0.0.1") for _ in range(2)]
    kept = [server.accept()[0] for _ in exempt]
    refused = connect(server)
    wait_queued(1)
    with pytest.raises(BlockingIOError):
        server.accept()
    assert read_all(refused) == REFUSED_CONNECTION
    assert gate.admission.shed == {"in_flight": 0, SATURATED: 0, CONNECTIONS: 1}
    assert gate.refusal() == CONNECTIONS
    kept[0].close()
    assert gate.refusal() is None
    for sock in [*kept, *exempt, refused]:
        sock.close()


def test_waiting_connections_count_against_max_connections() -> None:
    gate = gate_for(max_in_flight=10, max_connections=3)
    gate.open = 2
    assert gate.refusal() is None
    gate.waiting.append(-1)
    assert gate.refusal() == CONNECTIONS


def test_one_accept_refuses_at_most_its_share_then_lets_the_loop_run(
    listener: socket.socket,
) -> None:
    gate = gate_for(max_in_flight=0)
    gate.refusals_per_second = 10**9  # no budget limit here: only the per-call one
    server = gated(listener, gate)
    clients = [connect(server) for _ in range(MAX_REFUSALS_PER_ACCEPT + 5)]
    wait_queued(len(clients))
    with pytest.raises(BlockingIOError):
        server.accept()
    assert gate.admission.shed[SATURATED] == MAX_REFUSALS_PER_ACCEPT
    with pytest.raises(BlockingIOError):
        server.accept()
    assert gate.admission.shed[SATURATED] == MAX_REFUSALS_PER_ACCEPT + 5
    for client in clients:
        assert read_all(client) == REFUSED_CONNECTION
        client.close()


def test_a_refusal_that_finds_the_peer_gone_still_closes() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    connections.answer(ours.detach())  # sending to a closed peer fails: no exception out


def test_past_the_budget_refusals_wait_their_turn_oldest_first(listener: socket.socket) -> None:
    async def scenario() -> None:
        # Two refusals per interval: the first two at once, the others in later intervals.
        gate = gate_for(max_in_flight=0, refusals_per_second=2 / ANSWER_INTERVAL_SECONDS)
        server = gated(listener, gate)
        clients = [connect(server) for _ in range(5)]
        wait_queued(5)
        gate._budget_at = time.monotonic()  # a full bucket, not refilled since
        with pytest.raises(BlockingIOError):
            server.accept()
        assert gate.admission.shed[SATURATED] == 5  # counted when decided
        assert len(gate.waiting) == 3
        first_waiting = gate.waiting[0]
        for client in clients[:2]:
            assert read_all(client) == REFUSED_CONNECTION
        for client in clients[2:]:
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(1)  # not answered yet
        await asyncio.sleep(ANSWER_INTERVAL_SECONDS * 1.5)
        assert first_waiting not in gate.waiting
        for _ in range(100):  # 1 per interval: ~2 more intervals
            if not gate.waiting:
                break
            await asyncio.sleep(ANSWER_INTERVAL_SECONDS)
        await asyncio.sleep(ANSWER_INTERVAL_SECONDS * 2)
        assert gate._answering is None
        for client in clients[2:]:
            client.setblocking(True)
            assert read_all(client) == REFUSED_CONNECTION
            client.close()

    asyncio.run(scenario())


def test_a_new_refusal_queues_behind_those_waiting_even_with_budget() -> None:
    async def scenario() -> None:
        gate = gate_for(max_in_flight=0)
        a, b = socket.socketpair()
        gate.waiting.append(a.detach())
        gate.refuse(b.detach(), SATURATED)
        assert len(gate.waiting) == 2
        assert gate._answering is not None
        await asyncio.sleep(ANSWER_INTERVAL_SECONDS * 3)
        assert not gate.waiting

    asyncio.run(scenario())


def test_the_budget_refills_at_its_rate_and_holds_one_interval() -> None:
    gate = gate_for(refusals_per_second=1000)
    capacity = 1000 * ANSWER_INTERVAL_SECONDS
    gate._budget, gate._budget_at = 0.0, time.monotonic() - 100
    spent = 0
    while gate._spend():
        spent += 1
    assert capacity <= spent <= capacity + 1  # a long pause refills one interval, no more
    gate._budget, gate._budget_at = 0.0, time.monotonic() - 0.005
    assert gate._spend()  # 5 ms at 1,000/s: ~5 refusals
    gate._budget = 0.5
    gate._budget_at = time.monotonic()
    assert not gate._spend()  # half a refusal is none


def test_exactly_one_refusal_left_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = gate_for()
    monkeypatch.setattr(connections.time, "monotonic", lambda: 100.0)
    gate._budget, gate._budget_at = 1.0, 100.0
    assert gate._spend()
    assert gate._budget == 0.0
    assert not gate._spend()


def test_answering_the_waiting_stops_when_none_wait() -> None:
    async def scenario() -> None:
        gate = gate_for()
        ours, theirs = socket.socketpair()
        gate.waiting.append(ours.detach())
        gate._answer_waiting()  # budget for many: one answered, and nothing more to pop
        assert not gate.waiting
        assert gate._answering is None
        assert theirs.recv(65536) == REFUSED_CONNECTION
        theirs.close()

    asyncio.run(scenario())


def test_a_fresh_gate_answers_one_interval_of_refusals_at_once() -> None:
    async def scenario() -> None:
        gate = gate_for(refusals_per_second=300)  # 3 an interval
        pairs = [socket.socketpair() for _ in range(5)]
        for ours, _ in pairs:
            gate.refuse(ours.detach(), SATURATED)
        assert len(gate.waiting) == 2
        for _, theirs in pairs:
            theirs.close()
        gate._answering.cancel()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_port_is_read_only_from_an_address() -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        assert connections._port(unix) is None
    with socket.socket() as inet:
        inet.bind(("127.0.0.1", 0))
        assert connections._port(inet) == inet.getsockname()[1]


def test_switched_off_the_gate_lets_everything_in() -> None:
    gate = ConnectionGate(Admission(1, enabled=False), max_connections=1)
    gate.open = 10**6
    assert gate.refusal() is None


def test_the_defaults() -> None:
    assert set(LOOPBACK) == {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert ConnectionGate(Admission(1), 5).exempt == frozenset(LOOPBACK)
    assert gate_for().refusals_per_second == REFUSALS_PER_SECOND == 2500
    assert MAX_REFUSALS_PER_ACCEPT == 128
    assert ANSWER_INTERVAL_SECONDS == 0.01
    assert ACCEPT_BACKLOG == 1024


def test_from_settings_exempts_the_node_and_the_listed_addresses() -> None:
    settings = Settings(NODE_IP="10.244.0.1", SHED_EXEMPT_ADDRESSES=("::1",), MAX_CONNECTIONS=9)
    gate = ConnectionGate.from_settings(Admission(1), settings)
    assert gate.exempt == {"10.244.0.1", "::1"}
    assert gate.max_connections == 9


def test_gating_hypercorns_sockets_covers_the_app_port_only() -> None:
    app_port, other_port = free_port(), free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{app_port}", f"127.0.0.1:{other_port}"]
    admission = Admission(1)

    async def scenario() -> ConnectionGate:
        async with admission_control(config, admission, Settings(PORT=app_port)) as gate:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            assert len(tasks) == 1  # the lag watcher
            for _ in range(3):
                block_the_loop(0.03)
                await asyncio.sleep(0.011)
            assert admission.lag > 0.002  # the watcher runs: its samples saw the blocks
        await asyncio.sleep(0)
        assert all(task.done() for task in tasks)  # stopped with the serving
        return gate

    gate = asyncio.run(scenario())
    assert config.backlog == ACCEPT_BACKLOG
    sockets = config.create_sockets()
    try:
        app_socket, other_socket = sockets.insecure_sockets
        assert isinstance(app_socket, GatedSocket)
        assert app_socket.gate is gate
        assert gate.admission is admission
        assert app_socket.getsockname() == ("127.0.0.1", app_port)
        assert type(other_socket) is socket.socket
        assert other_socket.getsockname() == ("127.0.0.1", other_port)
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


def test_a_larger_backlog_is_kept(listener: socket.socket) -> None:
    config = Config()
    config.backlog = ACCEPT_BACKLOG + 1
    gate_connections(config, gate_for(), 1)
    assert config.backlog == ACCEPT_BACKLOG + 1


def test_a_unix_socket_is_not_gated(tmp_path: pytest.TempPathFactory) -> None:
    config = Config()
    config.bind = [f"unix:{tmp_path}/s"]
    gate_connections(config, gate_for(), 8000)
    (sock,) = config.create_sockets().insecure_sockets
    assert type(sock) is socket.socket
    sock.close()


def test_a_unix_peer_has_no_address_to_exempt_and_is_counted(
    tmp_path: pytest.TempPathFactory,
) -> None:
    path = f"{tmp_path}/s"
    plain = socket.socket(socket.AF_UNIX)
    plain.bind(path)
    plain.listen()
    plain.setblocking(False)
    gate = gate_for(max_in_flight=1)
    server = gated(plain, gate)
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    accepted, _ = server.accept()
    assert isinstance(accepted, OpenConnection)
    client.sendall(b"GET")
    accepted.recv(10)
    assert gate.admission.busy == 1  # no address to exempt: counted
    for sock in (accepted, client, server):
        sock.close()


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
