"""Dependencies routes declare with `Annotated` aliases (full-stack-fastapi-template style)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from relay.api_keys import authenticate
from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.models.platform import ApiKey
from relay.oauth.catalog import Catalog, load_catalog
from relay.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key from `relay keys create NAME`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def get_keyring(request: Request) -> Keyring:
    return request.app.state.keyring  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_catalog(request: Request) -> Catalog:
    """The OAuth provider catalog, loaded at start-up (or on first use)."""
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is None:
        catalog = request.app.state.catalog = load_catalog(
            request.app.state.settings.providers_file
        )
    return catalog  # type: ignore[no-any-return]


async def get_temporal(request: Request) -> Client:
    return await request.app.state.temporal.client()  # type: ignore[no-any-return]


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise RelayError(ErrorCode.UNAUTHORIZED, "an API key is required (Authorization: Bearer …)")
    key = await asyncio.to_thread(authenticate, request.app.state.engine, credentials.credentials)
    if key is None:
        raise RelayError(ErrorCode.UNAUTHORIZED, "the API key is unknown or revoked")
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
KeyringDep = Annotated[Keyring, Depends(get_keyring)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
