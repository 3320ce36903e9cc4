"""The one thing this service computes, and the strict reading of its only input."""

import hashlib
import re
from urllib.parse import parse_qsl

from pydantic import SecretStr

from user_hasher.errors import APIError

# Far above any real identifier, and small enough that no request can make the
# service hash (or hold) something large.
MAX_USER_ID_LENGTH = 256

_BAD_PERCENT_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# The user id whose hash fingerprints the salt a pod serves. Any client may ask /user_hash
# for it, so its hash tells a reader of /metrics nothing a client cannot learn already; and
# no real user has it, so the metrics never carry a real user's hash. Fixed, so pods that
# agree on the salt agree on the fingerprint.
SALT_CANARY_USER_ID = "__salt_fingerprint__"
# 48 bits: two different salts share a fingerprint with a chance of 1 in 2**48, and the
# label stays short.
SALT_FINGERPRINT_LENGTH = 12


def user_hash(user_id: str, salt: str) -> str:
    """Lowercase hex sha1 of the UTF-8 bytes of user_id followed by salt."""
    return hashlib.sha1((user_id + salt).encode("utf-8"), usedforsecurity=False).hexdigest()


def salt_fingerprint(salt: SecretStr) -> str:
    """The start of what /user_hash answers for SALT_CANARY_USER_ID under this salt."""
    return user_hash(SALT_CANARY_USER_ID, salt.get_secret_value())[:SALT_FINGERPRINT_LENGTH]


def parse_user_id(query_string: bytes) -> str:
    """The user_id of a raw query string, or an APIError(400) saying what is wrong.

    Werkzeug's request.args would replace bad UTF-8 with U+FFFD and keep the last of
    repeated keys: either would silently hash something the client did not send.
    """
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
