# user_hasher image. Build it with `make image` (it passes the version and revision below);
# run it as `docker run -e USER_SALT ... user-hasher:<version>`. No salt is ever built in.
#
# Both stages use the same base so the venv's interpreter symlink resolves in the runtime stage.
# Where Docker Hub is unreachable (CI here), `make base-image` builds a local Debian base and
# `make image` passes it instead (see README "Container").
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
# tree; --no-deps makes pip install exactly that list and resolve nothing.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN python3 -m pip --python "$VENV/bin/python" install --no-compile --no-deps \
        -r /tmp/runtime.lock

COPY pyproject.toml README.md /src/
COPY src /src/src
ARG APP_VERSION
# The package itself (not editable), then bytecode for everything in the venv: the root
# filesystem is read-only at run time, so nothing can be compiled and cached there.
# unchecked-hash: the files never change after the build, so Python need not stat the sources.
# The version check keeps the build arg (labels, env) equal to the package's one version source.
RUN python3 -m pip --python "$VENV/bin/python" install --no-compile --no-deps /src \
    && "$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$VENV/lib" \
    && installed_version=$("$VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("user_hasher"))') \
    && test "$installed_version" = "${APP_VERSION:?build with --build-arg APP_VERSION (make image)}"

# --- runtime: the base plus the venv ---
FROM ${BASE_IMAGE}

# Standard-library bytecode: the official python images delete every .pyc, and without them
# each start compiles the stdlib in memory (read-only root): imports took 1.0 s instead of 0.3 s
# here. On a base that ships them (Debian's) this writes nothing: up-to-date files are skipped.
RUN python3 -c 'import compileall, re, sys, sysconfig; sys.exit(not compileall.compile_dir( \
    sysconfig.get_path("stdlib"), quiet=1, workers=0, rx=re.compile("/site-packages/")))'

COPY --from=builder /opt/venv /opt/venv

ARG APP_VERSION

# HOST 0.0.0.0: in a pod the server must listen on the pod IP (settings.py explains); run
# locally with --network=host, pass HOST=127.0.0.1. PORT is the one the Service targets.
ENV APP_VERSION="${APP_VERSION}" \
    HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup. The files are
# root-owned: the process cannot change its own code.
USER 10001:10001
EXPOSE 8000

# Last, so a new commit (revision) rebuilds only this metadata, not the layers above.
ARG BASE_IMAGE
ARG VCS_REF=unknown
ARG SOURCE_URL=unknown
LABEL org.opencontainers.image.title="user_hasher" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Exec form: the venv's python is PID 1 and gets SIGTERM itself, which starts the drain
# (lifecycle.py). A shell form would leave sh as PID 1, ignoring SIGTERM until SIGKILL.
ENTRYPOINT ["/opt/venv/bin/python", "-m", "user_hasher"]
