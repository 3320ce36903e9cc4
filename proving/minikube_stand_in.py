"""Stand-in for scripts/k8s/minikube_steps.sh on a machine that runs the local cluster
(proving/local_cluster.py) instead of minikube: the same two commands, the same output.

    python -m proving.minikube_stand_in start         the cluster answers (it never starts
                                                      one: its starter stops it)
    python -m proving.minikube_stand_in build-image   `make image` with the local Docker
                                                      engine, then the image imported into
                                                      the node's containerd; prints its
                                                      unique reference

minikube builds inside the node's own Docker engine; here the node runs containerd, so the
image is built beside it and copied in. Everything else `make minikube-deploy` and
`make rollout` do is real kubectl against the cluster. The cluster is the one $KC_STATE
names (LocalCluster.env() sets it).
"""

import subprocess
import sys

from proving.local_cluster import REPO_ROOT, LocalCluster

# Far above a cold image build (README, "Container"), for a busy machine.
BUILD_TIMEOUT_SECONDS = 900


def make(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=True,
    )
    return result.stdout


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) == 2 else ""
    if command == "start":
        LocalCluster.attach()
        print("minikube stand-in: the local cluster answers", file=sys.stderr)
        return 0
    if command == "build-image":
        cluster = LocalCluster.attach()
        sys.stderr.write(make("image"))
        ref = make("-s", "image-ref").strip()
        seconds = cluster.import_image(ref)
        print(f"minikube stand-in: {ref} in the node ({seconds:.1f} s to import)", file=sys.stderr)
        print(ref)
        return 0
    print(f"usage: {argv[0]} start|build-image", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
