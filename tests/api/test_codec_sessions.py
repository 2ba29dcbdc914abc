"""Codec sessions, attacked against the real API: the cookie carries a random token (never
the API key) whose hash alone is stored; it is Secure and `__Host-` over https; it decodes
at /codec only, never on /v1 nor as a bearer; an expired, logged-out or key-revoked
session is 401; and production's CORS lets no localhost UI call /codec."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from api.app import create_app
from relay.api_keys import create_key
from relay.codec import ENCODING
from relay.db import utcnow
from relay.models.platform import CodecSession
from relay.settings import Settings
from tests.conftest import ServerThread, settings_env
from tests.ops.test_cli import relay
from tests.support.api import bearer, closed_address, new_key

SECRET = f"sk_live_{uuid.uuid4().hex}"
HTTP_COOKIE = "relay_codec"
HTTPS_COOKIE = "__Host-relay_codec"


@dataclass
class Api:
    url: str
    engine: Engine
    settings: Settings


def _plain(data: bytes) -> dict:
    encoding = base64.b64encode(b"json/plain").decode()
    return {
        "payloads": [{"metadata": {"encoding": encoding}, "data": base64.b64encode(data).decode()}]
    }


def _set_cookie(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-case names) of the one Set-Cookie header."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    pair, *attributes = (part.strip() for part in headers[0].split(";"))
    name, _, value = pair.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        parsed[key.lower()] = val
    return name, value, parsed


@contextmanager
def _serve(engine: Engine, settings: Settings) -> Iterator[Api]:
    with ServerThread(create_app(settings, engine=engine)) as server:
        yield Api(server.url, engine, settings)


@pytest_asyncio.fixture(loop_scope="session")
async def api(engine: Engine, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """The API as `relay dev` serves it: plain http on localhost."""
    with _serve(engine, make_settings(temporal_address=closed_address())) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def https_api(engine: Engine, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """The API behind a TLS proxy: PUBLIC_BASE_URL is https (as production requires)."""
    settings = make_settings(
        temporal_address=closed_address(),
        public_base_url="https://relay.example.com",
        temporal_ui_origins="https://temporal.example.com",
    )
    with _serve(engine, settings) as served:
        yield served


async def _encrypted(api: Api) -> dict:
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(new_key(api.engine))) as http:
        response = await http.post("/codec/encode", json=_plain(f'"{SECRET}"'.encode()))
    assert response.status_code == 200
    assert base64.b64decode(response.json()["payloads"][0]["metadata"]["encoding"]) == ENCODING
    return response.json()  # type: ignore[no-any-return]


async def _open(api: Api, key: str) -> tuple[str, dict[str, str]]:
    async with httpx.AsyncClient(base_url=api.url) as http:
        opened = await http.post("/codec/session", data={"apiKey": key})
    assert opened.status_code == 204, opened.text
    name, token, attributes = _set_cookie(opened)
    return token, attributes | {"name": name}


async def _decode(api: Api, cookie: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url) as http:
        return await http.post(
            "/codec/decode", json=await _encrypted(api), headers={"Cookie": f"{cookie}={token}"}
        )


def _revealed(response: httpx.Response) -> bool:
    return SECRET in base64.b64decode(response.json()["payloads"][0]["data"]).decode()


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert SECRET not in response.text


async def test_the_cookie_holds_a_random_token_whose_hash_alone_is_stored(api: Api) -> None:
    record, key = create_key(api.engine, f"operator-{uuid.uuid4().hex[:6]}", ["codec"])
    token, cookie = await _open(api, key)

    assert cookie["name"] == HTTP_COOKIE
    assert token and token != key and "rk_" not in token
    assert "httponly" in cookie and "secure" not in cookie and "domain" not in cookie
    assert cookie["path"] == "/codec"
    assert cookie["samesite"].lower() == "strict"
    assert cookie["max-age"] == str(8 * 3600)

    with api.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM codec_sessions")).mappings().all()
    row = next(r for r in rows if r["token_hash"] == hashlib.sha256(token.encode()).hexdigest())
    assert uuid.UUID(str(row["api_key_id"])) == record.id
    assert row["revoked_at"] is None
    stored = " ".join(str(value) for r in rows for value in r.values())
    assert token not in stored and key not in stored

    decoded = await _decode(api, HTTP_COOKIE, token)
    assert decoded.status_code == 200, decoded.text
    assert _revealed(decoded)


async def test_over_https_the_cookie_is_secure_and_host_prefixed(https_api: Api) -> None:
    _, key = create_key(https_api.engine, f"operator-{uuid.uuid4().hex[:6]}", ["codec"])
    token, cookie = await _open(https_api, key)

    assert cookie["name"] == HTTPS_COOKIE
    # __Host-: Secure, Path=/, no Domain (browsers refuse the cookie otherwise).
    assert "secure" in cookie and cookie["path"] == "/" and "domain" not in cookie
    assert "httponly" in cookie
    # The Temporal UI may be on another site (Temporal Cloud): SameSite=None, which
    # browsers accept only with Secure; CORS decides which origins may read /codec.
    assert cookie["samesite"].lower() == "none"
    assert token != key

    decoded = await _decode(https_api, HTTPS_COOKIE, token)
    assert decoded.status_code == 200 and _revealed(decoded)
    # The http name is not read over https.
    _assert_401(await _decode(https_api, HTTP_COOKIE, token))


async def test_the_session_is_for_codec_only(api: Api, https_api: Api) -> None:
    """Neither the cookie nor its token passes for an API key, on /v1 or as a bearer."""
    _, key = create_key(api.engine, f"operator-{uuid.uuid4().hex[:6]}", ["admin"])
    for served, cookie in ((api, HTTP_COOKIE), (https_api, HTTPS_COOKIE)):
        token, _ = await _open(served, key)
        async with httpx.AsyncClient(base_url=served.url) as http:
            # __Host- cookies have Path=/: a browser sends them to /v1 too.
            as_cookie = await http.get("/v1/runs", headers={"Cookie": f"{cookie}={token}"})
            as_bearer = await http.get("/v1/runs", headers=bearer(token))
            codec_bearer = await http.post(
                "/codec/decode", json=await _encrypted(served), headers=bearer(token)
            )
        for response in (as_cookie, as_bearer, codec_bearer):
            _assert_401(response)


async def test_an_expired_session_is_401(api: Api) -> None:
    _, key = create_key(api.engine, f"operator-{uuid.uuid4().hex[:6]}", ["codec"])
    token, _ = await _open(api, key)
    with api.engine.begin() as connection:
        connection.execute(
            update(CodecSession)
            .where(col(CodecSession.token_hash) == hashlib.sha256(token.encode()).hexdigest())
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = await _decode(api, HTTP_COOKIE, token)
    _assert_401(response)
    assert "/codec/login" in response.json()["error"]["message"]


async def test_logout_revokes_the_session_for_every_copy_of_the_cookie(api: Api) -> None:
    _, key = create_key(api.engine, f"operator-{uuid.uuid4().hex[:6]}", ["codec"])
    token, _ = await _open(api, key)
    assert (await _decode(api, HTTP_COOKIE, token)).status_code == 200

    async with httpx.AsyncClient(base_url=api.url) as http:
        logout = await http.post("/codec/logout", headers={"Cookie": f"{HTTP_COOKIE}={token}"})
    assert logout.status_code == 204
    name, value, cleared = _set_cookie(logout)
    assert name == HTTP_COOKIE and not value.strip('"') and cleared["max-age"] == "0"

    # Someone who copied the cookie before the logout holds nothing.
    _assert_401(await _decode(api, HTTP_COOKIE, token))
    with api.engine.connect() as connection:
        revoked = connection.execute(
            text("SELECT revoked_at FROM codec_sessions WHERE token_hash = :hash"),
            {"hash": hashlib.sha256(token.encode()).hexdigest()},
        ).scalar_one()
    assert revoked is not None


async def test_relay_keys_revoke_ends_the_keys_sessions(
    api: Api, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    name = f"operator-{uuid.uuid4().hex[:6]}"
    _, key = create_key(api.engine, name, ["codec"])
    token, _ = await _open(api, key)
    assert (await _decode(api, HTTP_COOKIE, token)).status_code == 200

    env = settings_env(make_settings(database_url=api.engine.url.render_as_string(False)))
    revoked = relay("keys", "revoke", name, env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr

    _assert_401(await _decode(api, HTTP_COOKIE, token))


async def test_a_stolen_old_style_cookie_holding_the_key_decodes_nothing(api: Api) -> None:
    """Before sessions, the cookie was the API key itself; such a value is no session."""
    key = new_key(api.engine, "codec")
    _assert_401(await _decode(api, HTTP_COOKIE, key))


async def test_only_keys_with_the_codec_scope_open_sessions(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        for scope in ("app", "credentials:read"):
            refused = await http.post("/codec/session", data={"apiKey": new_key(api.engine, scope)})
            assert refused.status_code == 403, refused.text
            assert "'codec' scope" in refused.json()["error"]["message"]
            assert "set-cookie" not in refused.headers
        unknown = await http.post("/codec/session", data={"apiKey": "rk_nope"})
        assert unknown.status_code == 401 and "set-cookie" not in unknown.headers
        for scope in ("codec", "admin"):
            opened = await http.post("/codec/session", headers=bearer(new_key(api.engine, scope)))
            assert opened.status_code == 204


async def test_the_login_form_confirms_and_says_where_to_go_next(
    engine: Engine, make_settings: Callable[..., Settings], https_api: Api
) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    key = new_key(engine, "codec")
    # Development: the dev server's UI, as `relay dev` prints it.
    with _serve(engine, make_settings(temporal_ui_port=18233)) as dev:
        async with httpx.AsyncClient(base_url=dev.url) as http:
            form = await http.get("/codec/login")
            page = await http.post("/codec/session", data={"apiKey": key}, headers=html)
    assert 'name="apiKey"' in form.text and "--scope codec" in form.text
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Codec session open" in page.text
    assert 'href="http://localhost:18233"' in page.text
    assert key not in page.text
    assert _set_cookie(page)[0] == HTTP_COOKIE
    # Elsewhere: the first configured UI.
    async with httpx.AsyncClient(base_url=https_api.url) as http:
        page = await http.post("/codec/session", data={"apiKey": key}, headers=html)
    assert 'href="https://temporal.example.com"' in page.text


async def test_production_cors_lets_no_localhost_ui_call_codec(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        relay_env="production",
        database_url="postgresql+psycopg://relay@127.0.0.1:1/relay",  # the engine is passed
        public_base_url="https://relay.example.com",
        oauth_allowed_redirects="https://app.example.com",
        temporal_ui_origins="https://temporal.example.com",
        temporal_address=closed_address(),
    )
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with _serve(engine, settings) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            answers = {
                origin: await http.options("/codec/decode", headers=preflight | {"Origin": origin})
                for origin in (
                    f"http://localhost:{settings.temporal_ui_port}",
                    f"http://127.0.0.1:{settings.temporal_ui_port}",
                    "https://temporal.example.com",
                )
            }
    ui = answers.pop("https://temporal.example.com")
    assert ui.headers["access-control-allow-origin"] == "https://temporal.example.com"
    assert ui.headers["access-control-allow-credentials"] == "true"
    for origin, response in answers.items():
        assert "access-control-allow-origin" not in response.headers, origin
