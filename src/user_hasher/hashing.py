"""The one thing this service computes."""

import hashlib


def user_hash(user_id: str, salt: str) -> str:
    """Lowercase hex sha1 of the UTF-8 bytes of user_id followed by salt."""
    return hashlib.sha1((user_id + salt).encode("utf-8"), usedforsecurity=False).hexdigest()
