"""Stand-in for the minikube CLI on a machine that runs the local cluster
(proving/local_cluster.py) instead of minikube: the commands the deploy targets use
(scripts/k8s/minikube_steps.sh), with minikube's meaning.

    python -m proving.minikube_stand_in -p PROFILE status          0 when the cluster
                                                                         answers, else 7
    python -m proving.minikube_stand_in -p PROFILE start           never starts one (its
                                                                         starter stops it): 0
                                                                         when it answers
    python -m proving.minikube_stand_in -p PROFILE image load REF  the image copied from
                                                                         the local Docker engine
                                                                         into the node

The cluster is the one $KC_STATE names (LocalCluster.env() sets it). Everything else the
deploy targets do is real docker and kubectl against it.

operator_path() builds the PATH of an operator's machine: docker, kubectl, make, bash, curl,
the basic text tools, and this stand-in as `minikube`, and nothing else (no Python, no git).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from proving.local_cluster import REPO_ROOT, ClusterError, LocalCluster

# minikube's exit code for a profile whose host is not running.
STOPPED_EXIT_CODE = 7
# What scripts/k8s/minikube_steps.sh runs here (the Makefile's MINIKUBE).
COMMAND = f"{Path(sys.executable).parent / 'python'} -m proving.minikube_stand_in"
# The operator's tools besides docker, kubectl and minikube: make, bash, curl, and the text
# tools every Unix has (coreutils; sed, grep and cmp).
OPERATOR_TOOLS = [
    *["make", "bash", "curl", "sed", "grep", "cmp"],
    *["basename", "cat", "cut", "date", "dirname", "env", "head", "id", "ls", "mkdir"],
    *["mktemp", "mv", "rm", "sleep", "sort", "tail", "tee", "tr", "uname", "wc"],
]


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args[:1] in (["-p"], ["--profile"]):
        args = args[2:]
    cluster: LocalCluster | None = None
    problem = ""
    try:
        cluster = LocalCluster.attach()
    except ClusterError as error:
        problem = str(error)
    if args == ["status"]:
        print("minikube stand-in: " + ("Running" if cluster else f"Stopped ({problem})"))
        return 0 if cluster else STOPPED_EXIT_CODE
    if args == ["start"]:
        if cluster is None:
            print(f"minikube stand-in: starts no cluster: {problem}", file=sys.stderr)
            return 1
        print("minikube stand-in: the local cluster answers", file=sys.stderr)
        return 0
    if len(args) == 3 and args[:2] == ["image", "load"]:
        if cluster is None:
            print(f"minikube stand-in: no cluster: {problem}", file=sys.stderr)
            return 1
        seconds = cluster.import_image(args[2])
        print(f"minikube stand-in: {args[2]} in the node ({seconds:.1f} s to import)")
        return 0
    print(f"minikube stand-in: not one of its commands: {shlex.join(args)}", file=sys.stderr)
    return 2


def operator_path(bin_dir: Path) -> str:
    """A PATH of bin_dir alone, holding the operator's tools (links to this machine's) and
    `minikube`, this stand-in. The stand-in runs with this machine's PATH of its own (it
    uses ctr, as minikube has tools of its own inside)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    machine_path = os.environ.get("PATH", "")
    kubectl = Path(sys.executable).with_name("kubectl")
    tools = {name: shutil.which(name, path=machine_path) for name in [*OPERATOR_TOOLS, "docker"]}
    tools["kubectl"] = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    missing = sorted(name for name, found in tools.items() if found is None)
    if missing:
        raise FileNotFoundError(f"not on this machine: {' '.join(missing)}")
    for name, found in tools.items():
        (bin_dir / name).symlink_to(str(found))
    minikube = bin_dir / "minikube"
    repo, path = shlex.quote(str(REPO_ROOT)), shlex.quote(machine_path)
    minikube.write_text(f'#!/bin/bash\ncd {repo} && PATH={path} exec {COMMAND} "$@"\n')
    minikube.chmod(0o755)
    return str(bin_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
