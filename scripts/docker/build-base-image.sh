#!/usr/bin/env bash
# Builds a local Debian bookworm base image with python3 for machines that cannot pull
# python:3.11-slim-bookworm (Docker Hub unreachable: CI here). Usage: build-base-image.sh TAG
#
# Cached: when TAG already exists the script does nothing (remove the image to rebuild it).
# The image trusts this machine's locally added CA certificates (outbound HTTPS here is
# re-signed by them; without them pip inside `docker build` fails with CERTIFICATE_VERIFY_FAILED).
# So it is a stand-in for CI only: never ship an image built on it.
set -euo pipefail

tag=${1:?usage: build-base-image.sh TAG}
docker_cli=${DOCKER:-docker}
# Debian 12: its python3 is 3.11, the version the lock files and the default base target.
suite=bookworm
# Where update-ca-certificates reads locally added certificates (*.crt).
local_ca_dir=/usr/local/share/ca-certificates

if "$docker_cli" image inspect "$tag" >/dev/null 2>&1; then
  echo "build-base-image: $tag exists; reusing it"
  exit 0
fi

# The mirror apt already uses for the suite's main component, as apt itself parsed its sources
# (one-line or deb822 format alike). $(REPO_URI) is apt's field syntax, not a shell expansion.
# shellcheck disable=SC2016
mirror=$(apt-get indextargets --format '$(REPO_URI)' \
  'Identifier: Packages' "Release: $suite" 'Component: main' | head -n 1)
if [[ -z $mirror ]]; then
  echo "build-base-image: no '$suite main' source in apt's sources; run apt-get update" >&2
  exit 1
fi

rootfs=$(mktemp -d /var/tmp/user-hasher-rootfs.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys inside the rootfs; a failed run can leave them mounted,
  # and deleting through a mount would delete the host's files.
  findmnt -rno TARGET | grep -F "$rootfs/" | sort -r | xargs -r umount -l || true
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

started=$SECONDS
echo "build-base-image: debootstrap $suite from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.debootstrap.log" 2>&1 || {
  tail -n 30 "$rootfs.debootstrap.log" >&2
  exit 1
}
rm -f "$rootfs.debootstrap.log"

shopt -s nullglob
local_certs=("$local_ca_dir"/*.crt)
if ((${#local_certs[@]})); then
  echo "build-base-image: trusting ${#local_certs[@]} local CA certificate(s) from $local_ca_dir"
  cp "${local_certs[@]}" "$rootfs$local_ca_dir/"
  # Its output (including a harmless openssl rehash warning) only matters when it fails.
  if ! ca_output=$(chroot "$rootfs" update-ca-certificates 2>&1); then
    echo "$ca_output" >&2
    exit 1
  fi
fi

# Package caches, indexes, docs and logs: nothing at run time reads them.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*

# The same PATH and C.UTF-8 locale the python:*-slim images set; CMD as in a plain Debian image.
tar -C "$rootfs" --numeric-owner -c . | "$docker_cli" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "build-base-image: built $tag in $((SECONDS - started)) s"
