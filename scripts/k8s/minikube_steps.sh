#!/usr/bin/env bash
# The only minikube-specific steps of `make minikube-deploy` and `make rollout`; everything
# else they do is plain kubectl (scripts/k8s/deploy.sh), which works on any cluster.
#   minikube_steps.sh start         start the minikube profile unless it runs
#   minikube_steps.sh build-image   build the image inside minikube's Docker engine, so the
#                                   node has it without a registry; print its unique reference
# Env: MINIKUBE_PROFILE (default minikube). Build output goes to stderr: stdout carries only
# the reference. On a machine without minikube, the cluster tests stand in for this script
# (tests/support/minikube_stand_in.py: same commands, same output).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=${MINIKUBE_PROFILE:-minikube}

case ${1:-} in
  start)
    minikube -p "$profile" status >/dev/null 2>&1 || minikube -p "$profile" start
    ;;
  build-image)
    # Assigned first: a failing `eval "$(minikube docker-env)"` would go on and build into
    # the local engine instead.
    docker_env=$(minikube -p "$profile" docker-env)
    eval "$docker_env"
    make --no-print-directory image >&2
    make --no-print-directory -s image-ref
    ;;
  *)
    echo "usage: $0 start|build-image" >&2
    exit 2
    ;;
esac
