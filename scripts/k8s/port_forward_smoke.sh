#!/usr/bin/env bash
# `make smoke`: forwards free localhost ports to the Service's `http` port and to one pod's
# `metrics` port, runs scripts/smoke.sh against them and stops both forwards whatever happens.
#   scripts/k8s/port_forward_smoke.sh KUBE_CONTEXT NAMESPACE APP
# APP names both the Service and the Deployment (k8s/base gives them one name).
set -euo pipefail

# kubectl prints the chosen port within a second or two; 30 s covers a slow API server.
readonly FORWARD_WAIT_SECONDS=30

if [[ $# -ne 3 ]]; then
  echo "usage: $0 KUBE_CONTEXT NAMESPACE APP" >&2
  exit 2
fi
context=$1 namespace=$2 app=$3
smoke_script="$(cd "$(dirname "$0")/.." && pwd)/smoke.sh"
workdir=$(mktemp -d)
forward_pids=()

stop_forwards() {
  local pid
  for pid in "${forward_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$workdir"
}
trap stop_forwards EXIT

# forward TARGET PORT_NAME: starts `kubectl port-forward TARGET :PORT_NAME` (local port left
# empty: kubectl picks a free one; the port by name, so its number lives only in k8s/base/)
# and sets $local_port to the port kubectl chose.
forward() {
  local log="$workdir/forward-${#forward_pids[@]}.log" pid tick
  : >"$log" # read below before the background kubectl may have opened it
  kubectl --context "$context" --namespace "$namespace" \
    port-forward --address 127.0.0.1 "$1" ":$2" >"$log" 2>&1 &
  pid=$!
  forward_pids+=("$pid")
  local_port=
  for ((tick = 0; tick < FORWARD_WAIT_SECONDS * 2; tick++)); do
    local_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p' "$log" | head -n 1)
    [[ -n $local_port ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "port-forward $1 :$2 exited:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "port-forward $1 :$2 printed no port within ${FORWARD_WAIT_SECONDS} s:" >&2
  cat "$log" >&2
  exit 1
}

forward "service/$app" http
service_port=$local_port
echo "smoke: service/$app :http in $namespace forwarded to 127.0.0.1:$service_port"
# The Service carries only `http`, for clients; /metrics is each pod's own `metrics` port,
# which kubectl reaches through a pod of the Deployment.
forward "deployment/$app" metrics
metrics_port=$local_port
echo "smoke: deployment/$app :metrics in $namespace forwarded to 127.0.0.1:$metrics_port"
"$smoke_script" "http://127.0.0.1:$service_port" "http://127.0.0.1:$metrics_port"
