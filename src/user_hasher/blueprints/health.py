"""Liveness and readiness, with the podinfo meanings.

/healthz: the process can serve (Kubernetes restarts the pod when it fails).
/readyz: send me traffic (503 before startup finished and during the drain).
"""

from quart import Blueprint

from user_hasher.blueprints import serving_app

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@blueprint.get("/readyz")
async def readyz() -> tuple[dict[str, str], int]:
    lifecycle = serving_app.lifecycle
    if lifecycle.ready:
        return {"status": "ready"}, 200
    return {"status": lifecycle.phase.value}, 503
