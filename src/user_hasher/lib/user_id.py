"""Reads user_id out of a raw query string, strictly.

Werkzeug's request.args replaces bad UTF-8 with U+FFFD and keeps the last of repeated
keys; either would silently hash something the client did not send, so the raw bytes
are parsed here and every ambiguity is refused.
"""

import re
from urllib.parse import parse_qsl

from user_hasher.lib.errors import APIError

# Documented in README: long enough for any real identifier, small enough that
# a request can never make the service hash (or buffer) something large.
MAX_USER_ID_LENGTH = 256

_BAD_PERCENT_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_user_id(query_string: bytes) -> str:
    if _BAD_PERCENT_ESCAPE.search(query_string):
        raise APIError(400, "query string has an invalid percent-encoding")
    try:
        text = query_string.decode("ascii")
    except UnicodeDecodeError:
        raise APIError(400, "query string has raw non-ASCII bytes; percent-encode them") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise APIError(400, "query string is not valid UTF-8") from None
    values = [value for key, value in pairs if key == "user_id"]
    if not values:
        raise APIError(400, "missing required query parameter 'user_id'")
    if len(values) > 1:
        raise APIError(400, "query parameter 'user_id' must be given once")
    (user_id,) = values
    if not user_id:
        raise APIError(400, "query parameter 'user_id' must not be empty")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise APIError(
            400, f"query parameter 'user_id' is longer than {MAX_USER_ID_LENGTH} characters"
        )
    return user_id
