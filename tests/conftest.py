from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from proving.contract import CONTRACT_SALT
from proving.service import ServiceProcess
from user_hasher.app import Service, create_service
from user_hasher.settings import Settings

SALT = CONTRACT_SALT


@pytest.fixture
def service() -> Service:
    """A freshly assembled service (not started), with the brief's test salt."""
    return create_service(Settings(USER_SALT=SecretStr(SALT)))


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: start_service(USER_SALT="x", DRAIN_SECONDS="1") -> a ready ServiceProcess.

    At teardown every process is stopped, and its output is checked for the salt and
    for query strings: neither may reach a log line, whatever the test did.
    """
    started: list[tuple[ServiceProcess, dict[str, str]]] = []

    def start(wait_ready: bool = True, **env: str) -> ServiceProcess:
        service = ServiceProcess(tmp_path / f"service-{len(started)}.log", env).start()
        started.append((service, env))
        return service.wait_ready() if wait_ready else service

    yield start
    for service, env in started:
        service.stop()
        salt = env.get("USER_SALT")
        if salt:
            assert salt not in service.output, "the salt value appeared in the process output"
        # Every test request carries its user id in the query string: none may be logged.
        assert "user_id=" not in service.output, "a query string appeared in the process output"
