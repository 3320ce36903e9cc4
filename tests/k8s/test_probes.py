"""The app, run with exactly the Deployment's env, answers its probes and shuts down
inside the pod's grace period."""

import signal
import time
from collections.abc import Callable

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_TARGET
from proving.manifests import Doc, app_container, only, pod_spec, resolve_env
from proving.service import ServiceProcess, http_get
from proving.waiting import wait_until

# What the kubelet would put in the downward-API variables; any address will do here.
FIELD_VALUES = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def start_like_the_deployment(
    docs: list[Doc], start_service: Callable[..., ServiceProcess]
) -> ServiceProcess:
    env = resolve_env(docs, FIELD_VALUES)
    # ServiceProcess listens on a free port instead; check_ports (test_semantics.py)
    # proves the app's default PORT is the container port the probes and the Service use.
    assert "PORT" not in env
    return start_service(**env)


@pytest.mark.slow
def test_probe_paths_answer_200(manifest_docs: list[Doc], start_service) -> None:
    container = app_container(only(manifest_docs, "Deployment"))
    started = time.monotonic()
    service = start_like_the_deployment(manifest_docs, start_service)
    startup_seconds = time.monotonic() - started

    for probe_name in PROBES:
        path = container[probe_name]["httpGet"]["path"]
        status, _, body = http_get(service.port, path)
        assert status == 200, f"{probe_name} {path}: {status} {body!r}"
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert startup_seconds < budget, f"ready after {startup_seconds:.1f} s, budget {budget} s"
    assert http_get(service.port, CONTRACT_TARGET)[2] == CONTRACT_BODY


@pytest.mark.slow
def test_sigterm_drains_and_exits_inside_the_grace_period(
    manifest_docs: list[Doc], start_service
) -> None:
    grace = pod_spec(only(manifest_docs, "Deployment"))["terminationGracePeriodSeconds"]
    readiness_path = app_container(only(manifest_docs, "Deployment"))["readinessProbe"]["httpGet"][
        "path"
    ]
    service = start_like_the_deployment(manifest_docs, start_service)

    signalled = time.monotonic()
    service.send_signal(signal.SIGTERM)
    # Unready within the drain (so the Service drops the pod) while still answering.
    assert wait_until(lambda: http_get(service.port, readiness_path)[0] == 503, timeout=4)
    assert service.wait_exit(timeout=grace) == 0
    exit_seconds = time.monotonic() - signalled
    assert exit_seconds < grace, f"exited after {exit_seconds:.1f} s, SIGKILL comes at {grace} s"
