#!/usr/bin/env bash
# Makes a Docker engine reachable: does nothing when one already answers, otherwise starts
# Debian's dockerd in the background and waits, bounded, until it answers.
# Installs nothing: .ci/run installs docker.io. There is no systemd here, hence the manual start.
#
# --bridge=none --iptables=false: this machine allows loopback traffic only, so containers use
# --network=host and bind 127.0.0.1; no bridge or NAT rules are created.
set -euo pipefail

# Debian's own client: a newer docker CLI may come first on PATH (it is only used to ask).
docker_cli=${DOCKER:-/usr/bin/docker}
log_file=${DOCKERD_LOG:-/var/log/dockerd.log}
# A cold dockerd answers within seconds; 60 s covers a slow disk without letting CI hang on
# an engine that never comes up.
wait_seconds=60

engine_answers() {
  timeout 10 "$docker_cli" version >/dev/null 2>&1
}

if engine_answers; then
  echo "start-dockerd: engine already reachable"
  exit 0
fi

# Two callers at once (CI, a helper) must not start two daemons on one data root.
exec 9>/run/user-hasher-start-dockerd.lock
flock --timeout "$wait_seconds" 9

if ! engine_answers; then
  command -v dockerd >/dev/null || {
    echo "start-dockerd: dockerd not installed (apt package docker.io)" >&2
    exit 1
  }
  echo "start-dockerd: starting dockerd (log: $log_file)"
  # setsid + nohup: the daemon outlives this script and the shell that ran it.
  setsid nohup dockerd --bridge=none --iptables=false >>"$log_file" 2>&1 </dev/null &
fi

for ((waited = 0; waited < wait_seconds; waited++)); do
  if engine_answers; then
    echo "start-dockerd: engine reachable after ${waited} s"
    exit 0
  fi
  sleep 1
done
echo "start-dockerd: engine not reachable after ${wait_seconds} s; last log lines:" >&2
tail -n 20 "$log_file" >&2 || true
exit 1
