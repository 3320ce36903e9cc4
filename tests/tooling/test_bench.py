"""`make bench` keeps working: its short mode runs every row for a second or two and
writes a summary with every number. Nothing here asserts a speed: a shared CI machine
says nothing reliable about one, so the goals are read off `make bench` by a person."""

import json
import math
import subprocess
import sys

import pytest

from proving.manifests import REPO
from tests.support.needs import require_tool

pytestmark = pytest.mark.slow


def numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return []


def test_short_bench_measures_every_row() -> None:
    require_tool("wrk", "apt-get install wrk")
    require_tool("taskset", "apt-get install util-linux")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--short"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((REPO / "build/bench/summary.json").read_text())
    assert summary["mode"] == "short"

    variants = summary["throughput"]["variants"]
    assert set(variants) == {"raw ASGI", "minimal Quart", "shipped", "no access log", "no metrics"}
    for name, row in variants.items():
        assert row["rps_median"] > 0, name
        assert row["cpu_us_per_request_median"] > 0, name
        assert row["errors"] == 0, name
    assert [row["share_of_saturation"] for row in summary["latency"]] == [0.5, 0.7, 0.85]
    assert all(
        row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in summary["latency"]
    )
    assert summary["memory"]["rss_idle_mib"] > 0
    assert summary["connections"]["rss_with_idle_mib"] > summary["connections"]["rss_before_mib"]
    assert summary["probe_under_saturation"]["probes"] > 0
    assert "error" not in summary["profile"], summary["profile"]
    assert summary["profile"]["busy_samples"] > 0
    assert summary["capacity"]["rps_per_pod_at_hpa_target"] >= 0
    assert set(summary["goals"]) >= {"shipped >= 0.95x minimal Quart", "metrics < 3% of a request"}
    assert all(part["us"] > 0 for part in summary["parts"].values())
    assert {"before", "after"} <= set(summary["overload"])  # tests/tooling/test_bench_overload.py
    assert all(math.isfinite(n) for n in numbers(summary))
    # The table is printed, ending with where the summary went.
    assert "throughput (wrk" in result.stdout
    assert "wrote build/bench/summary.json" in result.stdout
    assert "overload (both servers limited to" in result.stdout or "overload (WARNING" in (
        result.stdout
    )
