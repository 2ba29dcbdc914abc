"""API key scopes, attacked against the real API: a key gets 403 FORBIDDEN, naming the scope
it lacks, on every /v1 and /codec route its scopes do not cover, and only there.

The route-by-route sweep runs with Temporal unreachable (a request let past authorization
answers 404, 422 or 503, never 401 or 403); the attacks by scope run against the full
stack (API, worker, Temporal dev server), so a request let through gets its real answer.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.deps import declared_scopes
from relay.api_keys import Scope, authenticate, hash_key
from relay.db import make_engine, utcnow
from relay.migrate import upgrade
from relay.models.types import UTCDateTime
from relay.settings import Settings
from tests.conftest import ServerThread, Stack
from tests.support.api import api_routes, bearer, closed_address, new_key

PUBLIC_V1_ROUTES = frozenset({"/v1/integrations/oauth/callback/{provider}"})
CREDENTIALS = "/v1/integrations/{integration_id}/credentials"
ZERO_ID = "00000000-0000-0000-0000-000000000000"
CODEC_ROUTES = [("POST", "/codec/decode"), ("POST", "/codec/encode")]


@dataclass
class Api:
    url: str
    engine: Engine
    # (method, concrete path, the scope the route needs)
    routes: list[tuple[str, str, Scope]]


def _codec_body() -> dict:
    plain = base64.b64encode(b"json/plain").decode()
    return {
        "payloads": [{"metadata": {"encoding": plain}, "data": base64.b64encode(b"1").decode()}]
    }


@pytest_asyncio.fixture(loop_scope="session")
async def api(engine: Engine, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    app = create_app(make_settings(temporal_address=closed_address()), engine=engine)
    routes: list[tuple[str, str, Scope]] = []
    for full_path, route in api_routes(app):
        if full_path.startswith("/v1") and full_path not in PUBLIC_V1_ROUTES:
            needed = declared_scopes(route) or {Scope.APP}
            assert len(needed) == 1, (full_path, needed)
            path = re.sub(r"\{[^}]+\}", ZERO_ID, full_path)
            routes.extend((method, path, *needed) for method in sorted(route.methods))
    routes += [(method, path, Scope.CODEC) for method, path in CODEC_ROUTES]
    with ServerThread(app) as server:
        yield Api(server.url, engine, routes)


async def _call(http: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    if path.startswith("/codec"):
        return await http.request(method, path, json=_codec_body())
    return await http.request(method, path)


def _assert_forbidden(response: httpx.Response, scope: Scope) -> None:
    assert response.status_code == 403, (response.request.url, response.text)
    error = response.json()["error"]
    assert error["code"] == "FORBIDDEN"
    assert f"'{scope}' scope" in error["message"]
    assert error["details"]["requiredScope"] == scope.value


async def test_routes_declare_their_scopes(api: Api) -> None:
    """The credentials route is the only /v1 route that needs more than `app`: if its
    declaration went missing, every `app` key could read access tokens."""
    needs = {path: scope for _, path, scope in api.routes}
    credentials = CREDENTIALS.replace("{integration_id}", ZERO_ID)
    assert needs[credentials] == Scope.CREDENTIALS_READ
    assert needs["/codec/decode"] == needs["/codec/encode"] == Scope.CODEC
    others = {scope for path, scope in needs.items() if path != credentials}
    assert others == {Scope.APP, Scope.CODEC}
    assert ("GET", "/v1/runs", Scope.APP) in api.routes
    assert ("POST", "/v1/webhooks", Scope.APP) in api.routes


async def test_each_scope_reaches_exactly_its_routes(api: Api) -> None:
    """Every route, with a key of each scope: 403 naming the missing scope, or let past."""
    for held in (Scope.APP, Scope.CREDENTIALS_READ, Scope.CODEC, Scope.ADMIN):
        key = new_key(api.engine, held.value)
        async with httpx.AsyncClient(base_url=api.url, headers=bearer(key), timeout=30) as http:
            for method, path, needed in api.routes:
                response = await _call(http, method, path)
                if held in (needed, Scope.ADMIN):
                    assert response.status_code not in (401, 403), (held, method, path)
                else:
                    _assert_forbidden(response, needed)


async def test_app_key_reads_no_tokens_and_no_payloads(stack: Stack) -> None:
    key = new_key(stack.engine, "app")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(key)) as http:
        credentials = await http.get(f"/v1/integrations/{uuid.uuid4()}/credentials")
        decoded = await http.post("/codec/decode", json=_codec_body())
        session = await http.post("/codec/session")
        runs = await http.get("/v1/runs")
    _assert_forbidden(credentials, Scope.CREDENTIALS_READ)
    assert credentials.json()["error"]["details"]["keyScopes"] == ["app"]
    _assert_forbidden(decoded, Scope.CODEC)
    # A codec session is a way to decode: an `app` key cannot open one either.
    assert session.status_code == 403 and "set-cookie" not in session.headers
    assert runs.status_code == 200, runs.text


async def test_credentials_key_reads_tokens_and_nothing_else(stack: Stack) -> None:
    key = new_key(stack.engine, "credentials:read")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(key)) as http:
        credentials = await http.get(f"/v1/integrations/{uuid.uuid4()}/credentials")
        webhook = await http.post("/v1/webhooks", json={"url": "https://example.com/hook"})
        decoded = await http.post("/codec/decode", json=_codec_body())
    assert credentials.status_code == 404, credentials.text
    assert credentials.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
    _assert_forbidden(webhook, Scope.APP)
    _assert_forbidden(decoded, Scope.CODEC)


async def test_codec_key_decodes_but_lists_no_runs(stack: Stack) -> None:
    key = new_key(stack.engine, "codec")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(key)) as http:
        encoded = await http.post("/codec/encode", json=_codec_body())
        decoded = await http.post("/codec/decode", json=encoded.json())
        runs = await http.get("/v1/runs")
        credentials = await http.get(f"/v1/integrations/{uuid.uuid4()}/credentials")
    assert encoded.status_code == 200 and decoded.status_code == 200, decoded.text
    assert decoded.json() == _codec_body()
    _assert_forbidden(runs, Scope.APP)
    _assert_forbidden(credentials, Scope.CREDENTIALS_READ)


async def test_admin_key_does_everything(stack: Stack) -> None:
    key = new_key(stack.engine, "admin")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(key)) as http:
        credentials = await http.get(f"/v1/integrations/{uuid.uuid4()}/credentials")
        decoded = await http.post("/codec/decode", json=_codec_body())
        runs = await http.get("/v1/runs")
        session = await http.post("/codec/session")
    assert credentials.status_code == 404
    assert decoded.status_code == 200
    assert runs.status_code == 200
    assert session.status_code == 204


async def test_a_key_from_before_scopes_keeps_full_access(
    database_url: str, make_settings: Callable[..., Settings], temporal_env: WorkflowEnvironment
) -> None:
    """Migrate to 0003 (no scopes), store a key as Relay did then, upgrade: it is admin."""
    fresh = _fresh_database(database_url)
    try:
        upgrade(fresh, "0003")
        raw = "rk_" + uuid.uuid4().hex + uuid.uuid4().hex
        engine = make_engine(fresh)
        api_keys = sa.table(
            "api_keys",
            sa.column("id", sa.Uuid()),
            sa.column("name", sa.String()),
            sa.column("key_hash", sa.String()),
            sa.column("prefix", sa.String()),
            sa.column("created_at", UTCDateTime()),
        )
        with engine.begin() as connection:
            connection.execute(
                api_keys.insert().values(
                    id=uuid.uuid4(),
                    name="from-before-scopes",
                    key_hash=hash_key(raw),
                    prefix=raw[:10],
                    created_at=utcnow(),
                )
            )
        upgrade(fresh)

        record = authenticate(engine, raw)
        assert record is not None and record.scopes == "admin"
        target = temporal_env.client.service_client.config.target_host
        app = create_app(make_settings(temporal_address=target), engine=engine)
        with ServerThread(app) as server:
            async with httpx.AsyncClient(base_url=server.url, headers=bearer(raw)) as http:
                credentials = await http.get(f"/v1/integrations/{uuid.uuid4()}/credentials")
                decoded = await http.post("/codec/decode", json=_codec_body())
                runs = await http.get("/v1/runs")
        assert credentials.status_code == 404, credentials.text
        assert decoded.status_code == 200, decoded.text
        assert runs.status_code == 200, runs.text
        engine.dispose()
    finally:
        _drop_database(database_url, fresh)


def _fresh_database(database_url: str) -> str:
    """An empty database beside the test's own (a file on SQLite, a database on PostgreSQL)."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        return url.set(database=url.database.replace(".db", "-fresh.db")).render_as_string(
            hide_password=False
        )
    name = f"relay_scopes_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(database_url: str, fresh: str) -> None:
    url = sa.engine.make_url(fresh)
    if url.get_backend_name() == "sqlite":
        return
    admin = make_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()
