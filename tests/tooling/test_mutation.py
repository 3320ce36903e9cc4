"""`make mutation`'s own judgement: the score, the goal, and equivalents that went stale.

The mutation run itself takes minutes (`make mutation`, in CI); these check its rules on
made-up outcomes and a made-up package, in milliseconds."""

from pathlib import Path

import pytest

from mutation.__main__ import MAX_EQUIVALENT_SHARE, MIN_SCORE, Outcome, _judge, diff_hash
from mutation.targeted import ListError, load_mutants

DIFF = "--- a.py\n+++ a.py\n@@ -3,1 +3,1 @@\n-x = 1\n+x = 2"


def outcome(mutant_id: str, status: str, diff: str | None = DIFF) -> Outcome:
    return Outcome(mutant_id, "user_hasher.a", "mutmut", status, diff)


def test_the_diff_hash_ignores_where_the_function_sits_but_not_the_edit() -> None:
    moved = DIFF.replace("@@ -3,1 +3,1 @@", "@@ -30,1 +30,1 @@")
    assert diff_hash(moved) == diff_hash(DIFF)
    assert diff_hash(DIFF.replace("+x = 2", "+x = 3")) != diff_hash(DIFF)


def test_a_listed_equivalent_counts_only_while_its_diff_is_the_judged_one() -> None:
    listed = {
        "same": (diff_hash(DIFF), "judged"),
        "changed": (diff_hash(DIFF), "judged on another diff"),
        "killed": (diff_hash(DIFF), "judged, then a test learned to see it"),
        "gone": (diff_hash(DIFF), "its function was rewritten"),
    }
    summary = _judge(
        [
            outcome("same", "survived"),
            outcome("changed", "survived", DIFF.replace("+x = 2", "+x = 3")),
            outcome("killed", "killed"),
            outcome("new", "no tests"),
            *[outcome(f"k{n}", "killed") for n in range(6)],
        ],
        listed,
        partial=False,
    )
    assert {k: summary[k] for k in ("mutants", "killed", "survived", "equivalent")} == {
        "mutants": 10,
        "killed": 7,
        "survived": 2,
        "equivalent": 1,
    }
    assert summary["score"] == round(7 / 9, 4)
    assert [s["id"] for s in summary["survivors"]] == ["changed", "new"]
    assert {(s["id"], s["problem"]) for s in summary["stale_equivalents"]} == {
        ("changed", "its diff changed since it was judged"),
        ("killed", "listed as equivalent, but killed"),
        ("gone", "no such mutant any more"),
    }
    assert summary["modules"]["user_hasher.a"]["mutants"] == 10


@pytest.mark.parametrize(
    ("killed", "equivalent", "survived", "passed"),
    [
        (95, 0, 5, True),  # exactly the goal
        (94, 0, 6, False),
        (80, 15, 5, False),  # 80 / 85 is under the goal
        (81, 15, 4, True),  # 15 % equivalents is still within it
        (80, 16, 4, False),  # but not 16 %, however good the score
    ],
)
def test_the_goal(killed: int, equivalent: int, survived: int, passed: bool) -> None:
    assert (MIN_SCORE, MAX_EQUIVALENT_SHARE) == (0.95, 0.15)
    outcomes = [
        *[outcome(f"k{n}", "killed") for n in range(killed)],
        *[outcome(f"e{n}", "survived") for n in range(equivalent)],
        *[outcome(f"s{n}", "survived", DIFF + f"\n {n}") for n in range(survived)],
    ]
    listed = {f"e{n}": (diff_hash(DIFF), "equivalent") for n in range(equivalent)}
    assert _judge(outcomes, listed, partial=False)["passed"] is passed


def write_list(path: Path, old: str) -> Path:
    path.write_text(f'[[mutant]]\nid = "a.x"\nfile = "a.py"\nold = "{old}"\nnew = "x = 2"\n')
    return path


def test_a_targeted_mutant_is_one_edit_of_the_source(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\ny = 1\n")
    (mutant,) = load_mutants(write_list(tmp_path / "list.toml", "x = 1"), tmp_path)
    assert mutant.id == "targeted.a.x"
    assert mutant.module == "user_hasher.a"
    assert mutant.mutated_source == "x = 2\ny = 1\n"
    assert "-x = 1\n+x = 2" in mutant.diff


@pytest.mark.parametrize("source", ["z = 0\n", "x = 1\nx = 1\n"])
def test_a_targeted_edit_that_no_longer_applies_stops_the_run(tmp_path: Path, source: str) -> None:
    (tmp_path / "a.py").write_text(source)
    with pytest.raises(ListError, match=r"targeted\.a\.x: its `old` text occurs [02] times"):
        load_mutants(write_list(tmp_path / "list.toml", "x = 1"), tmp_path)
