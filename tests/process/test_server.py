"""Process tests: the real `python -m user_hasher` on a real socket, real signals."""

import http.client
import json
import signal
import socket
import time
from collections.abc import Callable

import pytest

from proving.contract import CONTRACT_BODY, CONTRACT_SALT, CONTRACT_TARGET
from proving.openloop import LoadPlan, LoadRun, Target, keep_alive_closes
from proving.service import ServiceProcess, http_get
from proving.waiting import wait_until
from tests.metrics_text import BUILD_INFO, samples, scrape

pytestmark = pytest.mark.slow

StartService = Callable[..., ServiceProcess]
# The open-loop load: both client kinds, bounded by itself.
LOAD = LoadPlan.bounded(rate=200, seconds=30)


def raw_request(port: int, data: bytes) -> bytes:
    """Sends raw bytes, returns what the server answered before closing (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if len(answer) > 1_000_000:
                break
        return answer


def test_contract_over_http(start_service: StartService) -> None:
    service = start_service(USER_SALT="TESTSALT")
    status, headers, body = http_get(service.port, CONTRACT_TARGET)
    assert (status, body) == (200, CONTRACT_BODY)
    assert headers["content-type"] == "application/json"


def test_head_has_headers_and_no_body(start_service: StartService) -> None:
    service = start_service(USER_SALT="TESTSALT")
    answer = raw_request(
        service.port,
        b"HEAD /user_hash?user_id=TESTUSERID HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 42" in head.lower()
    assert body == b""


def test_health_endpoints(start_service: StartService) -> None:
    service = start_service()
    assert http_get(service.port, "/healthz")[0] == 200
    assert http_get(service.port, "/readyz")[0] == 200


def test_build_info_names_the_revision_and_the_fingerprint_of_the_salt_served(
    start_service: StartService,
) -> None:
    """Pods that serve different salts are told apart on /metrics, by what /user_hash
    answers for the canary user id, and no /metrics answer holds a salt."""
    salts = ("salt-one-4711", "salt-two-4712")
    # The guard is on: a real salt starts as usual.
    services = [
        start_service(USER_SALT=salt, APP_REVISION="0123abc-test", REQUIRE_SALT="true")
        for salt in salts
    ]
    fingerprints = []
    for service, salt in zip(services, salts, strict=True):
        text = scrape(service.metrics_port)
        (labels,) = [dict(labels) for name, labels in samples(text) if name == BUILD_INFO]
        assert labels["revision"] == "0123abc-test"
        _, _, body = http_get(service.port, "/user_hash?user_id=__salt_fingerprint__")
        assert labels["salt_fingerprint"] == json.loads(body)[:12]
        assert salt not in text
        fingerprints.append(labels["salt_fingerprint"])
        # Every log line names the build too.
        lines = [json.loads(line) for line in service.output.splitlines()]
        assert lines
        assert {line["revision"] for line in lines} == {"0123abc-test"}
    assert fingerprints[0] != fingerprints[1]


def test_unset_salt_is_warned_about_once_at_startup(start_service: StartService) -> None:
    service = start_service()
    warnings = [line for line in service.output.splitlines() if '"salt_unset"' in line]
    assert len(warnings) == 1
    assert json.loads(warnings[0])["level"] == "WARNING"


def test_oversized_request_line_and_headers_are_refused_without_harm(
    start_service: StartService,
) -> None:
    service = start_service(USER_SALT="TESTSALT")
    keep_alive = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    keep_alive.connect()
    try:
        huge_line = b"GET /user_hash?user_id=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        assert raw_request(service.port, huge_line).startswith(b"HTTP/1.1 431")
        huge_header = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
        assert raw_request(service.port, huge_header).startswith(b"HTTP/1.1 431")
        assert raw_request(service.port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        # A connection opened before the abuse still works, and so do new ones.
        keep_alive.request("GET", CONTRACT_TARGET)
        assert keep_alive.getresponse().read() == CONTRACT_BODY
        assert http_get(service.port, CONTRACT_TARGET)[2] == CONTRACT_BODY
    finally:
        keep_alive.close()


def test_logs_are_json_and_never_hold_the_user_id_or_query(start_service: StartService) -> None:
    service = start_service(USER_SALT="TESTSALT", LOG_LEVEL="DEBUG")  # every request logged
    secret_id = "private-user-4711"
    for target in (
        f"/user_hash?user_id={secret_id}",
        f"/user_hash?user_id={secret_id}&user_id=x",
        f"/{secret_id}",
        f"/user_hash?user_id={secret_id}{'z' * 300}",
    ):
        http_get(service.port, target)
    service.send_signal(signal.SIGTERM)
    service.wait_exit(timeout=30)
    lines = service.output.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [
        record
        for record in records
        if record.get("event") == "request" and record["route"] != "/readyz"  # start-up polls
    ]
    assert [record["route"] for record in access] == [
        "/user_hash",
        "/user_hash",
        "unmatched",
        "/user_hash",
    ]
    assert [record["status"] for record in access] == [200, 400, 404, 400]
    assert secret_id not in service.output
    assert "user_id=" not in service.output


def test_content_length_with_transfer_encoding_closes_the_connection(
    start_service: StartService,
) -> None:
    """A request smuggled behind an ambiguous one is never served (RFC 9112, 6.3)."""
    service = start_service(USER_SALT="TESTSALT", LOG_LEVEL="DEBUG")
    ambiguous = (
        b"POST /user_hash?user_id=a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    smuggled = b"GET /user_hash?user_id=SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n"
    answer = raw_request(service.port, ambiguous + smuggled)  # reads until the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "request has both Content-Length and Transfer-Encoding"}
    assert answer.count(b"HTTP/1.1") == 1, "the pipelined request was served"
    # The server itself is fine: the next connection is served as usual.
    assert http_get(service.port, CONTRACT_TARGET)[2] == CONTRACT_BODY
    assert '"status": 400' in service.output


def test_sigterm_under_load_drops_nothing(start_service: StartService) -> None:
    drain, graceful = 3.0, 5.0
    service = start_service(
        USER_SALT="TESTSALT", DRAIN_SECONDS=str(drain), GRACEFUL_TIMEOUT_SECONDS=str(graceful)
    )
    readyz_during_drain: list[int] = []
    with LoadRun(Target("127.0.0.1", service.port, CONTRACT_SALT), LOAD) as load:
        assert wait_until(lambda: load.answered() >= 50, timeout=15), "load never got going"
        signalled = time.monotonic()
        service.send_signal(signal.SIGTERM)
        assert wait_until(
            lambda: (
                readyz_during_drain.append(http_get(service.port, "/readyz")[0])
                or readyz_during_drain[-1] == 503
            ),
            timeout=drain / 2,
        )
        # A Service stops routing to the pod once it is unready; the load here stops
        # inside the drain window the same way, well before the listener closes.
        time.sleep(max(0.0, signalled + drain / 2 - time.monotonic()))
        records = load.stop()
    exit_code = service.wait_exit(timeout=drain + graceful + 10)
    exit_seconds = time.monotonic() - signalled
    failures = [record for record in records if not record.ok]
    closes = keep_alive_closes(records)

    print(
        f"load: {len(records) - len(failures)} ok, {len(failures)} failed, "
        f"{closes} keep-alive answers said Connection: close; exit {exit_code} "
        f"after {exit_seconds:.2f} s"
    )
    assert failures == []
    assert len(records) - len(failures) >= 50
    assert readyz_during_drain[-1] == 503
    assert closes > 0
    assert exit_code == 0
    assert exit_seconds <= drain + graceful + 1


def test_idle_sigterm_without_drain_exits_fast(start_service: StartService) -> None:
    service = start_service(DRAIN_SECONDS="0")
    signalled = time.monotonic()
    service.send_signal(signal.SIGTERM)
    assert service.wait_exit(timeout=10) == 0
    exit_seconds = time.monotonic() - signalled
    print(f"idle SIGTERM with DRAIN_SECONDS=0: exit 0 after {exit_seconds:.3f} s")
    assert exit_seconds < 1.0


def test_port_already_taken_is_one_clear_error(start_service: StartService) -> None:
    first = start_service()
    second = start_service(wait_ready=False, PORT=str(first.port))
    assert second.wait_exit(timeout=30) == 1
    failure = json.loads(second.output.splitlines()[-1])
    assert failure["event"] == "serve_failed"
    assert "Traceback" not in second.output


def test_sigint_drains_and_exits_0_too(start_service: StartService) -> None:
    service = start_service(DRAIN_SECONDS="0.5")
    service.send_signal(signal.SIGINT)
    assert service.wait_exit(timeout=10) == 0
    assert '"reason": "SIGINT"' in service.output


def test_second_signal_skips_the_rest_of_the_drain(start_service: StartService) -> None:
    service = start_service(DRAIN_SECONDS="120", GRACEFUL_TIMEOUT_SECONDS="2")
    service.send_signal(signal.SIGTERM)
    assert wait_until(lambda: http_get(service.port, "/readyz")[0] == 503, timeout=10)
    signalled_again = time.monotonic()
    service.send_signal(signal.SIGTERM)
    assert service.wait_exit(timeout=30) == 0
    assert time.monotonic() - signalled_again < 2 + 1
    assert '"drain_cut_short"' in service.output


def test_negative_control_load_checker_sees_a_killed_server(start_service: StartService) -> None:
    """The zero above means something: the same checker counts drops from a SIGKILL."""
    service = start_service(USER_SALT="TESTSALT")
    with LoadRun(Target("127.0.0.1", service.port, CONTRACT_SALT), LOAD) as load:
        assert wait_until(lambda: load.answered() >= 50, timeout=15)
        service.send_signal(signal.SIGKILL)
        assert wait_until(
            lambda: sum(not record.ok for record in load.snapshot()) >= 10, timeout=10
        )
        records = load.stop()
    assert service.wait_exit(timeout=10) == -signal.SIGKILL
    assert sum(not record.ok for record in records) >= 10
