"""Which pod each connection to a ClusterIP went to, read from this machine's conntrack table.

kube-proxy rewrites a connection to a ClusterIP to one pod's address (DNAT) when its first
packet leaves; the client only ever sees the ClusterIP. The kernel's connection tracking
entry holds both: the original tuple (the client's source port, the ClusterIP) and the reply
tuple (the pod's address). A request record carries its connection's source address
(RequestRecord.source), so a record is matched to the pod it was sent to by its source port.

A connection that never got an answer (a SYN to a dead pod) keeps its entry in SYN_SENT for
nf_conntrack_tcp_timeout_syn_sent (120 s by default); an established one for much longer; so
sampling the table every second or two sees every connection of a node-death window, the
failed ones included. /proc/net/nf_conntrack is read (no conntrack tool needed).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CONNTRACK_TABLE = Path("/proc/net/nf_conntrack")
SYN_SENT_TIMEOUT = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_syn_sent")
SAMPLE_SECONDS = 1.0
_FIELD = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True)
class Entry:
    sport: int  # the client's source port
    pod: str  # the reply tuple's source: the pod the connection was sent to
    state: str  # SYN_SENT, ESTABLISHED, TIME_WAIT, ...


def parse_table(text: str, service_ip: str, service_port: int) -> list[Entry]:
    """The TCP entries toward service_ip:service_port in /proc/net/nf_conntrack text."""
    entries = []
    wanted_dst, wanted_port = f"dst={service_ip} ", f"dport={service_port} "
    for line in text.splitlines():
        if wanted_dst not in line or wanted_port not in line or " tcp " not in line:
            continue
        fields = _FIELD.findall(line)
        if len(fields) < 8:
            continue
        original, reply = dict(fields[:4]), dict(fields[4:8])
        if original["dst"] != service_ip or original["dport"] != str(service_port):
            continue
        words = line.split()
        state = words[5] if len(words) > 5 and "=" not in words[5] else ""
        entries.append(Entry(int(original["sport"]), reply["src"], state))
    return entries


@dataclass
class Sighting:
    entry: Entry
    first: float  # sample time it was first seen, on the caller's clock
    last: float


@dataclass
class ConntrackSampler:
    """Reads the table every SAMPLE_SECONDS on a thread of its own until stop(); keeps every
    (source port, pod) pair it saw with when."""

    service_ip: str
    service_port: int
    clock: Callable[[], float]
    # source port -> pod -> when seen
    sightings: dict[int, dict[str, Sighting]] = field(default_factory=dict)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, name="conntrack", daemon=True)

    def start(self) -> ConntrackSampler:
        self._thread.start()
        return self

    def sample_once(self) -> None:
        now = self.clock()
        entries = parse_table(CONNTRACK_TABLE.read_text(), self.service_ip, self.service_port)
        with self._lock:
            for entry in entries:
                per_pod = self.sightings.setdefault(entry.sport, {})
                seen = per_pod.get(entry.pod)
                if seen is None:
                    per_pod[entry.pod] = Sighting(entry, now, now)
                else:
                    seen.last, seen.entry = now, entry
            self.samples += 1

    def _sample(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            self.sample_once()
            self._stopping.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def pods_for(self, sport: int, start: float, end: float) -> set[str]:
        """The pods a connection from this source port went to, in entries seen in [start, end]
        (widened by a sample period on each side)."""
        with self._lock:
            return {
                pod
                for pod, seen in self.sightings.get(sport, {}).items()
                if seen.last >= start - SAMPLE_SECONDS and seen.first <= end + SAMPLE_SECONDS
            }


def source_port(source: str) -> int | None:
    """The port of a RequestRecord.source ("ip:port"), None when unknown."""
    _, _, port = source.rpartition(":")
    return int(port) if port.isdigit() else None


@dataclass(frozen=True)
class Attribution:
    dead: int  # failed requests whose connection went to a pod of the dead node
    live: int  # ... to another pod
    unknown: int  # no entry seen for their source port
    examples: tuple[str, ...]  # a few of the live/unknown ones, for the report


def attribute(
    failures: Iterable[tuple[float, str]],
    sampler: ConntrackSampler,
    dead_pods: set[str],
    timeout: float,
) -> Attribution:
    """failures: (intended start, source) of failed requests. Each is matched to the entries
    of its source port seen from its intended start to its timeout: dead when any of them
    goes to a dead pod's address."""
    dead = live = unknown = 0
    examples: list[str] = []
    for intended, source in failures:
        port = source_port(source)
        pods = set() if port is None else sampler.pods_for(port, intended, intended + timeout)
        if pods & dead_pods:
            dead += 1
            continue
        if pods:
            live += 1
        else:
            unknown += 1
        if len(examples) < 10:
            examples.append(f"{intended:.1f} s from {source or '?'} -> {sorted(pods) or '?'}")
    return Attribution(dead, live, unknown, tuple(examples))


def syn_sent_timeout() -> int | None:
    try:
        return int(SYN_SENT_TIMEOUT.read_text())
    except (OSError, ValueError):
        return None
