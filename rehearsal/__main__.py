"""`python -m rehearsal`: run the scenarios under load, write summary.json and
rollout.png, print the summary last; exit 1 when a gate fails.

Run it from the repository root (it uses the proving tools: the load generator and cluster
helpers in proving/). The cluster mode needs root, a Docker engine and the
cluster bundle (../shared/kube): `make rehearse` runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rehearsal.local import rehearse_locally
from rehearsal.nodes import rehearse_nodes
from rehearsal.plot import plot_rehearsal
from rehearsal.report import human_summary, summary, write_summary
from rehearsal.scenarios import rehearse_on_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__)
    parser.add_argument(
        "--mode",
        choices=["cluster", "local"],
        default="cluster",
        help="cluster: the local Kubernetes (default); "
        "local: python -m user_hasher processes on this machine, no cluster",
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help="cluster mode: use the running local cluster that $KC_STATE names instead of "
        "starting one (it is left running, with this build deployed again)",
    )
    parser.add_argument(
        "--nodes",
        action="store_true",
        help="cluster mode: the node scenarios (drain, cluster upgrade, kube-proxy and API "
        "server stopped, a node's death) on three nodes in three zones; with --attach the "
        "cluster must have them (rehearsal/nodes.py)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default build/rehearsal[-nodes]")
    options = parser.parse_args(argv)
    if options.out is None:
        options.out = Path("build/rehearsal-nodes" if options.nodes else "build/rehearsal")

    if options.mode == "local":
        rehearsal = rehearse_locally(options.out / "logs")
    elif options.nodes:
        rehearsal = rehearse_nodes(options.out, attach=options.attach)
    else:
        rehearsal = rehearse_on_cluster(options.out, attach=options.attach)
    data = summary(rehearsal)
    summary_path, plot_path = options.out / "summary.json", options.out / "rollout.png"
    write_summary(data, summary_path)
    plot_rehearsal(rehearsal, plot_path)
    print(human_summary(data, [summary_path, plot_path]))
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
