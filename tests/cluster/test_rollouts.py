"""`make rollout` for real: the same build restarts the pods (each old pod drains, logs it and
exits 0 inside its grace period, in the kubelet's own record, while Prometheus swaps the old
targets for the new), a new build rolls the Deployment to its own reference, and
`kubectl rollout undo` brings the previous build back."""

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from proving.kubectl import WatchEvent, stop_process
from proving.local_cluster import LocalCluster
from proving.manifests import REPO
from rehearsal.observe import deletion_seen, parse_timestamp
from tests.cluster.conftest import (
    APP,
    NAMESPACE,
    SELECTOR,
    DeployedApp,
    report,
    running_image,
    scraped_targets,
    wait_steady,
)
from tests.cluster.prometheus import ClusterPrometheus

SCRAPE_WAIT_SECONDS = 90
# A second build of the same code: only its revision label differs, so its image ID does.
SECOND_BUILD = "cluster-test-second-build"


def final_states(events: list[WatchEvent], names: set[str]) -> dict[str, dict[str, Any]]:
    """Each named pod's container state once terminated (the kubelet's record)."""
    states = {}
    for event in events:
        pod = event.object
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if pod["metadata"]["name"] in names and statuses and "terminated" in statuses[0]["state"]:
            states[pod["metadata"]["name"]] = statuses[0]["state"]["terminated"]
    return states


@pytest.fixture
def followed_logs(
    cluster: LocalCluster, steady: list[dict[str, Any]], tmp_path: Any
) -> Iterator[dict[str, Any]]:
    """`kubectl logs -f` of every current pod, to its file, until the pod's container ends."""
    followers = {}
    for pod in steady:
        name = pod["metadata"]["name"]
        path = tmp_path / f"{name}.log"
        with path.open("w") as log:
            follow = cluster.client.in_namespace(NAMESPACE).popen(
                "logs", "--follow", name, stdout=log, stderr=subprocess.STDOUT
            )
            followers[name] = (follow, path)
    yield followers
    for process, _ in followers.values():
        stop_process(process)


def test_make_rollout_of_the_running_build_restarts_and_every_old_pod_drains(
    cluster: LocalCluster,
    app: DeployedApp,
    run_make: Any,
    prometheus: ClusterPrometheus,
    steady: list[dict[str, Any]],
    followed_logs: dict[str, Any],
) -> None:
    old = {pod["metadata"]["name"] for pod in steady}
    cluster.wait_for(lambda: scraped_targets(prometheus, steady), SCRAPE_WAIT_SECONDS, "targets")
    with cluster.watch("pods", NAMESPACE, SELECTOR) as pods:
        started = time.monotonic()
        result = run_make("rollout")
        rollout_seconds = time.monotonic() - started
        new_pods = wait_steady(cluster)
        cluster.wait_for(
            lambda: len(final_states(pods.snapshot(), old)) == len(old),
            120,
            "every old pod's container terminated",
        )
    assert f"deploy: {app.image_ref} runs already; restarting its pods" in result.stdout
    assert old.isdisjoint(pod["metadata"]["name"] for pod in new_pods)

    exits = []
    # When the API server accepted each deletion (the SIGTERM), from the first object that
    # shows it; a rollout deletes with the pod's own grace period.
    deleted = deletion_seen(pods.events)
    grace = steady[0]["spec"]["terminationGracePeriodSeconds"]
    for name, terminated in final_states(pods.events, old).items():
        _, sigterm = deleted[name]
        exit_seconds = parse_timestamp(terminated["finishedAt"]) - sigterm
        exits.append(exit_seconds)
        # The kubelet's record: a clean exit, not its SIGKILL (137) at the end of the grace.
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed"), terminated
        assert exit_seconds < grace, f"{name} exited {exit_seconds:.0f} s after SIGTERM"
        process, log_path = followed_logs[name]
        process.wait(timeout=60)
        log = log_path.read_text()
        assert '"event": "draining"' in log, f"{name} did not log its drain:\n{log[-2000:]}"
        assert '"event": "drained"' in log, f"{name} did not finish its drain:\n{log[-2000:]}"

    cluster.wait_for(
        lambda: scraped_targets(prometheus, new_pods),
        SCRAPE_WAIT_SECONDS,
        "Prometheus scraping the new pods only",
    )
    report(
        f"make rollout (restart): {rollout_seconds:.1f} s; old pods exited 0 after SIGTERM in "
        f"{', '.join(f'{s:.0f}' for s in sorted(exits))} s; Prometheus now scrapes the "
        f"{len(new_pods)} new pods only"
    )


def image_ids(cluster: LocalCluster) -> set[str]:
    """The image each pod's container runs, as the kubelet reports it."""
    return {
        pod["status"]["containerStatuses"][0]["imageID"]
        for pod in cluster.pods(NAMESPACE, SELECTOR)
    }


def test_make_rollout_of_a_new_build_and_undo_brings_back_the_previous_one(
    cluster: LocalCluster, app: DeployedApp, run_make: Any, steady: list[dict[str, Any]]
) -> None:
    first_ids = image_ids(cluster)
    assert running_image(cluster) == app.image_ref
    assert len(first_ids) == 1
    try:
        started = time.monotonic()
        result = run_make("rollout", VCS_REF=SECOND_BUILD)
        rollout_seconds = time.monotonic() - started
    finally:
        # Back to this tree's own build in build/image.id (a cached no-op build).
        subprocess.run(["make", "-s", "image"], cwd=REPO, capture_output=True, timeout=900)
    second_ref = running_image(cluster)
    assert second_ref != app.image_ref
    assert f"deploy: {APP} runs {second_ref} on 3 replicas" in result.stdout
    wait_steady(cluster)
    second_ids = image_ids(cluster)
    assert len(second_ids) == 1
    assert second_ids != first_ids

    started = time.monotonic()
    cluster.kubectl("--namespace", NAMESPACE, "rollout", "undo", f"deployment/{APP}")
    cluster.kubectl(
        "--namespace",
        NAMESPACE,
        "rollout",
        "status",
        f"deployment/{APP}",
        "--timeout=300s",
        timeout=360,
    )
    undo_seconds = time.monotonic() - started
    wait_steady(cluster)
    assert running_image(cluster) == app.image_ref
    assert image_ids(cluster) == first_ids, "rollout undo did not bring the first build back"
    report(
        f"make rollout to a new build ({second_ref}): {rollout_seconds:.1f} s; "
        f"rollout undo back to {app.image_ref}: {undo_seconds:.1f} s"
    )
