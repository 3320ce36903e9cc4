"""Numbers a live run measures (start times, request counts) that are worth reading in CI's
log: collected while the tests run, printed in a section of pytest's summary at the end."""

from __future__ import annotations

from typing import Any


class MeasuredNumbers:
    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []

    def report(self, line: str) -> None:
        self.lines.append(line)

    def write_summary(self, terminalreporter: Any) -> None:
        """For a conftest's `pytest_terminal_summary` hook."""
        if self.lines:
            terminalreporter.section(self.title)
            for line in self.lines:
                terminalreporter.write_line(line)
