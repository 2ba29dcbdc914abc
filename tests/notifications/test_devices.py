"""Push devices: the database functions on SQLite and PostgreSQL, and /v1/devices through a
real app served by uvicorn."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine

from api.app import create_app
from api.routes.notifications.devices import router
from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.notifications import devices
from relay.notifications.devices import MAX_TOKEN_LENGTH, Platform
from relay.settings import Settings
from tests.conftest import ServerThread
from tests.support.api import bearer, closed_address, new_key


def _token(label: str = "") -> str:
    # Shaped like an FCM registration token: an instance id, a colon, a long tail.
    return f"{uuid.uuid4().hex[:11]}:APA91b{label}{uuid.uuid4().hex}{uuid.uuid4().hex}"


# --- the database functions --------------------------------------------------------------


def test_register_list_and_tokens(engine: Engine) -> None:
    phone, tablet = _token("phone"), _token("tablet")

    device = devices.register(engine, "user-1", phone, "ios")
    devices.register(engine, "user-1", tablet, Platform.ANDROID)
    devices.register(engine, "user-2", _token(), Platform.WEB)

    assert (device.token, device.user_id, device.platform) == (phone, "user-1", "ios")
    assert device.created_at.tzinfo is not None
    assert devices.tokens_for_user(engine, "user-1") == [phone, tablet]
    assert devices.tokens_for_user(engine, "nobody") == []
    listed = devices.list_devices(engine, "user-1")
    assert [d.token for d in listed] == [tablet, phone]  # newest first


def test_registering_again_refreshes_and_a_token_moves_between_users(engine: Engine) -> None:
    token = _token()
    first = devices.register(engine, "user-1", token, "android")
    time.sleep(0.01)

    again = devices.register(engine, "user-1", token, "android")
    assert again.created_at == first.created_at and again.updated_at > first.updated_at

    moved = devices.register(engine, "user-2", token, "ios")
    assert (moved.user_id, moved.platform) == ("user-2", "ios")
    assert devices.tokens_for_user(engine, "user-1") == []
    assert devices.tokens_for_user(engine, "user-2") == [token]


def test_delete_and_remove_tokens(engine: Engine) -> None:
    tokens = [_token() for _ in range(3)]
    for token in tokens:
        devices.register(engine, "user-1", token, "android")
    kept = devices.register(engine, "user-2", _token(), "ios")

    assert devices.delete(engine, tokens[0]) is True
    assert devices.delete(engine, tokens[0]) is False
    assert devices.remove_tokens(engine, [tokens[1], tokens[2], tokens[2], "never-registered"]) == 2
    assert devices.remove_tokens(engine, []) == 0
    assert devices.tokens_for_user(engine, "user-1") == []
    assert devices.tokens_for_user(engine, "user-2") == [kept.token]


def test_remove_tokens_beyond_one_statement(engine: Engine) -> None:
    tokens = [_token() for _ in range(1201)]
    for token in tokens[:700]:
        devices.register(engine, "user-1", token, "web")

    assert devices.remove_tokens(engine, tokens) == 700
    assert devices.tokens_for_user(engine, "user-1") == []


def test_list_devices_pages_by_registration(engine: Engine) -> None:
    tokens = [_token(str(i)) for i in range(5)]
    for token in tokens:
        devices.register(engine, "user-1", token, "ios")

    first = devices.list_devices(engine, "user-1", limit=2)
    last = first[-1]
    rest = devices.list_devices(engine, "user-1", limit=10, after=(last.created_at, last.token))

    assert [d.token for d in first + rest] == list(reversed(tokens))


def test_the_longest_token_is_stored_on_every_database(engine: Engine) -> None:
    # Incompressible, as long as allowed: PostgreSQL's index must still take it.
    token = (uuid.uuid4().hex * 100)[:MAX_TOKEN_LENGTH]

    assert devices.register(engine, "user-1", token, "web").token == token
    assert devices.tokens_for_user(engine, "user-1") == [token]


@pytest.mark.parametrize(
    ("user_id", "token", "platform", "field"),
    [
        ("user-1", "has space", "ios", "token"),
        ("user-1", "", "ios", "token"),
        ("user-1", "x" * (MAX_TOKEN_LENGTH + 1), "ios", "token"),
        ("", "tok", "ios", "userId"),
        ("user-1", "tok", "blackberry", "platform"),
    ],
)
def test_register_refuses_bad_input(
    engine: Engine, user_id: str, token: str, platform: str, field: str
) -> None:
    with pytest.raises(RelayError) as raised:
        devices.register(engine, user_id, token, platform)

    assert raised.value.code is ErrorCode.VALIDATION_ERROR
    assert raised.value.details[0]["field"] == field
    assert devices.tokens_for_user(engine, user_id) == []


# --- /v1/devices -------------------------------------------------------------------------


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    engine: Engine, keyring: Keyring, make_settings: Callable[..., Settings]
) -> AsyncIterator[Api]:
    app = create_app(
        make_settings(temporal_address=closed_address()), engine=engine, keyring=keyring
    )
    if not any(getattr(route, "path", "").startswith("/v1/devices") for route in app.routes):
        app.include_router(router)  # until notifications is registered in relay.capabilities
    with ServerThread(app) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers=bearer(new_key(engine, "app"))
        ) as http:
            yield Api(http, engine)


async def test_register_a_device(api: Api) -> None:
    token = _token()

    response = await api.http.post(
        "/v1/devices", json={"userId": "user-1", "token": token, "platform": "android"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert data["token"] == "…" + token[-8:] and token not in response.text
    assert (data["userId"], data["platform"]) == ("user-1", "android")
    assert data["createdAt"] and data["updatedAt"]
    assert devices.tokens_for_user(api.engine, "user-1") == [token]


async def test_list_a_users_devices_masked_and_paginated(api: Api) -> None:
    tokens = [_token(str(i)) for i in range(3)]
    for token in tokens:
        created = await api.http.post(
            "/v1/devices", json={"userId": "user-7", "token": token, "platform": "ios"}
        )
        assert created.status_code == 201
    await api.http.post(
        "/v1/devices", json={"userId": "someone-else", "token": _token(), "platform": "web"}
    )

    first = (await api.http.get("/v1/devices", params={"userId": "user-7", "limit": 2})).json()
    cursor = first["nextCursor"]
    assert cursor and not any(token in cursor for token in tokens)
    second = (
        await api.http.get("/v1/devices", params={"userId": "user-7", "limit": 2, "cursor": cursor})
    ).json()

    shown = [d["token"] for d in first["data"] + second["data"]]
    assert shown == ["…" + t[-8:] for t in reversed(tokens)]
    assert second["nextCursor"] is None
    assert {d["userId"] for d in first["data"] + second["data"]} == {"user-7"}
    forged = await api.http.get("/v1/devices", params={"userId": "user-7", "cursor": "k:abc"})
    assert forged.status_code == 422 and forged.json()["error"]["details"][0]["field"] == "cursor"
    missing = await api.http.get("/v1/devices")
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "userId"


async def test_delete_a_device(api: Api) -> None:
    token = _token()
    await api.http.post("/v1/devices", json={"userId": "user-1", "token": token, "platform": "web"})

    deleted = await api.http.delete(f"/v1/devices/{token}")
    again = await api.http.delete(f"/v1/devices/{token}")

    assert deleted.status_code == 204 and deleted.content == b""
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "NOT_FOUND"
    assert token not in again.text
    assert devices.tokens_for_user(api.engine, "user-1") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "tok-1", "platform": "ios"}, "userId"),
        ({"userId": "", "token": "tok-1", "platform": "ios"}, "userId"),
        ({"userId": "u" * 256, "token": "tok-1", "platform": "ios"}, "userId"),
        ({"userId": "user-1", "token": "has a space", "platform": "ios"}, "token"),
        ({"userId": "user-1", "token": "", "platform": "ios"}, "token"),
        ({"userId": "user-1", "token": "t" * (MAX_TOKEN_LENGTH + 1), "platform": "ios"}, "token"),
        ({"userId": "user-1", "token": "tok-1", "platform": "symbian"}, "platform"),
        ({"userId": "user-1", "token": "tok-1"}, "platform"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    api: Api, body: dict[str, str], field: str
) -> None:
    response = await api.http.post("/v1/devices", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in error["details"]] == [field]
    assert devices.tokens_for_user(api.engine, body.get("userId", "")) == []


async def test_an_api_key_is_required(api: Api) -> None:
    async with httpx.AsyncClient(base_url=str(api.http.base_url)) as anonymous:
        listed = await anonymous.get("/v1/devices", params={"userId": "user-1"})
        created = await anonymous.post(
            "/v1/devices", json={"userId": "user-1", "token": "tok-1", "platform": "ios"}
        )

    assert listed.status_code == created.status_code == 401
    assert devices.tokens_for_user(api.engine, "user-1") == []
