"""Reading a packet capture: which connections a host refused with ICMP.

A policy engine that rejects a connection answers its SYN with an ICMP port unreachable,
which quotes the start of the rejected packet: its IP header and the first 8 bytes of its
TCP header (RFC 792), so the source address and port of the refused connection. An app
that is not listening answers with a TCP reset instead, which quotes nothing. Both reach
the client as "connection refused"; only the ICMP one names the connection.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from types import TracebackType

from proving.waiting import wait_until

# What to capture (a tcpdump filter): ICMP port unreachable (type 3, code 3) quoting a TCP
# (byte 8 + 9 of the ICMP message is the quoted IP header's protocol, 6) SYN without ACK (the
# quoted TCP header starts at byte 28 of the ICMP message; its flags at 28 + 13).
REJECTED_SYN_FILTER = "icmp[0] = 3 and icmp[1] = 3 and icmp[17] = 6 and (icmp[41] & 0x12) = 0x02"
ICMP_HEADER_BYTES = 8
LISTEN_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0


class CaptureError(RuntimeError):
    """tcpdump did not start, or its output is not the hex dump of IP packets it should be."""


class Capture:
    """`tcpdump` on one interface with a filter, for the duration of a `with` block, into
    `directory`/capture.txt: each packet a summary line, then its bytes from the IP header
    on in hex (-x). It stops by itself after `limit` packets.

        with Capture("cni0", REJECTED_SYN_FILTER, tmp_path) as capture: ...
        rejected_connections(capture.text())
    """

    def __init__(self, interface: str, packet_filter: str, directory: Path, limit: int = 10_000):
        self.interface, self.output = interface, directory / "capture.txt"
        self.log = directory / "tcpdump.log"
        self.argv = ["tcpdump", "-i", interface, "--immediate-mode", "-n", "-l", "-tt", "-x"]
        self.argv += ["-c", str(limit), packet_filter]

    def __enter__(self) -> Capture:
        with self.output.open("w") as out, self.log.open("w") as err:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=err)
        listening = f"listening on {self.interface}"
        wait_until(
            lambda: listening in self.log.read_text() or self.process.poll() is not None,
            LISTEN_TIMEOUT_SECONDS,
        )
        if listening not in self.log.read_text() or self.process.poll() is not None:
            self._stop()
            raise CaptureError(f"tcpdump did not start listening: {self.log.read_text()}")
        return self

    def text(self) -> str:
        return self.output.read_text()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()


def hex_packets(tcpdump_output: str) -> list[bytes]:
    """Each packet's bytes from `tcpdump -x` output: a summary line, then indented lines of
    `0xOFFSET:  hex hex ...`."""
    packets: list[bytearray] = []
    for line in tcpdump_output.splitlines():
        offset, colon, data = line.strip().partition(":")
        if line[:1].isspace() and colon and offset.startswith("0x"):
            if not packets:
                raise CaptureError(f"hex before any packet's summary line: {line!r}")
            packets[-1] += bytes.fromhex(data.replace(" ", ""))
        elif line.strip():
            packets.append(bytearray())
    return [bytes(packet) for packet in packets if packet]


def quoted_source(packet: bytes) -> str:
    """The source ("ip:port") of the TCP packet an IPv4 ICMP unreachable message quotes."""
    outer_header = (packet[0] & 0x0F) * 4
    quoted = packet[outer_header + ICMP_HEADER_BYTES :]
    if len(quoted) < 20 or quoted[0] >> 4 != 4 or quoted[9] != socket.IPPROTO_TCP:
        raise CaptureError(f"not an ICMP message quoting an IPv4 TCP packet: {packet.hex()}")
    quoted_header = (quoted[0] & 0x0F) * 4
    port = int.from_bytes(quoted[quoted_header : quoted_header + 2], "big")
    return f"{socket.inet_ntoa(quoted[12:16])}:{port}"


def rejected_connections(tcpdump_output: str) -> list[str]:
    """The "ip:port" each rejected SYN in a `tcpdump -x` capture of REJECTED_SYN_FILTER was
    sent from, one per captured rejection, in capture order."""
    return [quoted_source(packet) for packet in hex_packets(tcpdump_output)]
