"""HAProxy in front of local service processes: the stand-in for a Service on this machine.

It plays kube-proxy with an endpoint controller: it health-checks each backend's /readyz every
200 ms and stops routing to one that fails twice, as a readiness probe with periodSeconds 0.2
and failureThreshold 2 would. Retries are off, so a request the proxy cannot serve reaches
the client as a failure, as with kube-proxy.

The backends are slots, each a loopback port fixed when the proxy starts: a process started
on a free slot's port is taken into rotation by the checks, as a new pod's endpoint is once it
is ready. A slot whose process is gone is checked out of rotation.

    with LoadBalancer(haproxy, log_path, slots=8) as balancer:
        ...start processes on balancer.slot_ports[0] and [1]...
        balancer.start(up=[0, 1])
        ...load to balancer.port; balancer.down(2)...
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from proving.service import answers_ready, free_port
from proving.waiting import wait_for

START_TIMEOUT_SECONDS = 15.0
CONFIG = """\
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    # No retries or redispatch: a request sent to a pod that refuses it is a failure.
    retries 0

frontend service
    bind 127.0.0.1:{port}
    default_backend pods

backend pods
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Like a readiness probe with periodSeconds 0.2, failureThreshold 2 and a timeout
    # generous enough that a pod busy with the load is not taken for dead.
    timeout check 2s
    default-server inter 200ms fall 2 rise 1
{servers}
"""
# HAProxy's line for a server changing state, e.g. "Server pods/slot2 is DOWN, reason: ...".
STATE_LINE = re.compile(r"Server pods/slot(\d+) is (UP|DOWN)")


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class LoadBalancer:
    def __init__(self, binary: str, log_path: Path, slots: int) -> None:
        self.binary, self.log_path = binary, log_path
        self.port, *self.slot_ports = _distinct_free_ports(slots + 1)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, up: list[int]) -> LoadBalancer:
        """Starts HAProxy, and returns once it routes: the processes on the slots in `up`
        answer /readyz through it, and every other slot is out of rotation (HAProxy takes a
        server for up until its checks fail)."""
        servers = "\n".join(
            f"    server slot{slot} 127.0.0.1:{port} check"
            for slot, port in enumerate(self.slot_ports)
        )
        config = self.log_path.with_suffix(".cfg")
        config.write_text(CONFIG.format(port=self.port, servers=servers))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(config)], stdout=log, stderr=log
            )
        try:
            empty = [slot for slot in range(len(self.slot_ports)) if slot not in up]
            wait_for(
                lambda: answers_ready(self.port) and all(map(self.down, empty)),
                START_TIMEOUT_SECONDS,
                f"HAProxy routing to slots {up} only",
                interval=0.05,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def states(self) -> dict[int, str]:
        """Each slot's last state change as HAProxy logged it ("UP" or "DOWN"); a slot it never
        logged is in rotation."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return {int(slot): state for slot, state in STATE_LINE.findall(text)}

    def down(self, slot: int) -> bool:
        return self.states().get(slot) == "DOWN"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
