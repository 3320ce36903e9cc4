# user_hasher image. `docker build -t user-hasher .` works as is; `make image` adds the OCI
# labels below and a unique tag per build (docs/design.md, "The container"). Run it as
# `docker run -e USER_SALT ... IMAGE`. No salt is ever built in.
#
# Both stages use the same base so the venv's interpreter symlink resolves in the runtime stage.
# Where Docker Hub is unreachable (CI here), `make base-image` builds a local Debian base and
# `make image` passes it instead (docs/design.md, "The container").
ARG BASE_IMAGE=python:3.11.16-slim-bookworm

# --- builder: a venv with the pinned runtime dependencies and the package, nothing else ---
FROM ${BASE_IMAGE} AS builder

# A fixed path, the same in both stages: a venv records its own location in its scripts.
ENV VENV=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# `python3`, not `python`: the Debian base has no `python` command. The venv gets no pip of its
# own (the base's pip installs into it), so none is shipped.
RUN python3 -m venv --without-pip "$VENV"

# Dependencies before the source, so a code change reuses this layer. The lock pins the whole
# tree; --no-deps makes pip install exactly that list and resolve nothing; --require-hashes
# fails the build on any file whose sha256 the lock does not list, naming the package.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN python3 -m pip --python "$VENV/bin/python" install --no-compile --no-deps --require-hashes \
        -r /tmp/runtime.lock

# The build backend that turns the source into a wheel, from its own hashed lock, in a venv of
# its own that never reaches the runtime stage (pip would otherwise fetch it by version only).
COPY requirements/build.lock /tmp/build.lock
RUN python3 -m venv --without-pip /tmp/build-venv \
    && python3 -m pip --python /tmp/build-venv/bin/python install --no-compile --no-deps \
        --require-hashes -r /tmp/build.lock

COPY pyproject.toml README.md /src/
COPY src /src/src
# Optional (make image passes it): the version label below. When given, it must be the
# package's version, so the label can never disagree with the code it describes.
ARG VERSION
# The package itself (not editable, built by the locked backend above), then bytecode for everything in the venv: the root
# filesystem is read-only at run time, so nothing can be compiled and cached there.
# unchecked-hash: the files never change after the build, so Python need not stat the sources.
RUN python3 -m pip --python /tmp/build-venv/bin/python wheel --no-deps --no-build-isolation \
        --wheel-dir /tmp/wheel /src \
    && python3 -m pip --python "$VENV/bin/python" install --no-compile --no-deps /tmp/wheel/*.whl \
    && "$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$VENV/lib" \
    && installed_version=$("$VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("user_hasher"))') \
    && { [ -z "$VERSION" ] || [ "$VERSION" = "$installed_version" ] \
        || { echo "VERSION=$VERSION but the package is $installed_version" >&2; exit 1; }; }

# --- runtime: the base plus the venv ---
FROM ${BASE_IMAGE}

# Standard-library bytecode: the official python images delete every .pyc, and without them
# each start compiles the stdlib in memory (read-only root), which slows every start (docs/design.md,
# "Container"). On a base that ships them (Debian's) this writes nothing: up-to-date files
# are skipped.
RUN python3 -c 'import compileall, re, sys, sysconfig; sys.exit(not compileall.compile_dir( \
    sysconfig.get_path("stdlib"), quiet=1, workers=0, rx=re.compile("/site-packages/")))'

COPY --from=builder /opt/venv /opt/venv

# No app settings here: the app's defaults (settings.py) are what a pod needs, among them
# HOST 0.0.0.0 (a pod listens on its pod IP) and the version from the package itself.
# Run locally with --network=host and HOST=127.0.0.1 (build_and_run.sh does).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup. The files are
# root-owned: the process cannot change its own code.
USER 10001:10001
# The app's default PORT and METRICS_PORT (settings.py): the service, and /metrics.
EXPOSE 8000 9797

# Last, so a new commit (revision) rebuilds only this metadata, not the layers above.
ARG BASE_IMAGE
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG SOURCE_URL=unknown
# The build's commit: the `revision` label on user_hasher_build_info and in every log line, so
# two builds of one version are told apart (a Deployment may still set APP_REVISION itself).
ENV APP_REVISION="${VCS_REF}"
LABEL org.opencontainers.image.title="user_hasher" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Exec form: the venv's python is PID 1 and gets SIGTERM itself, which starts the drain
# (lifecycle.py). A shell form would leave sh as PID 1, ignoring SIGTERM until SIGKILL.
ENTRYPOINT ["/opt/venv/bin/python", "-m", "user_hasher"]
