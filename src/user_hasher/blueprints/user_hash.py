"""GET /user_hash: the service's one answer."""

import json

from quart import Blueprint, Response, request

from user_hasher.blueprints import serving_app
from user_hasher.hashing import parse_user_id, user_hash

blueprint = Blueprint("user_hash", __name__)


@blueprint.get("/user_hash")
async def get_user_hash() -> Response:
    user_id = parse_user_id(request.query_string)
    digest = user_hash(user_id, serving_app.salt.get_secret_value())
    if request.method != "HEAD":  # a HEAD response carries no hash
        serving_app.metrics.count_hash()
    # Exactly the JSON string, no trailing newline: clients compare the body byte for byte.
    return Response(json.dumps(digest), content_type="application/json")
