"""Admission control in the real process: Hypercorn's listening socket behind the gate.

The service runs with MAX_IN_FLIGHT=1 and a saturation threshold below any loop's lag
(every loop is "saturated"), so one request in flight from a client fills the bound; the
client is 127.0.0.3, the node is 127.0.0.2 (NODE_IP), loopback is exempt as by default."""

import socket
import time
from collections.abc import Callable

import pytest

from proving.service import ServiceProcess
from tests.metrics_text import samples, scrape
from user_hasher.admission import REFUSED_CONNECTION

pytestmark = pytest.mark.slow

StartService = Callable[..., ServiceProcess]
CLIENT, NODE = "127.0.0.3", "127.0.0.2"
BOUND = {"MAX_IN_FLIGHT": "1", "SATURATED_LAG_SECONDS": "0.000001", "NODE_IP": NODE}
REQUEST = b"GET /user_hash?user_id=1 HTTP/1.1\r\nHost: t\r\n\r\n"


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


def exchange(sock: socket.socket, request: bytes = REQUEST) -> bytes:
    """One request on a kept-alive connection: its whole response (by Content-Length)."""
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return answer


def until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def shed_counts(port: int) -> dict[str, float]:
    return {
        dict(labels)["reason"]: count
        for (name, labels), count in samples(scrape(port)).items()
        if name == "user_hasher_shed_total"
    }


def test_past_the_bound_a_client_is_refused_unparsed_and_the_node_still_served(
    start_service: StartService,
) -> None:
    service = start_service(USER_SALT="TESTSALT", **BOUND)
    time.sleep(0.3)  # the lag watcher has sampled: the loop counts as saturated
    admitted = connect(service.port, CLIENT)
    assert exchange(admitted).startswith(b"HTTP/1.1 200")
    # An idle kept-alive connection is no request in flight: another client is let in.
    assert exchange(connect(service.port, CLIENT)).startswith(b"HTTP/1.1 200")
    head, tail = REQUEST[:20], REQUEST[20:]
    admitted.sendall(head)  # a request under way: the one in flight the bound allows
    time.sleep(0.2)
    refused = connect(service.port, CLIENT)
    refused.sendall(REQUEST)
    assert until_closed(refused) == REFUSED_CONNECTION  # whole, then an orderly close
    # The kubelet's probes come from the node: let in whatever the load.
    for path in (b"/readyz", b"/healthz"):
        probe = connect(service.port, NODE)
        answer = exchange(probe, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200"), answer
        probe.close()
    # The request in flight is served, and then the next client is let in.
    assert exchange(admitted, tail).startswith(b"HTTP/1.1 200")
    assert exchange(connect(service.port, CLIENT)).startswith(b"HTTP/1.1 200")
    # A client that leaves mid-request frees its slot as soon as its FIN is read, not
    # when Hypercorn's idle timer (5 s) lets go of the socket.
    admitted.sendall(head)
    time.sleep(0.2)
    assert until_closed(connect(service.port, CLIENT)) == REFUSED_CONNECTION
    admitted.close()
    time.sleep(0.2)
    assert exchange(connect(service.port, CLIENT)).startswith(b"HTTP/1.1 200")
    assert shed_counts(service.metrics_port) == {
        "in_flight": 0.0,
        "saturated": 2.0,
        "connections": 0.0,
    }


def test_max_connections_bounds_the_exempt_peers_too(start_service: StartService) -> None:
    service = start_service(USER_SALT="TESTSALT", MAX_CONNECTIONS="2", NODE_IP=NODE)
    kept = [connect(service.port, NODE) for _ in range(2)]
    for sock in kept:
        assert exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
            b"HTTP/1.1 200"
        )
    refused = connect(service.port, CLIENT)
    assert until_closed(refused) == REFUSED_CONNECTION
    for sock in kept:
        sock.close()
    time.sleep(0.2)
    assert shed_counts(service.metrics_port)["connections"] == 1.0


def test_switched_off_nothing_is_refused(start_service: StartService) -> None:
    service = start_service(USER_SALT="TESTSALT", SHED_LOAD="false", **BOUND)
    time.sleep(0.3)
    clients = [connect(service.port, CLIENT) for _ in range(5)]
    for client in clients:
        client.sendall(REQUEST[:20])  # five requests in flight at once
    time.sleep(0.2)
    for client in clients:
        assert exchange(client, REQUEST[20:]).startswith(b"HTTP/1.1 200")
        client.close()
    assert set(shed_counts(service.metrics_port).values()) == {0.0}
