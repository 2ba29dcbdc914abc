"""Every /v1 route needs a live API key; failures are 401 with the envelope."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine

from api.app import create_app
from relay.api_keys import authenticate, create_key, revoke_key
from relay.settings import Settings
from tests.conftest import ServerThread
from tests.support.api import api_routes, bearer, closed_address

# The contract's public routes under /v1 (ARCHITECTURE.md, HTTP contract): the OAuth
# callback, which the provider sends the user's browser to and verifies by its state.
PUBLIC_V1_ROUTES = frozenset({"/v1/integrations/oauth/callback/{provider}"})


@dataclass
class Api:
    url: str
    routes: list[tuple[str, str]]  # (method, path with placeholders filled)
    engine: Engine


@pytest_asyncio.fixture(loop_scope="session")
async def api(engine: Engine, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    # Temporal is unreachable on purpose: a route that let a request past authentication
    # would answer 503, not 401, and fail these tests.
    app = create_app(make_settings(temporal_address=closed_address()), engine=engine)
    routes = []
    for full_path, route in api_routes(app):
        if full_path.startswith("/v1") and full_path not in PUBLIC_V1_ROUTES:
            path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", full_path)
            routes.extend((method, path) for method in sorted(route.methods))
    with ServerThread(app) as server:
        yield Api(server.url, routes, engine)


def _assert_401(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "success": False,
        "error": {"code": "UNAUTHORIZED", "message": message, "details": None},
    }


async def _each_route(api: Api, headers: dict[str, str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
        return [await http.request(method, path) for method, path in api.routes]


async def test_the_platform_routes_are_covered(api: Api) -> None:
    assert ("GET", "/v1/runs") in api.routes
    assert ("POST", "/v1/runs/00000000-0000-0000-0000-000000000000/cancel") in api.routes


async def test_no_key_is_401_on_every_v1_route(api: Api) -> None:
    for response in await _each_route(api, {}):
        _assert_401(response, "an API key is required (Authorization: Bearer …)")


async def test_other_schemes_are_401_on_every_v1_route(api: Api) -> None:
    for response in await _each_route(api, {"Authorization": "Basic dXNlcjpwYXNz"}):
        _assert_401(response, "an API key is required (Authorization: Bearer …)")


async def test_wrong_key_is_401_on_every_v1_route(api: Api) -> None:
    for response in await _each_route(api, bearer("rk_not-a-key")):
        _assert_401(response, "the API key is unknown or revoked")


async def test_revoked_key_is_401_on_every_v1_route(api: Api) -> None:
    record, raw = create_key(api.engine, "soon-revoked")
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(raw)) as http:
        before = await http.get("/v1/runs")
    # Past authentication: Temporal is what is missing.
    assert before.status_code == 503
    assert before.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"

    revoke_key(api.engine, "soon-revoked")
    for response in await _each_route(api, bearer(raw)):
        _assert_401(response, "the API key is unknown or revoked")
    assert authenticate(api.engine, raw) is None


def test_only_the_hash_of_a_key_is_stored(engine: Engine) -> None:
    record, raw = create_key(engine, "hashed")
    assert raw.startswith("rk_")
    assert raw not in (record.key_hash, record.prefix)
    assert raw.startswith(record.prefix)
    assert authenticate(engine, raw) is not None
    with pytest.raises(Exception, match="exists"):
        create_key(engine, "hashed")
