"""server.py inside the test process: Hypercorn on a real loopback socket, and real signals
sent to this process. tests/process/test_server.py proves the same end to end with real processes
(slow); these run with the fast tests, so they also judge mutants of server.py."""

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from proving.contract import CONTRACT_BODY
from proving.service import free_port
from tests.conftest import SALT
from user_hasher.app import create_service
from user_hasher.server import hypercorn_config, serve
from user_hasher.settings import Settings

WAIT_SECONDS = 10.0  # only ever reached when something is broken


class StraySignalError(Exception):
    """A signal meant for serve()'s handlers reached the test process's own."""


@pytest.fixture
def signals_must_reach_serve() -> Iterator[None]:
    """The test sends SIGTERM and SIGINT to its own process, where serve() has put its
    handlers: a signal that finds these instead fails the test rather than ending the run."""

    def refuse(signum: int, frame: object) -> None:
        raise StraySignalError(signal.Signals(signum).name)

    watched = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, refuse) for signum in watched}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


async def first_answer(client: httpx.AsyncClient, serving: asyncio.Task) -> httpx.Response:
    """/readyz as soon as the port answers. Hypercorn listens only once the app's startup
    hook has run, so a working service is ready from its first answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        if serving.done():
            serving.result()  # raises what stopped it
            pytest.fail("serve() returned without being asked to")
        try:
            return await client.get("/readyz")
        except httpx.ConnectError:
            assert loop.time() < deadline, "nothing listening"
            await asyncio.sleep(0.02)


def lifecycle_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [
        (record.event, getattr(record, "reason", None))
        for record in caplog.records
        if hasattr(record, "event") and record.name != "user_hasher.access"
    ]


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    """serve() freezes what exists into the collector's permanent generation; give the
    test process's objects back to the collector afterwards."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("signals_must_reach_serve", "unfrozen_afterwards")
async def test_sigterm_drains_and_a_second_signal_stops_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    metrics_port = free_port(other_than=port)
    settings = Settings(
        HOST="127.0.0.1",
        PORT=port,
        METRICS_PORT=metrics_port,
        USER_SALT=SecretStr(SALT),
        DRAIN_SECONDS=300,
    )
    service = create_service(settings)
    serving = asyncio.create_task(serve(service))
    try:
        # trust_env=False: no proxy from the environment between the test and loopback.
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{metrics_port}", trust_env=False
            ) as metrics_client,
        ):
            assert (await first_answer(client, serving)).status_code == 200
            # The app built before serving is out of the garbage collector's way.
            assert gc.get_freeze_count() > 1000
            response = await client.get("/user_hash", params={"user_id": "TESTUSERID"})
            assert response.content == CONTRACT_BODY
            assert "server" not in response.headers  # what runs here is nobody's business
            # One process, two listeners, each serving only its own paths.
            assert (await metrics_client.get("/metrics")).status_code == 200
            assert (await metrics_client.get("/user_hash?user_id=x")).status_code == 404
            assert (await client.get("/metrics")).status_code == 404

            # Delivered before kill() returns; the loop runs its handler a few turns later.
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10):
                await asyncio.sleep(0)
            assert service.lifecycle.draining
            # Still listening and answering: only unready, and closing every connection.
            response = await client.get("/readyz")
            assert (response.status_code, response.json()) == (503, {"status": "draining"})
            assert response.headers["connection"] == "close"
            # Prometheus still scrapes a draining pod: the metrics listener is open too.
            response = await metrics_client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["connection"] == "close"

        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(serving, timeout=WAIT_SECONDS)
    finally:
        serving.cancel()
    # Both listeners closed with the drain's end.
    for closed_port in (port, metrics_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()
    assert lifecycle_events(caplog) == [
        ("ready", None),
        ("draining", "SIGTERM"),
        ("drain_cut_short", "SIGINT"),
        ("drained", None),
        ("stopped", None),
    ]


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        ("0.0.0.0", "0.0.0.0:{}"),
        ("127.0.0.1", "127.0.0.1:{}"),
        ("::", "[::]:{}"),  # an IPv6 address needs brackets before the port
        ("fe80::1", "[fe80::1]:{}"),
    ],
)
def test_hypercorn_binds_the_host_on_the_service_and_the_metrics_port(host: str, bind: str) -> None:
    assert hypercorn_config(Settings(HOST=host)).bind == [bind.format(8000), bind.format(9797)]


def test_hypercorn_config_from_the_settings() -> None:
    config = hypercorn_config(Settings(PORT=8123, METRICS_PORT=9123, GRACEFUL_TIMEOUT_SECONDS=7.5))
    assert config.bind == ["0.0.0.0:8123", "0.0.0.0:9123"]
    assert config.graceful_timeout == 7.5
    # Hypercorn's own access log would write the query string, which holds the user id.
    assert config.accesslog is None
    assert config.errorlog is logging.getLogger("hypercorn.error")  # JSON, like every logger
    assert config.include_server_header is False
    # What bounds the memory open connections hold: 16 KiB of request head (README's contract
    # table, docs/capacity.md).
    assert config.h11_max_incomplete_size == 16 * 1024
    assert config.keep_alive_timeout == 5
