#!/usr/bin/env bash
# The only minikube-specific steps of `make minikube-deploy` and `make rollout`; everything
# else they do is plain kubectl (scripts/k8s/deploy.sh), which works on any cluster.
#   minikube_steps.sh start         start the minikube profile unless it runs
#   minikube_steps.sh build-image   build the image with the local Docker engine and load it
#                                   into minikube's node, so the node has it without a
#                                   registry; print its unique reference
# Env: MINIKUBE_PROFILE (default minikube); MINIKUBE, the minikube command (default minikube:
# the cluster tests put a stand-in here, tests/support/minikube_stand_in.py). Build output
# goes to stderr: stdout carries only the reference.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=${MINIKUBE_PROFILE:-minikube}
read -r -a minikube <<<"${MINIKUBE:-minikube}"

case ${1:-} in
  start)
    "${minikube[@]}" -p "$profile" status >/dev/null 2>&1 || "${minikube[@]}" -p "$profile" start
    ;;
  build-image)
    ref=$(scripts/docker/build-image.sh)
    # `image load` rather than building in minikube's own engine (`minikube docker-env`):
    # it works whatever the node's container runtime, and the build reuses the local
    # engine's cache.
    "${minikube[@]}" -p "$profile" image load "$ref" >&2
    echo "$ref"
    ;;
  *)
    echo "usage: $0 start|build-image" >&2
    exit 2
    ;;
esac
