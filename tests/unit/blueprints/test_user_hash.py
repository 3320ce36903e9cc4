import asyncio
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from proving.contract import CONTRACT_BODY, CONTRACT_USER_ID
from tests.metrics_text import BUILD_INFO, HASHES, samples, value
from user_hasher.app import Service, create_service
from user_hasher.hashing import MAX_USER_ID_LENGTH, SALT_CANARY_USER_ID
from user_hasher.settings import Settings


async def test_contract(service: Service) -> None:
    response = await service.quart.test_client().get(
        "/user_hash", query_string={"user_id": CONTRACT_USER_ID}
    )
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert await response.get_data() == CONTRACT_BODY


async def test_head_is_routed_like_get(service: Service) -> None:
    # The body itself is dropped by the server (proven in test_server.py), not by Quart.
    response = await service.quart.test_client().head(
        "/user_hash", query_string={"user_id": "TESTUSERID"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "42"


async def test_a_hash_is_counted_for_each_get_and_never_for_head(service: Service) -> None:
    client = service.quart.test_client()
    for method in ("GET", "HEAD", "GET"):
        response = await client.open("/user_hash?user_id=TESTUSERID", method=method)
        assert response.status_code == 200
    await client.get("/user_hash")  # a 400: no hash
    assert value(service.metrics.render([])[0].decode(), HASHES) == 2


@pytest.mark.parametrize("salt", ["TESTSALT", "pepper", ""])
async def test_the_salt_fingerprint_is_what_user_hash_answers_for_the_canary(salt: str) -> None:
    service = create_service(Settings(USER_SALT=SecretStr(salt)))
    response = await service.quart.test_client().get(
        "/user_hash", query_string={"user_id": SALT_CANARY_USER_ID}
    )
    answered = json.loads(await response.get_data())
    text = service.metrics.render([])[0].decode()
    (labels,) = [dict(labels) for name, labels in samples(text) if name == BUILD_INFO]
    assert labels["salt_fingerprint"] == answered[:12]
    assert salt == "" or salt not in text


async def test_unset_salt_means_empty_salt() -> None:
    service = create_service(Settings(USER_SALT=SecretStr("")))
    response = await service.quart.test_client().get("/user_hash", query_string={"user_id": "u"})
    assert json.loads(await response.get_data()) == hashlib.sha1(b"u").hexdigest()


@pytest.mark.parametrize(
    ("method", "target", "status", "error"),
    [
        ("GET", "/user_hash", 400, "missing required query parameter 'user_id'"),
        ("GET", "/user_hash?user_id=", 400, "query parameter 'user_id' must not be empty"),
        (
            "GET",
            "/user_hash?user_id=a&user_id=b",
            400,
            "query parameter 'user_id' must be given once",
        ),
        (
            "GET",
            "/user_hash?user_id=" + "a" * (MAX_USER_ID_LENGTH + 1),
            400,
            "query parameter 'user_id' is longer than 256 characters",
        ),
        ("GET", "/user_hash?user_id=%ff", 400, "query string is not valid UTF-8"),
        ("GET", "/user_hash?user_id=%zz", 400, "query string has an invalid percent-encoding"),
        ("POST", "/user_hash?user_id=a", 405, "method not allowed"),
        ("DELETE", "/user_hash?user_id=a", 405, "method not allowed"),
        ("GET", "/nope", 404, "not found"),
        ("GET", "/user_hash/extra", 404, "not found"),
    ],
)
async def test_bad_input_gets_a_json_4xx(
    service: Service, method: str, target: str, status: int, error: str
) -> None:
    response = await service.quart.test_client().open(target, method=method)
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert await response.get_json() == {"error": error}


async def test_405_says_which_methods_are_allowed(service: Service) -> None:
    response = await service.quart.test_client().post("/user_hash")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


async def test_unexpected_exception_is_a_json_500_without_internals(service: Service) -> None:
    async def boom() -> str:
        raise RuntimeError("internal detail: TESTSALT")

    service.quart.add_url_rule("/boom", view_func=boom)
    response = await service.quart.test_client().get("/boom")
    assert response.status_code == 500
    assert await response.get_json() == {"error": "internal server error"}


# One app for every example: building it per example would dominate the run time.
_PROPERTY_SERVICE = create_service(Settings(USER_SALT=SecretStr("pepper")))
_ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # surrogates are not UTF-8
    min_size=1,
    max_size=MAX_USER_ID_LENGTH,
)


@settings(max_examples=200, deadline=None)
@given(user_id=_ANY_TEXT)
def test_any_user_id_within_the_limit_hashes_like_hashlib(user_id: str) -> None:
    async def request() -> tuple[int, bytes]:
        response = await _PROPERTY_SERVICE.quart.test_client().get(
            "/user_hash", query_string={"user_id": user_id}
        )
        return response.status_code, await response.get_data()

    status, body = asyncio.run(request())
    assert status == 200
    assert json.loads(body) == hashlib.sha1((user_id + "pepper").encode()).hexdigest()
