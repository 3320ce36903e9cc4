"""The image run for real, locked down the way a pod runs it."""

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proving.contract import CONTRACT_BODY, CONTRACT_SALT, CONTRACT_TARGET
from proving.docker import HARDENED_RUN_ARGS, Container, docker
from proving.manifests import package_version

pytestmark = pytest.mark.docker

StartContainer = Callable[..., Container]
APP_UID = APP_GID = "10001"
# A stop takes the drain (5 s by default) plus a moment; this bounds it without mattering.
STOP_GRACE_SECONDS = 30


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def test_contract_and_health_with_read_only_root_and_no_privileges(
    start_container: StartContainer,
) -> None:
    container = start_container(*HARDENED_RUN_ARGS, USER_SALT=CONTRACT_SALT)
    print(f"docker run to /readyz 200: {container.ready_seconds:.2f} s")
    status, headers, body = container.get(CONTRACT_TARGET)
    assert (status, body) == (200, CONTRACT_BODY)
    assert headers["content-type"] == "application/json"
    assert container.get("/healthz")[0] == 200
    assert container.get("/readyz")[0] == 200


def test_metrics_answer_in_the_text_format(start_container: StartContainer) -> None:
    container = start_container(*HARDENED_RUN_ARGS, USER_SALT=CONTRACT_SALT)
    assert container.get(CONTRACT_TARGET)[0] == 200
    status, headers, body = container.get_metrics()
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(body.decode()))
    assert families
    # The package's own version (the image sets no APP_VERSION) reaches the metric labels.
    assert any(
        sample.labels.get("app_version") == package_version()
        for family in families
        for sample in family.samples
    )


def test_pid_1_is_the_venv_python_as_uid_10001_without_capabilities(
    start_container: StartContainer,
) -> None:
    container = start_container(*HARDENED_RUN_ARGS)
    pid = container.host_pid()
    status = proc_status(pid)
    assert status["Uid"].split() == [APP_UID] * 4  # real, effective, saved, filesystem
    assert status["NSpid"].split()[-1] == "1"  # PID 1 inside the container
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert cmdline == [b"/opt/venv/bin/python", b"-m", b"user_hasher"]
    # docker's own view: one process in the container (no shell, no init), run by uid 10001.
    top = docker("top", container.id, "-o", "pid,uid,args").splitlines()[1:]
    assert [line.split(None, 2) for line in top] == [
        [str(pid), APP_UID, "/opt/venv/bin/python -m user_hasher"]
    ]


def test_writes_nothing_even_when_the_root_filesystem_is_writable(
    start_container: StartContainer,
) -> None:
    # No --read-only and no --user here: the image's defaults alone must behave.
    container = start_container(USER_SALT=CONTRACT_SALT)
    status = proc_status(container.host_pid())
    assert status["Uid"].split() == [APP_UID] * 4
    assert status["Gid"].split() == [APP_GID] * 4
    for target in (CONTRACT_TARGET, "/healthz", "/readyz", "/nope"):
        container.get(target)
    container.get_metrics()
    container.stop(STOP_GRACE_SECONDS)
    assert container.inspect()["State"]["ExitCode"] == 0
    # Bytecode, logs, temp files: anything the process wrote would show here.
    assert docker("diff", container.id) == ""
