import hashlib

from user_hasher.hashing import user_hash

CONTRACT_HASH = "9f1021612c2a810d26472a66e4064f6608d52fd3"


def test_brief_contract() -> None:
    assert user_hash("TESTUSERID", "TESTSALT") == CONTRACT_HASH


def test_empty_salt_is_plain_sha1_of_user_id() -> None:
    assert user_hash("TESTUSERID", "") == hashlib.sha1(b"TESTUSERID").hexdigest()


def test_hashes_utf8_bytes_of_user_id_then_salt() -> None:
    assert user_hash("zoë", "sel") == hashlib.sha1("zoësel".encode()).hexdigest()
