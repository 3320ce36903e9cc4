"""Targeted mutants: the edits listed in targeted.toml, each applied to its own copy of
the package and judged by the fast tests.

mutmut only mutates undecorated functions, so route handlers, startup hooks, properties,
module constants and the Settings fields would go unchecked without these.

An edit is found by its tokens, not its text (`find_edit`): layout, comments, the quotes
of a string, the spelling of a number and a trailing comma before a closing bracket do
not count, so a reformatted source takes the same edits. Each mutant
runs in a process forked from one that has already imported the heavy dependencies, so a
mutant costs its tests and not a fresh interpreter; the child puts its mutated copy first
on sys.path and proves afterwards that the tests imported that copy.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
import re
import shutil
import signal
import sys
import time
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

PACKAGE = "user_hasher"
# Imported once in the parent and shared by every forked child (with pytest's plugins).
# Never the package itself.
PRELOAD = (
    "pytest",
    "quart",
    "hypercorn.asyncio",
    "aioprometheus",
    "pydantic_settings",
    "pythonjsonlogger.json",
    "httpx",
    "hypothesis",
    "prometheus_client.parser",
)
# A mutant whose tests have not ended by then made one hang (say, a drain that never
# ends): its behaviour changed, so it counts as killed, reported as a timeout.
TIMEOUT_SECONDS = 120.0
_WRONG_PACKAGE = 99  # the child's exit code when the tests did not import its copy


class ListError(Exception):
    """targeted.toml no longer matches the source: an edit that cannot be applied."""


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str  # dotted, like mutmut's: user_hasher.hashing
    path: str  # relative to the package: hashing.py
    mutated_source: str
    diff: str


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    status: str  # killed | survived | timeout
    log: Path


def load_mutants(list_path: Path, package_dir: Path) -> list[Mutant]:
    """Every listed mutant, or ListError naming each edit that no longer applies."""
    entries = tomllib.loads(list_path.read_text())["mutant"]
    mutants, problems, seen = [], [], set()
    for entry in entries:
        if set(entry) != {"id", "file", "old", "new"}:
            problems.append(f"{entry.get('id')}: needs exactly id, file, old and new")
            continue
        mutant_id, path = f"targeted.{entry['id']}", entry["file"]
        if mutant_id in seen:
            problems.append(f"{mutant_id}: listed twice")
        seen.add(mutant_id)
        source_file = package_dir / path
        if not source_file.is_file():
            problems.append(f"{mutant_id}: {path} does not exist")
            continue
        source = source_file.read_text()
        spans = find_edit(entry["old"], source)
        if len(spans) != 1:
            found = len(spans)
            problems.append(f"{mutant_id}: its `old` text occurs {found} times in {path}, not once")
            continue
        ((start, end),) = spans
        mutated = source[:start] + entry["new"].strip() + source[end:]
        shown = f"src/{PACKAGE}/{path}"
        diff = "\n".join(
            difflib.unified_diff(
                source.splitlines(), mutated.splitlines(), shown, shown, n=1, lineterm=""
            )
        )
        module = ".".join([PACKAGE, *Path(path).with_suffix("").parts])
        mutants.append(Mutant(mutant_id, module, path, mutated, diff))
    if problems:
        raise ListError("\n".join(problems))
    return mutants


@dataclass(frozen=True)
class Token:
    key: tuple[str, str]  # what two spellings of one token share
    start: int  # offsets in the text it was read from
    end: int


_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|\\\n|\#[^\n]*)
  | (?P<string>[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''
        |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>0[xXoObB][0-9a-fA-F_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?[jJ]?)
  | (?P<name>\w+)
  | (?P<op>\*\*=?|//=?|->|:=|<<=?|>>=?|[-+*/%@&|^<>!=]=|\S)
    """,
    re.VERBOSE,
)
_CLOSING = frozenset({("op", ")"), ("op", "]"), ("op", "}")})
_COMMA = ("op", ",")


def tokens(text: str) -> list[Token]:
    """Python's tokens, read leniently: a fragment such as `Literal["DEBUG",` is fine.
    A literal is keyed by its value, so `'x'` and `"x"`, or `0XFF` and `0xff`, are one."""
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "op"
        if kind == "skip":
            continue
        spelled = match.group()
        prefix = spelled[: len(spelled) - len(spelled.lstrip("rRbBuUfF"))]
        if kind == "number" or (kind == "string" and "f" not in prefix.lower()):
            key = ("literal", repr(ast.literal_eval(spelled)))
        else:  # an f-string's spelling is its key
            key = (kind, spelled)
        found.append(Token(key, match.start(), match.end()))
    return found


def find_edit(old: str, source: str) -> list[tuple[int, int]]:
    """Every (start, end) span of `source` whose tokens are those of `old`. A comma just
    before a closing bracket may be on either side only (a formatter adds or drops it)."""
    wanted, have = tokens(old), tokens(source)
    spans = []
    for first in range(len(have)):
        if wanted and have[first].key == wanted[0].key:
            end = _match_from(wanted, have, first)
            if end is not None:
                spans.append((have[first].start, end))
    return spans


def _match_from(wanted: list[Token], have: list[Token], first: int) -> int | None:
    """The end offset of the match of `wanted` starting at have[first], or None."""
    w, h, end = 0, first, None
    while w < len(wanted):
        next_have = have[h].key if h < len(have) else None
        if next_have == wanted[w].key:
            end = have[h].end
            w, h = w + 1, h + 1
        elif _trailing_comma(have, h) and wanted[w].key in _CLOSING:
            h += 1
        elif wanted[w].key == _COMMA and (
            wanted[w + 1].key in _CLOSING if w + 1 < len(wanted) else next_have in _CLOSING
        ):
            w += 1
        else:
            return None
    return end


def _trailing_comma(found: list[Token], index: int) -> bool:
    return (
        index + 1 < len(found) and found[index].key == _COMMA and found[index + 1].key in _CLOSING
    )


def run_mutants(
    mutants: list[Mutant],
    *,
    package_dir: Path,
    tests_dir: Path,
    scratch: Path,
    selection: list[str],
    options: list[str],
    workers: int,
) -> list[Verdict]:
    """Runs the unmutated package first (it must pass), then every mutant: the tests of the
    mutated module first (tests/ mirrors the package), and only when they all pass the
    whole selection, so that a killed mutant costs its own tests and not the suite."""
    for name in PRELOAD:
        importlib.import_module(name)
    for plugin in entry_points(group="pytest11"):  # pytest-asyncio, hypothesis, ...
        importlib.import_module(plugin.value)
    assert PACKAGE not in sys.modules, "the parent must not import the package it mutates"
    shutil.rmtree(scratch, ignore_errors=True)

    clean_root = _copy_package(package_dir, scratch / "clean")
    clean_log = scratch / "clean.log"
    workdir = tests_dir.parent
    clean_pid = _fork_tests(clean_root, workdir, [*options, *selection], clean_log)
    _, wait_status = os.waitpid(clean_pid, 0)
    if (status := os.waitstatus_to_exitcode(wait_status)) != 0:
        raise RuntimeError(f"the fast tests fail without any mutant (exit {status}): {clean_log}")

    # Each job: a mutant, the directory of its copy, and its test runs still to go.
    queue: list[tuple[Mutant, Path, list[tuple[str, list[str]]]]] = []
    for index, mutant in enumerate(mutants):
        root = _copy_package(package_dir, scratch / str(index))
        (root / PACKAGE / mutant.path).write_text(mutant.mutated_source)
        nearest = [str(t) for t in _nearest_tests(mutant.path) if (workdir / t).exists()]
        runs = [("nearest", [*options, *nearest])] if nearest else []
        queue.append((mutant, root, [*runs, ("all", [*options, *selection])]))

    verdicts: list[Verdict] = []
    running: dict[int, tuple[Mutant, Path, list[tuple[str, list[str]]], Path, float]] = {}
    while queue or running:
        while queue and len(running) < workers:
            mutant, root, [(name, args), *runs_left] = queue.pop(0)
            log = root.with_name(f"{root.name}-{name}.log")
            pid = _fork_tests(root, workdir, args, log)
            running[pid] = (mutant, root, runs_left, log, time.monotonic() + TIMEOUT_SECONDS)
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for stuck_pid, (mutant, _, _, log, deadline) in list(running.items()):
                if time.monotonic() > deadline:
                    os.kill(stuck_pid, signal.SIGKILL)
                    os.waitpid(stuck_pid, 0)
                    del running[stuck_pid]
                    verdicts.append(Verdict(mutant, "timeout", log))
            time.sleep(0.02)
            continue
        mutant, root, runs_left, log, _ = running.pop(pid)
        status = _status(os.waitstatus_to_exitcode(wait_status), log)
        if status == "survived" and runs_left:
            queue.insert(0, (mutant, root, runs_left))
        else:
            verdicts.append(Verdict(mutant, status, log))
    return sorted(verdicts, key=lambda verdict: mutants.index(verdict.mutant))


def _copy_package(package_dir: Path, root: Path) -> Path:
    shutil.copytree(package_dir, root / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _nearest_tests(path: str) -> tuple[Path, ...]:
    """hashing.py: tests/unit/test_hashing.py; blueprints/health.py:
    tests/unit/blueprints/test_health.py."""
    source = Path(path)
    parent = Path("tests", "unit", source.parent)
    return (parent / f"test_{source.stem}.py", parent / source.stem)


def _fork_tests(root: Path, workdir: Path, pytest_args: list[str], log: Path) -> int:
    """Runs pytest in a child, in `workdir` (where tests/ is), on the package copy in `root`."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        with log.open("w") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        os.chdir(workdir)
        sys.path.insert(0, str(root))
        sys.dont_write_bytecode = True
        import pytest

        code = int(pytest.main([*pytest_args, "-x", "-q", "-p", "no:cacheprovider"]))
        imported = getattr(sys.modules.get(PACKAGE), "__file__", None) or ""
        if not Path(imported).is_relative_to(root):
            print(f"mutation: the tests imported {PACKAGE} from {imported!r}, not {root}")
            code = _WRONG_PACKAGE
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _status(exit_code: int, log: Path) -> str:
    # pytest exits 1 when a test failed, 2 when collection failed (say, the mutated module
    # cannot be imported) and 3 on an internal error; a signal (negative) ended the run
    # early: all of them noticed the mutant. A usage error (4), nothing collected (5) or
    # the wrong package imported means the run measured nothing: stop rather than guess.
    if exit_code == 0:
        return "survived"
    if exit_code in (1, 2, 3) or exit_code < 0:
        return "killed"
    raise RuntimeError(f"a targeted mutant's test run ended with exit {exit_code}: {log}")
