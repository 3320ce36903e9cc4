"""proving/capture.py against real tcpdump output: an ICMP port unreachable sent for real on
loopback, quoting a SYN, is read back as the SYN's source; a refusal by TCP reset (nothing
listening) is not captured at all, so it can never excuse a refused request."""

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proving.capture import REJECTED_SYN_FILTER, Capture, rejected_connections
from proving.service import free_port
from proving.waiting import wait_until
from tests.support.needs import require, require_tool

CLIENT_PORT = 43_210


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def port_unreachable_for_syn(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The ICMP message a rejecting host sends back for a SYN from `source`: type 3 code 3,
    quoting the SYN's IP header and its whole TCP header, as Linux does."""
    tcp = struct.pack("!HHIIBBHHH", source[1], destination[1], 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp),
        1,
        0x4000,
        64,
        socket.IPPROTO_TCP,
        0,
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    body = b"\0\0\0\0" + ip + tcp
    return struct.pack("!BBH", 3, 3, checksum(struct.pack("!BBH", 3, 3, 0) + body)) + body


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Capture]:
    """tcpdump on loopback with the rollout-check test's filter."""
    require_tool("tcpdump", "Debian package tcpdump")
    root = os.geteuid() == 0
    require(None if root else "not root", "this test (a raw ICMP socket and a capture)")
    with Capture("lo", REJECTED_SYN_FILTER, tmp_path) as running:
        yield running


def test_a_rejected_syn_is_read_back_as_its_source_and_a_reset_is_not_captured(
    capture: Capture,
) -> None:
    # A refusal by reset: nothing listens on the port.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", free_port()), timeout=5),
    ):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
        message = port_unreachable_for_syn(("127.0.0.1", CLIENT_PORT), ("127.0.0.2", 8000))
        icmp.sendto(message, ("127.0.0.1", 0))

    assert wait_until(lambda: "0x0030" in capture.text(), timeout=10), capture.text()
    time.sleep(0.2)  # the rest of the packet's lines
    assert rejected_connections(capture.text()) == [f"127.0.0.1:{CLIENT_PORT}"]
