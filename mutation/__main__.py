"""`make mutation` (`python -m mutation`): how much of src/user_hasher the fast tests guard.

Two sources of mutants, judged by the same fast tests (the pytest arguments in
pyproject.toml's [tool.mutmut], so both agree on what "fast" means):
- mutmut, over every undecorated function of the package;
- the targeted mutants of targeted.toml, for what mutmut cannot reach (decorated
  functions, module constants, the Settings fields).

A mutant that no test notices is a survivor, unless equivalent.txt lists it by id, with
the hash of its diff and why it cannot change behaviour anyone depends on. A listed id
that no longer exists, or whose diff changed, is reported and not counted as equivalent.

Writes build/mutation/summary.json, prints every survivor with its diff and exits 1 when
killed / (mutants - equivalent) < MIN_SCORE or equivalents are more than
MAX_EQUIVALENT_SHARE of all mutants. Everything runs in a copy under build/mutation/, so
the work tree stays clean; `--only mutmut|targeted` runs one source while iterating.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from mutation import targeted

MIN_SCORE = 0.95
MAX_EQUIVALENT_SHARE = 0.15
WORKERS = 2

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TARGETED_LIST = HERE / "targeted.toml"
EQUIVALENT_LIST = HERE / "equivalent.txt"
BUILD = ROOT / "build" / "mutation"
WORK = BUILD / "work"  # the copy mutmut runs in (it writes mutants/ beside the sources)
SUMMARY = BUILD / "summary.json"
PACKAGE_PATH = Path("src") / targeted.PACKAGE

# mutmut's statuses that mean a test noticed the mutant. The others ("survived", "no
# tests", "suspicious", "skipped", "not checked") are survivors.
MUTMUT_KILLED = {"killed", "timeout", "segfault", "caught by type check"}
_EQUIVALENT_LINE = re.compile(r"^(?P<id>\S+)\s+(?P<hash>[0-9a-f]{12})\s+(?P<reason>\S.*)$")


@dataclass(frozen=True)
class Outcome:
    id: str
    module: str
    tool: str  # mutmut | targeted
    status: str  # as the tool said: killed, survived, timeout, no tests, ...
    diff: str | None  # only read for mutants that were not killed


def diff_hash(diff: str) -> str:
    """Identifies a mutation by its edit and context, not by where its function sits."""
    kept = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:12]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("mutmut", "targeted"), help="run one source only")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, through make too
    started = time.monotonic()

    shutil.rmtree(BUILD, ignore_errors=True)
    _copy_sources(WORK)
    equivalents = _read_equivalents(EQUIVALENT_LIST)
    outcomes: list[Outcome] = []
    try:
        for source, run in (("targeted", _run_targeted), ("mutmut", _run_mutmut)):
            if args.only in (None, source):
                stage_started = time.monotonic()
                found = run()
                took = time.monotonic() - stage_started
                print(f"mutation: {source}: {len(found)} mutants in {took:.0f} s")
                outcomes += found
    except (targeted.ListError, RuntimeError) as error:
        print(f"mutation: ERROR: {error}")
        return 2

    summary = _judge(outcomes, equivalents, partial=args.only is not None)
    summary["seconds"] = round(time.monotonic() - started, 1)
    SUMMARY.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _print_report(summary)
    return 0 if summary["passed"] else 1


def _copy_sources(work: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in ("src", "tests", "proving"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")


def _fast_test_args() -> tuple[list[str], list[str]]:
    """(which tests, how to run them): the fast tests as mutmut runs them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return config["pytest_add_cli_args_test_selection"], config["pytest_add_cli_args"]


def _run_targeted() -> list[Outcome]:
    mutants = targeted.load_mutants(TARGETED_LIST, WORK / PACKAGE_PATH)
    print(f"mutation: targeted: {len(mutants)} from {TARGETED_LIST.name}, {WORKERS} workers")
    selection, options = _fast_test_args()
    verdicts = targeted.run_mutants(
        mutants,
        package_dir=WORK / PACKAGE_PATH,
        tests_dir=WORK / "tests",
        scratch=BUILD / "targeted",
        selection=selection,
        options=options,
        workers=WORKERS,
    )
    return [
        Outcome(v.mutant.id, v.mutant.module, "targeted", v.status, v.mutant.diff) for v in verdicts
    ]


def _run_mutmut() -> list[Outcome]:
    log = BUILD / "mutmut.log"
    mutmut = Path(sys.executable).with_name("mutmut")
    shown = log.relative_to(ROOT)
    print(f"mutation: mutmut: every function in {PACKAGE_PATH}, {WORKERS} workers (log: {shown})")
    with log.open("w") as out:
        run = subprocess.run(
            [str(mutmut), "run", "--max-children", str(WORKERS)],
            cwd=WORK,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if run.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"mutmut exited {run.returncode}; the end of {log}:\n{tail}")

    # mutmut's own helpers read its results relative to the directory it ran in.
    with contextlib.chdir(WORK):
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code

        outcomes = []
        for meta in sorted(Path("mutants", PACKAGE_PATH).rglob("*.py.meta")):
            source = meta.relative_to("mutants").with_suffix("")  # src/user_hasher/x.py
            module = ".".join(source.relative_to("src").with_suffix("").parts)
            exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
            for mutant_id, exit_code in exit_codes.items():
                status = status_by_exit_code[exit_code]
                diff = None
                if status not in MUTMUT_KILLED:
                    diff = get_diff_for_mutant(mutant_id, path=source)
                outcomes.append(Outcome(mutant_id, module, "mutmut", status, diff))
    return outcomes


def _read_equivalents(path: Path) -> dict[str, tuple[str, str]]:
    """id -> (diff hash, reason); a malformed line stops the run."""
    listed: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _EQUIVALENT_LINE.match(line)
        if match is None or match["id"] in listed:
            sys.exit(f"mutation: ERROR: {path.name}:{number}: not `id hash reason`, or a repeat")
        listed[match["id"]] = (match["hash"], match["reason"])
    return listed


def _judge(outcomes: list[Outcome], equivalents: dict[str, tuple[str, str]], partial: bool) -> dict:
    stale: list[dict[str, str]] = []
    survivors: list[dict[str, str]] = []
    totals: Counter[str] = Counter()
    by_group: dict[str, defaultdict[str, Counter[str]]] = {
        "modules": defaultdict(Counter),
        "tools": defaultdict(Counter),
    }
    for outcome in outcomes:
        listed = equivalents.get(outcome.id)
        found_hash = diff_hash(outcome.diff or "")
        if outcome.status in MUTMUT_KILLED:
            verdict = "killed"
            if listed:
                stale.append({"id": outcome.id, "problem": "listed as equivalent, but killed"})
        elif listed and listed[0] == found_hash:
            verdict = "equivalent"
        else:
            verdict = "survived"
            if listed:
                stale.append({"id": outcome.id, "problem": "its diff changed since it was judged"})
            survivors.append(
                {
                    "id": outcome.id,
                    "module": outcome.module,
                    "status": outcome.status,
                    "diff_sha256": found_hash,
                    "diff": outcome.diff or "",
                }
            )
        module_counts = by_group["modules"][outcome.module]
        for counts in (totals, module_counts, by_group["tools"][outcome.tool]):
            counts["mutants"] += 1
            counts[verdict] += 1
    if not partial:
        found = {outcome.id for outcome in outcomes}
        stale += [
            {"id": mutant_id, "problem": "no such mutant any more"}
            for mutant_id in equivalents
            if mutant_id not in found
        ]

    summary = _score(totals)
    summary["passed"] = (
        summary["score"] >= MIN_SCORE and summary["equivalent_share"] <= MAX_EQUIVALENT_SHARE
    )
    summary["goal"] = {"min_score": MIN_SCORE, "max_equivalent_share": MAX_EQUIVALENT_SHARE}
    summary["partial"] = partial
    for group, counts_by_key in by_group.items():
        summary[group] = {key: _score(counts) for key, counts in sorted(counts_by_key.items())}
    summary["timeouts"] = [o.id for o in outcomes if o.status == "timeout"]
    summary["stale_equivalents"] = stale
    summary["survivors"] = survivors
    return summary


def _score(counts: Counter[str]) -> dict:
    mutants, equivalent = counts["mutants"], counts["equivalent"]
    judged = mutants - equivalent
    return {
        "mutants": mutants,
        "killed": counts["killed"],
        "survived": counts["survived"],
        "equivalent": equivalent,
        "score": round(counts["killed"] / judged, 4) if judged else 1.0,
        "equivalent_share": round(equivalent / mutants, 4) if mutants else 0.0,
    }


def _print_report(summary: dict) -> None:
    for survivor in summary["survivors"]:
        print(f"\nSURVIVED {survivor['id']} {survivor['diff_sha256']} ({survivor['status']})")
        print(survivor["diff"])
    if summary["survivors"]:
        print(
            f"\nmutation: each survivor is a gap for a test to close; one that cannot change"
            f" behaviour anyone depends on goes into {EQUIVALENT_LIST.relative_to(ROOT)}"
            " as `id hash reason`."
        )
    for entry in summary["stale_equivalents"]:
        print(f"\nSTALE in {EQUIVALENT_LIST.name}: {entry['id']}: {entry['problem']}")
    for mutant_id in summary["timeouts"]:
        print(f"timeout (counted as killed): {mutant_id}")

    columns = ("mutants", "killed", "survived", "equivalent", "score")
    print(f"\n{'':<32} " + " ".join(f"{column:>10}" for column in columns))
    rows = [*summary["modules"].items(), *summary["tools"].items(), ("total", summary)]
    for name, row in rows:
        print(
            f"{name:<32} "
            + " ".join(f"{row[column]:>10}" for column in columns[:-1])
            + f" {row['score']:>10.1%}"
        )
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(
        f"\nmutation: {verdict}: score {summary['score']:.1%} (goal >= {MIN_SCORE:.0%}),"
        f" equivalents {summary['equivalent_share']:.1%} of all mutants"
        f" (goal <= {MAX_EQUIVALENT_SHARE:.0%}); {summary['seconds']} s;"
        f" {SUMMARY.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    sys.exit(main())
