"""`python -m rehearsal`: run the scenarios under load, write summary.json and
rollout.png, print the summary last; exit 1 when a gate fails.

Run it from the repository root (it uses the test suite's load generator and
service helpers from tests/support).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rehearsal.local import rehearse_locally
from rehearsal.plot import plot_rehearsal
from rehearsal.report import human_summary, summary, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__)
    parser.add_argument(
        "--mode",
        choices=["local"],
        default="local",
        help="local: python -m user_hasher processes on this machine, no cluster",
    )
    parser.add_argument("--out", type=Path, default=Path("build/rehearsal"))
    options = parser.parse_args(argv)

    rehearsal = rehearse_locally(options.out / "logs")
    data = summary(rehearsal)
    summary_path, plot_path = options.out / "summary.json", options.out / "rollout.png"
    write_summary(data, summary_path)
    plot_rehearsal(rehearsal, plot_path)
    print(human_summary(data, [summary_path, plot_path]))
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
