"""`make rollout-check`'s parts that need no cluster: the Job's client run as the Job runs it
(the ConfigMap's two files in one directory, Python without site-packages) against a real
service process, its log read back by the checker, and the Job it applies.
(tests/cluster/test_rollout_check.py runs the whole check on the live cluster.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proving.contract import CONTRACT_SALT
from proving.manifests import MANIFEST, load_documents, only
from proving.openloop import Client, Error
from proving.service import ServiceProcess, free_port
from rehearsal.rollout_check import LOAD_FILES, CheckError, job_manifest, parse_log
from tests.k8s.schema import kubernetes_versions, schema_problems

SALT = CONTRACT_SALT


def run_job_client(directory: Path, port: int, salt: str, seconds: float = 2.0) -> str:
    for name, source in LOAD_FILES.items():
        shutil.copy(source, directory / name)
    load = ["--host=127.0.0.1", f"--port={port}", "--rate=100", f"--seconds={seconds}"]
    result = subprocess.run(
        # -S: no site-packages, as only the standard library can be relied on in the pod.
        [sys.executable, "-S", str(directory / "in_cluster_load.py"), *load],
        env={"USER_SALT": salt, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_the_jobs_client_records_every_request_against_a_real_service(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    service = start_service(USER_SALT=SALT)

    started_at, records = parse_log(run_job_client(tmp_path, service.port, SALT))

    assert started_at > 1.7e9
    assert 190 <= len(records) <= 201
    assert [r for r in records if not r.ok] == []
    assert {r.client for r in records} == set(Client)
    assert all(r.status == 200 and 0 < r.latency < 5 for r in records)


def test_the_jobs_client_checks_bodies_against_the_salt(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    service = start_service(USER_SALT=SALT)

    _, records = parse_log(run_job_client(tmp_path, service.port, "another salt", seconds=0.5))

    assert records
    assert {r.error for r in records} == {Error.BAD_RESPONSE}


def test_the_jobs_client_reports_refused_connections(tmp_path: Path) -> None:
    _, records = parse_log(run_job_client(tmp_path, free_port(), SALT, seconds=0.5))

    assert records
    assert {r.error for r in records} == {Error.REFUSED}


def test_a_log_cut_short_is_an_error_not_a_pass() -> None:
    log = '{"started_at": 1.0}\n[0.0, 0.001, "keep-alive", 200, null, 0.0, ""]\n'
    with pytest.raises(CheckError, match="ends early"):
        parse_log(log)
    with pytest.raises(CheckError, match="started_at"):
        parse_log("Traceback (most recent call last):\n")


def test_the_job_runs_the_given_image_and_load_in_bounded_time() -> None:
    job = json.loads(
        job_manifest("user-hasher:0.1.0-abc", "check", "svc.ns.svc.cluster.local.", 80, 200, 75)
    )
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert job["metadata"]["name"] == "check"
    assert container["image"] == "user-hasher:0.1.0-abc"
    assert container["args"] == [
        "--host=svc.ns.svc.cluster.local.",
        "--port=80",
        "--rate=200",
        "--seconds=75",
    ]
    assert pod["volumes"][0]["configMap"]["name"] == "check"
    assert job["spec"]["backoffLimit"] == 0
    assert 75 < job["spec"]["activeDeadlineSeconds"] <= 600
    assert pod["restartPolicy"] == "Never"


def test_the_job_carries_none_of_the_apps_selector_labels() -> None:
    """A Job pod with the app's labels would be a Service backend and fenced by its policy."""
    deployment = only(load_documents(MANIFEST), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    job = json.loads(job_manifest("img", "check", "h", 80, 1, 1))
    labels = job["spec"]["template"]["metadata"]["labels"]

    assert not selector.items() <= labels.items()


@pytest.mark.parametrize("kubernetes_version", kubernetes_versions())
def test_the_job_validates_against_the_strict_schemas(kubernetes_version: str) -> None:
    job = json.loads(job_manifest("img", "check", "h", 80, 200, 75))
    assert schema_problems([job], kubernetes_version) == ([], 1)
