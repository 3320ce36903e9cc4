#!/usr/bin/env bash
# Developer helper: build the image (as `make image` does) and run it in the foreground on
# 127.0.0.1:${PORT:-8000}, locked down the way a pod runs it. Ctrl-C stops it (it drains first).
#
# The salt comes from your environment and is passed by name only (`--env USER_SALT`), so its
# value never appears on a command line:  USER_SALT=... ./build_and_run.sh
# Without USER_SALT the service runs with an empty salt and logs a warning.
set -euo pipefail
cd "$(dirname "$0")"

docker_cli=${DOCKER:-docker}
port=${PORT:-8000}

# Needs only docker and bash: the build script is the one `make image` runs.
image=$(scripts/docker/build-image.sh)

salt_args=()
if [[ -n ${USER_SALT:-} ]]; then
  salt_args=(--env USER_SALT)
fi
tty_args=()
if [[ -t 0 ]]; then
  tty_args=(--interactive --tty)
fi

echo "build_and_run: serving $image on http://127.0.0.1:$port (/metrics on http://127.0.0.1:${METRICS_PORT:-9797})"
# Host network, listening on loopback only: reachable from this machine, from nowhere else.
exec "$docker_cli" run --rm --network=host "${tty_args[@]}" \
  --env HOST=127.0.0.1 --env "PORT=$port" --env "METRICS_PORT=${METRICS_PORT:-9797}" "${salt_args[@]}" \
  --read-only --cap-drop ALL --security-opt no-new-privileges --memory 128m \
  "$image"
