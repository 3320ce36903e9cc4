#!/usr/bin/env bash
# `make smoke`: forwards a free localhost port to the Service, runs scripts/smoke.sh
# against it and stops the forward whatever happens.
#   scripts/k8s/port_forward_smoke.sh KUBE_CONTEXT NAMESPACE SERVICE
set -euo pipefail

# kubectl prints the chosen port within a second or two; 30 s covers a slow API server.
readonly FORWARD_WAIT_SECONDS=30

if [[ $# -ne 3 ]]; then
  echo "usage: $0 KUBE_CONTEXT NAMESPACE SERVICE" >&2
  exit 2
fi
context=$1 namespace=$2 service=$3
smoke_script="$(cd "$(dirname "$0")/.." && pwd)/smoke.sh"
forward_log=$(mktemp)
forward_pid=

stop_forward() {
  if [[ -n $forward_pid ]]; then
    kill "$forward_pid" 2>/dev/null || true
    wait "$forward_pid" 2>/dev/null || true
  fi
  rm -f "$forward_log"
}
trap stop_forward EXIT

# Local port left empty: kubectl picks a free one. `:http` is the Service port named
# http, so the port number lives only in k8s/base/40-service.yaml.
kubectl --context "$context" --namespace "$namespace" \
  port-forward --address 127.0.0.1 "service/$service" :http >"$forward_log" 2>&1 &
forward_pid=$!

local_port=
for ((tick = 0; tick < FORWARD_WAIT_SECONDS * 2; tick++)); do
  local_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p' "$forward_log" | head -n 1)
  [[ -n $local_port ]] && break
  if ! kill -0 "$forward_pid" 2>/dev/null; then
    echo "port-forward exited:" >&2
    cat "$forward_log" >&2
    exit 1
  fi
  sleep 0.5
done
if [[ -z $local_port ]]; then
  echo "port-forward printed no port within ${FORWARD_WAIT_SECONDS} s:" >&2
  cat "$forward_log" >&2
  exit 1
fi

echo "smoke: service/$service in $namespace forwarded to 127.0.0.1:$local_port"
"$smoke_script" "http://127.0.0.1:$local_port"
