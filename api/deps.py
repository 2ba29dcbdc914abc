"""Dependencies routes declare with `Annotated` aliases (full-stack-fastapi-template style)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from relay.api_keys import KeyCache, Scope, allows, authenticate, hash_key, lookup, scopes_of
from relay.codec_sessions import SESSION_TTL, session_key
from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.inbound.group_record import GroupRecorder
from relay.inbound.marks import ForwardedMarks
from relay.models.platform import ApiKey
from relay.oauth.catalog import Catalog, load_catalog
from relay.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key from `relay keys create NAME`.")


# App-state getters are `async def`: FastAPI runs a plain `def` dependency in its
# threadpool, which is a thread hop per dependency per request for an attribute read.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def forwarded_marks(request: Request) -> ForwardedMarks:
    """The process's group commit of inbound FORWARDED marks (relay/inbound/marks.py)."""
    marks = getattr(request.app.state, "inbound_marks", None)
    if marks is None:
        marks = request.app.state.inbound_marks = ForwardedMarks(request.app.state.engine)
    return marks  # type: ignore[no-any-return]


def group_recorder(request: Request) -> GroupRecorder:
    """The process's group commit of inbound events (relay/inbound/group_record.py)."""
    recorder = getattr(request.app.state, "inbound_recorder", None)
    if recorder is None:
        recorder = request.app.state.inbound_recorder = GroupRecorder(
            request.app.state.engine, request.app.state.keyring
        )
    return recorder  # type: ignore[no-any-return]


async def get_keyring(request: Request) -> Keyring:
    return request.app.state.keyring  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


async def get_catalog(request: Request) -> Catalog:
    """The OAuth provider catalog, loaded at start-up (or on first use, once: a file read
    on the loop, which beats a threadpool hop on every request that declares it)."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is None:
        catalog = request.app.state.catalog = load_catalog(
            request.app.state.settings.providers_file
        )
    return catalog  # type: ignore[no-any-return]


async def get_temporal(request: Request) -> Client:
    return await request.app.state.temporal.client()  # type: ignore[no-any-return]


# --- API keys and scopes ------------------------------------------------------------------
#
# Every /v1 router depends on `require_api_key`: it authenticates the bearer key and,
# unless the route declares a scope of its own with `require_scope(...)`, requires the
# default scope, `app`. A route that needs another scope declares it:
#
#     @router.get("/…", dependencies=[Depends(require_scope("credentials:read"))])
#
# `admin` holds every scope. A key without the scope gets 403 FORBIDDEN naming it.


def _forbid_unless(key: ApiKey, scope: Scope) -> None:
    if not allows(key, scope):
        raise RelayError(
            ErrorCode.FORBIDDEN,
            f"this API key lacks the '{scope}' scope this route needs",
            {"requiredScope": scope.value, "keyScopes": sorted(scopes_of(key))},
        )


def key_cache(request: Request) -> KeyCache:
    """The process's cache of key lookups (relay/api_keys.py). The app's lifespan keeps it
    checked for revocations; until a check has run it is not trusted and every request
    looks its key up."""
    cache = getattr(request.app.state, "key_cache", None)
    if cache is None:
        cache = request.app.state.key_cache = KeyCache(request.app.state.engine)
    return cache  # type: ignore[no-any-return]


async def authenticate_cached(request: Request, raw: str) -> ApiKey | None:
    """The live key for `raw`: from the process's cache while it is trusted, else from the
    database (a hit costs no thread hop and no query; a miss is never cached)."""
    cache = key_cache(request)
    key_hash = hash_key(raw)
    key = cache.get(key_hash)
    if key is not None:
        return key
    generation = cache.generation()
    key = await asyncio.to_thread(lookup, request.app.state.engine, key_hash)
    if key is not None:
        cache.put(key_hash, key, generation)
    return key


class ApiKeyBearer(HTTPBearer):
    """`require_api_key`: the bearer key of a /v1 request, authenticated, or 401.

    It reads the Authorization header itself instead of depending on `HTTPBearer` (one
    dependency to solve per request instead of two: FastAPI solves each at a cost); as an
    `HTTPBearer` it still documents the bearer scheme in the OpenAPI schema, under the
    same name. The key is kept in the request's scope, so the route's other dependencies
    that ask for it (`require_scope`, `ApiKeyDep`) find it without authenticating again."""

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        known: ApiKey | None = request.scope.get(_REQUEST_KEY)
        if known is not None:  # already authenticated for this request
            return known
        scheme, raw = get_authorization_scheme_param(request.headers.get("Authorization"))
        if not raw or scheme.lower() != "bearer":
            raise RelayError(
                ErrorCode.UNAUTHORIZED, "an API key is required (Authorization: Bearer …)"
            )
        key = await authenticate_cached(request, raw)
        if key is None:
            raise RelayError(ErrorCode.UNAUTHORIZED, "the API key is unknown or revoked")
        route = request.scope.get("route")
        # A route that declares scopes is checked by those dependencies (below); one that
        # declares none needs `app`. Without a route to look at, fail closed.
        if not isinstance(route, APIRoute) or not route_scopes(route):
            _forbid_unless(key, Scope.APP)
        request.scope[_REQUEST_KEY] = key
        return key


_REQUEST_KEY = "relay.api_key"  # the request's authenticated key, in its ASGI scope

_SCHEME = "HTTPBearer"  # one scheme in the OpenAPI schema for every way a key is asked
_SCHEME_HELP = "An API key from `relay keys create NAME`."
require_api_key = ApiKeyBearer(scheme_name=_SCHEME, description=_SCHEME_HELP, auto_error=False)


class RequireScope(HTTPBearer):
    """The dependency `require_scope` returns; `require_api_key` finds it on the route.
    An `HTTPBearer` like `require_api_key`, so a route declaring only this still documents
    the bearer scheme."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scheme_name=_SCHEME, description=_SCHEME_HELP, auto_error=False)
        self.scope = scope

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        # Authenticates through `require_api_key` itself rather than declaring it as a
        # sub-dependency (a solving step fewer per request); the key is found once per
        # request either way (kept in the scope).
        key = await require_api_key(request)
        _forbid_unless(key, self.scope)
        return key

    def __repr__(self) -> str:
        return f"require_scope({self.scope.value!r})"


def require_scope(scope: str) -> RequireScope:
    """A dependency requiring `scope` (or `admin`) of the caller's API key."""
    return RequireScope(Scope(scope))


_SCOPES_ATTRIBUTE = "_relay_declared_scopes"


def route_scopes(route: APIRoute) -> frozenset[Scope]:
    """`declared_scopes`, worked out once per route and kept on it (every /v1 request
    asks; routes are not hashable, so not a dict)."""
    scopes: frozenset[Scope] | None = getattr(route, _SCOPES_ATTRIBUTE, None)
    if scopes is None:
        scopes = frozenset(declared_scopes(route))
        setattr(route, _SCOPES_ATTRIBUTE, scopes)
    return scopes


def declared_scopes(route: APIRoute) -> set[Scope]:
    """The scopes a route declares with `require_scope`, anywhere in its dependencies."""
    found: set[Scope] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:
        node = pending.pop()
        if isinstance(node.call, RequireScope):
            found.add(node.call.scope)
        pending.extend(node.dependencies)
    return found


# --- the codec: an API key, or a browser's codec session ---------------------------------


@dataclass(frozen=True)
class CodecCookie:
    """How the codec session cookie is set, from PUBLIC_BASE_URL.

    Over https (always in production): `__Host-relay_codec`, Secure, Path=/, no Domain,
    SameSite=None, so a Temporal UI on another site (Temporal Cloud) can send it with
    its cross-origin decode requests; CORS limits which origins may. Over plain http
    (local development): `relay_codec`, Path=/codec, SameSite=Strict; the dev server's
    UI (http://localhost:UI_PORT) is same-site with the API (http://localhost:API_PORT),
    so the browser sends it, and a cookie without Secure could not be SameSite=None.
    Always HttpOnly: page scripts never see it.
    """

    name: str
    secure: bool
    path: str
    samesite: Literal["strict", "none"]
    max_age: int = int(SESSION_TTL.total_seconds())

    @classmethod
    def of(cls, settings: Settings) -> CodecCookie:
        if urlsplit(settings.base_url).scheme == "https":
            return cls(name="__Host-relay_codec", secure=True, path="/", samesite="none")
        return cls(name="relay_codec", secure=False, path="/codec", samesite="strict")

    def set_on(self, response: Any, token: str) -> None:
        response.set_cookie(
            self.name,
            token,
            max_age=self.max_age,
            path=self.path,
            secure=self.secure,
            httponly=True,
            samesite=self.samesite,
        )

    def clear_on(self, response: Any) -> None:
        response.delete_cookie(
            self.name, path=self.path, secure=self.secure, httponly=True, samesite=self.samesite
        )


async def require_codec_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """An API key with the `codec` scope (the CLI's `--codec-auth "Bearer …"`), or the
    cookie of a live codec session (the Temporal UI). A session token is never taken
    from the Authorization header, and /v1 never reads the cookie."""
    engine = request.app.state.engine
    if credentials is not None:
        key = await asyncio.to_thread(authenticate, engine, credentials.credentials)
        if key is None:
            raise RelayError(ErrorCode.UNAUTHORIZED, "the API key is unknown or revoked")
        _forbid_unless(key, Scope.CODEC)
        return key
    token = request.cookies.get(CodecCookie.of(request.app.state.settings).name)
    if not token:
        raise RelayError(ErrorCode.UNAUTHORIZED, "an API key is required to read payloads")
    session_owner = await asyncio.to_thread(session_key, engine, token)
    if session_owner is None:
        raise RelayError(
            ErrorCode.UNAUTHORIZED,
            "the codec session has expired or was revoked; open a new one at /codec/login",
        )
    return session_owner


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
KeyringDep = Annotated[Keyring, Depends(get_keyring)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
CodecAccessDep = Annotated[ApiKey, Depends(require_codec_access)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
