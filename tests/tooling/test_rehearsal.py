"""The rehearsal's report side (rehearsal/): gates, summary.json and the plot, on records made
here. The whole of `python -m rehearsal` runs for real in tests/process/test_rolling_update.py
(local processes) and tests/cluster/test_rehearsal.py (the cluster)."""

import json
from pathlib import Path

from matplotlib.image import imread

from proving.openloop import Client, Error, RequestRecord
from rehearsal.plot import plot_rehearsal
from rehearsal.report import Event, Rehearsal, Role, Scenario, human_summary, summary
from tests.support.plots import red_pixels


def steady_load(start: float, end: float, latency: float, rate: int = 100) -> list[RequestRecord]:
    """Answered requests of both kinds, `rate` per second over [start, end)."""
    count = round((end - start) * rate)
    return [
        RequestRecord(start + n / rate, latency, list(Client)[n % 2], 200, None)
        for n in range(count)
    ]


def failed(at: float, client: Client = Client.NEW_CONNECTION) -> RequestRecord:
    return RequestRecord(at, 0.000_5, client, None, Error.REFUSED, "ConnectionRefusedError")


def rehearsal_of(*scenarios: tuple[str, Role, list[RequestRecord]]) -> Rehearsal:
    """Scenarios of 10 s each, one after another: 5 s steady at 2 ms, then a 5 s event
    window at 4 ms, plus any extra records given per scenario."""
    rehearsal = Rehearsal(
        target="test",
        rate=100,
        saturation=250,
        started_at=1_700_000_000,
        min_rollout_requests=400,
        not_ready_source="test",
    )
    for number, (name, role, extra) in enumerate(scenarios):
        start = number * 10.0
        rehearsal.scenarios.append(
            Scenario(
                name,
                role,
                start,
                start + 5,
                start + 10,
                events=[Event(start + 5, f"{name} SIGTERM")],
                revisions_seen=["1.0"],
                sigterm_to_not_ready={f"{name}-pod": 0.25},
            )
        )
        rehearsal.records += steady_load(start, start + 5, 0.002)
        rehearsal.records += steady_load(start + 5, start + 10, 0.004) + extra
    return rehearsal


def gate_results(rehearsal: Rehearsal) -> dict[str, bool]:
    return {gate["name"]: gate["passed"] for gate in summary(rehearsal)["gates"]}


CLEAN = (
    ("restart", Role.ROLLOUT, []),
    ("scale-down", Role.DISRUPTION, []),
    ("sigkill", Role.FAULT, [failed(26.0)]),
    ("no-drain", Role.NEGATIVE_CONTROL, [failed(36.0)]),
)


def test_a_clean_rehearsal_passes_every_gate() -> None:
    data = summary(rehearsal_of(*CLEAN))
    assert data["passed"] is True
    assert gate_results(rehearsal_of(*CLEAN)) == {
        "0 failed requests in restart": True,
        "0 failed requests in scale-down": True,
        "negative control no-drain records failures": True,
        "at least 400 requests during the rollouts": True,
        "0 failed requests outside the scenarios": True,
    }
    json.loads(json.dumps(data))  # plain JSON, nothing exotic


def test_one_failed_request_in_a_gated_scenario_fails_the_rehearsal() -> None:
    rehearsal = rehearsal_of(
        ("restart", Role.ROLLOUT, [failed(7.0, Client.KEEP_ALIVE)]), *CLEAN[1:]
    )
    assert gate_results(rehearsal)["0 failed requests in restart"] is False
    assert summary(rehearsal)["passed"] is False


def test_failures_in_a_fault_scenario_are_reported_not_gated() -> None:
    data = summary(rehearsal_of(*CLEAN))
    (sigkill,) = [s for s in data["scenarios"] if s["name"] == "sigkill"]
    assert (sigkill["gated"], sigkill["failed"], sigkill["errors_by_kind"]) == (
        False,
        1,
        {"refused": 1},
    )
    assert data["passed"] is True


def test_a_failure_between_scenarios_fails_the_rehearsal() -> None:
    rehearsal = rehearsal_of(*CLEAN)
    rehearsal.records.append(failed(45.0))  # after the last scenario ended
    assert gate_results(rehearsal)["0 failed requests outside the scenarios"] is False


def test_a_gated_zero_without_both_client_kinds_proves_nothing() -> None:
    rehearsal = rehearsal_of(*CLEAN)
    rehearsal.records = [
        r for r in rehearsal.records if not (r.intended < 10 and r.client is Client.KEEP_ALIVE)
    ]
    assert gate_results(rehearsal)["0 failed requests in restart"] is False


def test_a_negative_control_without_failures_or_none_at_all_fails() -> None:
    silent_control = rehearsal_of(*CLEAN[:3], ("no-drain", Role.NEGATIVE_CONTROL, []))
    assert gate_results(silent_control)["negative control no-drain records failures"] is False
    no_control = rehearsal_of(*CLEAN[:3])
    assert gate_results(no_control)["a negative control ran"] is False


def test_only_the_rollouts_event_windows_count_toward_the_request_floor() -> None:
    rehearsal = rehearsal_of(*CLEAN)
    rehearsal.min_rollout_requests = 501  # the one rollout's event window holds 500
    assert gate_results(rehearsal)["at least 501 requests during the rollouts"] is False


def test_summary_holds_each_scenarios_numbers() -> None:
    data = summary(rehearsal_of(*CLEAN))
    (restart, _, _, control) = data["scenarios"]
    assert restart["requests"] == 1000
    assert restart["requests_by_client"] == {"keep-alive": 500, "new-connection": 500}
    steady, during = restart["steady"], restart["during"]
    assert steady == {"requests": 500, "failed": 0, "p50_ms": 2.0, "p99_ms": 2.0, "p99_wait_ms": 0}
    assert (during["requests"], during["p50_ms"], during["p99_ms"]) == (500, 4.0, 4.0)
    assert restart["p99_during_over_steady"] == 2.0
    assert restart["revisions_seen"] == ["1.0"]
    assert restart["sigterm_to_not_ready_s"] == {"restart-pod": 0.25}
    assert restart["events"] == [{"at_s": 5.0, "what": "restart SIGTERM"}]
    assert control["failed_by_client"] == {"new-connection": 1}
    assert control["failure_samples"][0]["error"] == "refused"
    assert data["p99_during_over_steady_median"] == 2.0
    assert data["started_at"] == "2023-11-14T22:13:20Z"


def test_failure_samples_hold_an_example_of_every_kind() -> None:
    refused = [failed(5 + n / 100) for n in range(30)]
    unreachable = RequestRecord(8.0, 3.0, Client.NEW_CONNECTION, None, Error.UNREACHABLE, "113")
    control = rehearsal_of(("no-drain", Role.NEGATIVE_CONTROL, [*refused, unreachable]))

    (scenario,) = summary(control)["scenarios"]

    samples = [sample["error"] for sample in scenario["failure_samples"]]
    assert samples == ["refused"] * 20 + ["unreachable"]


def test_human_summary_names_every_scenario_and_ends_with_the_verdict() -> None:
    text = human_summary(summary(rehearsal_of(*CLEAN)), [Path("summary.json")])
    for name in ("restart", "scale-down", "sigkill", "no-drain"):
        assert name in text
    (restart,) = [line for line in text.splitlines() if line.startswith("restart ")]
    # requests, failed, p50/p99 steady and during, each pod's SIGTERM to not ready (ms).
    assert restart.split()[2:8] == ["1,000", "0", "2.0/2.0", "4.0/4.0", "+250", "-"]
    assert text.splitlines()[-1] == "RESULT: PASS"
    assert "FAIL" in human_summary(summary(rehearsal_of(*CLEAN[:3])), [])


def test_the_plot_marks_failed_requests_in_red(tmp_path: Path) -> None:
    clean = rehearsal_of(*CLEAN[:2])
    broken = rehearsal_of(*CLEAN[:2])
    broken.records += [failed(7.0 + n / 100) for n in range(50)]
    plot_rehearsal(clean, tmp_path / "clean.png")
    plot_rehearsal(broken, tmp_path / "broken.png")
    assert imread(tmp_path / "clean.png").shape[:2] == (750, 1400)
    # Only the legend's swatches are red when nothing failed.
    assert red_pixels(tmp_path / "broken.png") > 3 * red_pixels(tmp_path / "clean.png")
