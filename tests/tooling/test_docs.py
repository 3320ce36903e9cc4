"""Every relative link in README, PLAN and docs/ reaches a file that exists, and every
`#anchor` a heading of the page it points at (as GitHub derives anchors from headings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "PLAN.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(markdown: str) -> str:
    """The text outside fenced blocks, where a link is a link."""
    return FENCE.sub("", markdown)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than `-`
    and `_` removed, each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(page.read_text())):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        found.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return found


def broken_links(page: Path) -> list[str]:
    problems = []
    text = CODE_SPAN.sub("", prose(page.read_text()))
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{page.name}: {target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{page.name}: {target}: no heading with that anchor")
    return problems


def test_the_pages_exist() -> None:
    assert {page.name for page in PAGES} >= {
        "README.md",
        "PLAN.md",
        "operating.md",
        "design.md",
        "capacity.md",
        "testing.md",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_check_catches_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## How a pod shuts down (zero downtime)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#how-a-pod-shuts-down-zero-downtime) [self](#page)\n"
        "[gone](missing.md) [no anchor](other.md#capacity) [web](https://example.org/x.md)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md: missing.md: no such file",
        "page.md: other.md#capacity: no heading with that anchor",
    ]


def test_anchors_follow_github() -> None:
    assert anchor("Names in Kubernetes: `user-hasher`, `user-salt`") == (
        "names-in-kubernetes-user-hasher-user-salt"
    )
    assert anchor("Zero downtime, rehearsed (`make rehearse`)") == (
        "zero-downtime-rehearsed-make-rehearse"
    )
    assert anchor("What made the app's own work cheap") == "what-made-the-apps-own-work-cheap"
