import json

from quart import Blueprint, Response, current_app, request

from user_hasher.hashing import parse_user_id, user_hash

blueprint = Blueprint("hashing", __name__)


@blueprint.get("/user_hash")
async def get_user_hash() -> Response:
    user_id = parse_user_id(request.query_string)
    digest = user_hash(user_id, current_app.config["USER_SALT"])
    if request.method != "HEAD":  # a HEAD response carries no hash
        current_app.extensions["metrics"].count_hash()
    # Exactly the JSON string, no trailing newline: clients compare the body byte for byte.
    return Response(json.dumps(digest), content_type="application/json")
