"""rehearsal/observe.py's reading of what the cluster did: the app's drain line in
`kubectl logs --timestamps` output, a pod's endpoint readiness across EndpointSlice watch
events, deletions seen by a pod watch, versions from /metrics; and the app's facts as
rehearsal/scenarios.py reads them from user_hasher.yaml."""

import datetime
from typing import Any

import pytest

from proving.kubectl import WatchEvent
from proving.manifests import MANIFEST, load_documents, only
from rehearsal.observe import (
    deletion_seen,
    draining_at,
    endpoint_readiness,
    hashes_generated,
    parse_timestamp,
    revisions,
    turned_not_ready,
)
from rehearsal.scenarios import App
from user_hasher.metrics import Metrics
from user_hasher.settings import Settings

# As `kubectl logs --timestamps` prints the app's lines: the runtime's nanosecond stamp first.
LOG = """\
2026-12-02T04:05:52.172714970Z {"time": "2026-12-02T04:05:52+0000", "message": "ready", "event": "ready"}
2026-12-02T04:06:21.121504135Z {"time": "2026-12-02T04:06:21+0000", "message": "draining", "event": "draining", "reason": "SIGTERM", "drain_seconds": 5.0}
2026-12-02T04:06:26.122099588Z {"time": "2026-12-02T04:06:26+0000", "message": "drain finished; closing listener", "event": "drained"}
"""  # noqa: E501


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def test_timestamps_keep_the_runtimes_microseconds() -> None:
    assert parse_timestamp("2026-12-02T04:06:21.121504135Z") == pytest.approx(
        epoch("2026-12-02T04:06:21.121504"), abs=1e-6
    )
    assert parse_timestamp("2026-12-02T04:06:21Z") == epoch("2026-12-02T04:06:21")
    assert parse_timestamp("2026-12-02T04:06:21.5+00:00") == epoch("2026-12-02T04:06:21.5")


def test_the_drain_line_dates_the_sigterm() -> None:
    assert draining_at(LOG) == pytest.approx(epoch("2026-12-02T04:06:21.121504"), abs=1e-6)
    without_drain = "\n".join(line for line in LOG.splitlines() if "draining" not in line)
    assert draining_at(without_drain) is None
    # A line that is not the app's JSON (kubectl's own complaint) is skipped.
    assert draining_at("unable to retrieve container logs for containerd://x\n" + LOG)


def slice_event(at: float, name: str, endpoints: dict[str, bool], kind: str = "MODIFIED") -> Any:
    return WatchEvent(
        at,
        kind,
        {
            "metadata": {"name": name},
            "endpoints": [
                {"targetRef": {"kind": "Pod", "name": pod}, "conditions": {"ready": ready}}
                for pod, ready in endpoints.items()
            ],
        },
    )


def test_endpoint_readiness_follows_each_pod_across_slices() -> None:
    events = [
        slice_event(1.0, "s1", {"a": True, "b": True}, "ADDED"),
        slice_event(2.0, "s2", {"c": False}, "ADDED"),  # c starting
        slice_event(3.0, "s2", {"c": True}),
        slice_event(4.0, "s1", {"a": False, "b": True}),  # a terminating
        slice_event(5.0, "s1", {"b": True}),  # a gone
        slice_event(6.0, "s2", {}, "DELETED"),  # c gone with its slice
    ]
    history = endpoint_readiness(events)
    assert history["a"] == [(1.0, True), (4.0, False)]
    assert history["b"] == [(1.0, True)]
    assert history["c"] == [(2.0, False), (3.0, True), (6.0, False)]


def test_not_ready_is_the_first_fall_from_ready_after_the_stop() -> None:
    # Ready, killed at 10 (not ready at 11), restarted and ready at 15, deleted at 20.
    changes = [(1.0, False), (2.0, True), (11.0, False), (15.0, True), (20.5, False)]
    assert turned_not_ready(changes, after=10.0) == 11.0
    assert turned_not_ready(changes, after=19.9) == 20.5
    # A pod that was never ready never "turned" not ready, and nothing after the last change.
    assert turned_not_ready([(1.0, False)], after=0.0) is None
    assert turned_not_ready(changes, after=21.0) is None


def test_a_deletion_is_dated_by_its_first_sighting_and_the_api_servers_second() -> None:
    def pod(name: str, deleted: str | None = None, grace: int = 30) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if deleted:
            metadata |= {"deletionTimestamp": deleted, "deletionGracePeriodSeconds": grace}
        return {"metadata": metadata}

    events = [
        WatchEvent(1.0, "ADDED", pod("a")),
        WatchEvent(2.0, "MODIFIED", pod("a", "2026-12-02T04:06:51Z")),
        WatchEvent(3.0, "MODIFIED", pod("a", "2026-12-02T04:06:51Z")),
        WatchEvent(4.0, "DELETED", pod("b", "2026-12-02T04:06:22Z", grace=0)),
    ]
    assert deletion_seen(events) == {
        "a": (2.0, epoch("2026-12-02T04:06:21")),
        "b": (4.0, epoch("2026-12-02T04:06:22")),
    }


def test_revisions_come_from_the_build_info_series() -> None:
    text = (
        "# HELP user_hasher_build_info Build.\n# TYPE user_hasher_build_info gauge\n"
        'user_hasher_build_info{app_version="0.1.0",revision="abc-rehearsal",pod_ip="10.2.0.7"} 1\n'
        "# HELP other A counter.\n# TYPE other counter\n"
        'other_total{revision="ignored"} 3\n'
    )
    assert revisions(text) == ["abc-rehearsal"]


def test_hashes_generated_reads_the_apps_own_counter() -> None:
    metrics = Metrics(Settings())
    assert hashes_generated(metrics.render([])[0].decode()) == 0
    metrics.count_hash()
    metrics.count_hash()
    assert hashes_generated(metrics.render([])[0].decode()) == 2


def test_the_app_is_read_from_the_manifest() -> None:
    app = App.from_manifest()
    service = only(load_documents(MANIFEST), "Service")
    assert (app.namespace, app.service) == (service["metadata"]["namespace"], "user-hasher")
    assert app.service_port == 80
    assert app.pod_selector == (
        "app.kubernetes.io/name=user-hasher,app.kubernetes.io/instance=user-hasher"
    )
    # The Secret's test value: the salt every answer through the Service is checked with.
    assert app.salt == "TESTSALT"
