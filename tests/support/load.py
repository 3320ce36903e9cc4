"""A bounded HTTP load checker that counts every failed request.

Two kinds of clients run side by side, the two that a rolling deploy can hurt:
keep-alive clients reuse one connection (and reconnect when told
`Connection: close`), fresh clients open a new connection per request. A request
fails on any exception, a non-200 status or a wrong body. Every loop stops on
the first of: the stop event, `max_seconds`, `max_requests_per_client`.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from user_hasher.hashing import user_hash


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    connection_close_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, error: str | None, closing: bool = False) -> None:
        with self.lock:
            if error is None:
                self.ok += 1
            else:
                self.failures.append(error)
            self.connection_close_seen += closing


class LoadRun:
    def __init__(
        self,
        host: str,
        port: int,
        salt: str,
        *,
        keepalive_clients: int = 4,
        fresh_clients: int = 2,
        max_seconds: float = 30.0,
        max_requests_per_client: int = 20_000,
    ) -> None:
        self.host, self.port, self.salt = host, port, salt
        self.max_seconds = max_seconds
        self.max_requests_per_client = max_requests_per_client
        self.result = LoadResult()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n, True), daemon=True)
            for n in range(keepalive_clients)
        ] + [
            threading.Thread(target=self._client, args=(n, False), daemon=True)
            for n in range(keepalive_clients, keepalive_clients + fresh_clients)
        ]

    def __enter__(self) -> LoadRun:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.result

    def _client(self, number: int, keep_alive: bool) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = self._connect()
        for sequence in range(self.max_requests_per_client):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            user_id = f"load-{number}-{sequence}"
            if not keep_alive:
                conn.close()
                conn = self._connect()
            try:
                conn.request("GET", f"/user_hash?user_id={user_id}")
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.result.record(f"{type(error).__name__}: {error}")
                conn.close()
                conn = self._connect()
                continue
            expected = f'"{user_hash(user_id, self.salt)}"'.encode()
            closing = (response.getheader("connection") or "").lower() == "close"
            if response.status != 200 or body != expected:
                self.result.record(f"status {response.status}: {body[:80]!r}", closing)
            else:
                self.result.record(None, closing)
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=5)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Polls predicate until it is true or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
