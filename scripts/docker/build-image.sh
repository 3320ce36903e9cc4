#!/usr/bin/env bash
# The one image build (`make image`, the minikube steps and build_and_run.sh run it):
#   build-image.sh         build; tag the release tag user-hasher:VERSION and the build's own
#                          reference user-hasher:VERSION-<first 12 hex digits of the image ID>;
#                          print that reference (stdout carries only it; the build goes to stderr)
#   build-image.sh --ref   print the reference of the image built last
# The build's own reference is unique and immutable: the deploy targets roll the Deployment to
# it, so `kubectl rollout undo` brings back the previous build, and builds of other trees on
# the same engine cannot replace it.
# Env:
#   DOCKER       any docker client (default docker); it talks to whatever engine DOCKER_HOST
#                names. The client picks the builder (BuildKit where it has buildx).
#   BASE_IMAGE   unset: LOCAL_BASE_IMAGE when the engine has it (machines without Docker Hub,
#                built by `make base-image`), else the Dockerfile's pinned base; empty: the
#                Dockerfile's pinned base
#   VCS_REF, SOURCE_URL   OCI labels; default: the commit (marked -dirty when the tree has
#                changes) and the remote without any credentials it may carry, from git if any
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly IMAGE_NAME=user-hasher
readonly ID_FILE=build/image.id
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-user-hasher-base:bookworm}
docker=${DOCKER:-docker}
# The version is defined once, in pyproject.toml.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)

unique_ref() {
  local id
  id=$(cat "$ID_FILE" 2>/dev/null) || {
    echo "no $ID_FILE: build the image first (make image)" >&2
    return 1
  }
  id=${id#sha256:}
  echo "$IMAGE_NAME:$version-${id:0:12}"
}

case ${1:-} in
  --ref)
    unique_ref
    exit
    ;;
  '') ;;
  *)
    echo "usage: $0 [--ref]" >&2
    exit 2
    ;;
esac

if [[ -z ${BASE_IMAGE+set} ]]; then
  BASE_IMAGE=
  if "$docker" image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
    BASE_IMAGE=$LOCAL_BASE_IMAGE
  fi
fi
if [[ -z ${VCS_REF:-} ]]; then
  VCS_REF=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]]; then
    VCS_REF+=-dirty
  fi
fi
if [[ -z ${SOURCE_URL:-} ]]; then
  SOURCE_URL=$(git config --get remote.origin.url 2>/dev/null | sed -E 's#//[^/@]*@#//#' || true)
  SOURCE_URL=${SOURCE_URL:-unknown}
fi

build_args=(--build-arg "VERSION=$version" --build-arg "VCS_REF=$VCS_REF")
build_args+=(--build-arg "SOURCE_URL=$SOURCE_URL")
if [[ -n $BASE_IMAGE ]]; then
  build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

echo "image: building $IMAGE_NAME:$version on ${BASE_IMAGE:-the Dockerfile default base}" >&2
mkdir -p "$(dirname "$ID_FILE")"
"$docker" build --network=host "${build_args[@]}" --iidfile "$ID_FILE" \
  --tag "$IMAGE_NAME:$version" . >&2
ref=$(unique_ref)
"$docker" tag "$(cat "$ID_FILE")" "$ref"
echo "image: built $ref" >&2
echo "$ref"
