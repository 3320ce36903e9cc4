import hashlib

import pytest
from pydantic import SecretStr

from proving.contract import CONTRACT_HASH, CONTRACT_SALT, CONTRACT_USER_ID
from user_hasher.errors import APIError
from user_hasher.hashing import (
    MAX_USER_ID_LENGTH,
    SALT_CANARY_USER_ID,
    parse_user_id,
    salt_fingerprint,
    user_hash,
)


def test_contract() -> None:
    assert user_hash(CONTRACT_USER_ID, CONTRACT_SALT) == CONTRACT_HASH


def test_empty_salt_is_plain_sha1_of_user_id() -> None:
    assert user_hash("TESTUSERID", "") == hashlib.sha1(b"TESTUSERID").hexdigest()


def test_hashes_utf8_bytes_of_user_id_then_salt() -> None:
    assert user_hash("zoë", "sel") == hashlib.sha1("zoësel".encode()).hexdigest()


def test_the_salt_fingerprint_is_the_start_of_the_canary_user_ids_hash() -> None:
    assert SALT_CANARY_USER_ID == "__salt_fingerprint__"
    expected = hashlib.sha1(b"__salt_fingerprint__TESTSALT").hexdigest()[:12]
    assert salt_fingerprint(SecretStr("TESTSALT")) == expected
    assert salt_fingerprint(SecretStr("other")) != expected


def test_the_canary_is_a_user_id_the_service_answers() -> None:
    # An operator checks a pod's fingerprint with /user_hash?user_id=__salt_fingerprint__.
    assert parse_user_id(b"user_id=" + SALT_CANARY_USER_ID.encode()) == SALT_CANARY_USER_ID


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"user_id=TESTUSERID", "TESTUSERID"),
        (b"user_id=a%20b", "a b"),
        (b"user_id=a+b", "a b"),
        (b"user_id=zo%C3%AB", "zoë"),
        (b"user_id=zo%c3%ab", "zoë"),  # hex digits in either case (RFC 3986, 2.1)
        (b"user_id=%41%7a", "Az"),
        (b"other=1&user_id=x", "x"),
        (b"user_id=" + b"a" * MAX_USER_ID_LENGTH, "a" * MAX_USER_ID_LENGTH),
        # The limit counts characters, not bytes: 256 two-byte characters are fine.
        (b"user_id=" + b"%C3%AB" * MAX_USER_ID_LENGTH, "ë" * MAX_USER_ID_LENGTH),
    ],
)
def test_parse_user_id_accepts(query: bytes, expected: str) -> None:
    assert parse_user_id(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"", "missing required query parameter 'user_id'"),
        (b"userid=x", "missing required query parameter 'user_id'"),
        (b"user_id=", "query parameter 'user_id' must not be empty"),
        (b"user_id", "query parameter 'user_id' must not be empty"),
        (b"user_id=a&user_id=b", "query parameter 'user_id' must be given once"),
        (b"user_id=a&user_id=a", "query parameter 'user_id' must be given once"),
        (
            b"user_id=" + b"a" * (MAX_USER_ID_LENGTH + 1),
            "query parameter 'user_id' is longer than 256 characters",
        ),
        (b"user_id=%ff", "query string is not valid UTF-8"),
        (b"user_id=%C3", "query string is not valid UTF-8"),
        (b"user_id=%zz", "query string has an invalid percent-encoding"),
        (b"user_id=abc%", "query string has an invalid percent-encoding"),
        # Half an escape: without the refusal, `%1g` would be hashed as those three characters.
        (b"user_id=%1g", "query string has an invalid percent-encoding"),
        (b"user_id=%g1", "query string has an invalid percent-encoding"),
        (b"user_id=ab%4", "query string has an invalid percent-encoding"),
        (b"user_id=a&b=%", "query string has an invalid percent-encoding"),
        (b"user_id=\xc3\xab", "query string has raw non-ASCII bytes; percent-encode them"),
    ],
)
def test_parse_user_id_refuses_with_a_clear_400(query: bytes, message: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_user_id(query)
    assert caught.value.status_code == 400
    assert caught.value.message == message
