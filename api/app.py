"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy.engine import Engine

from api.errors import install_error_handlers
from api.limits import BodyLimit
from api.routes import codec, health, runs, sandbox
from api.temporal_gateway import TemporalGateway
from relay import __version__
from relay.api_keys import KeyCache
from relay.capabilities import CAPABILITIES
from relay.crypto import Keyring, load_keyring
from relay.db import make_engine
from relay.oauth.catalog import load_catalog
from relay.settings import Settings, load_settings
from relay.telemetry import configure_tracing, flush_tracing
from relay.temporal import connect
from workflows.registry import all_workflows, state_queries

DESCRIPTION = """
Relay runs third-party integrations as durable Temporal workflows.

Every `/v1` route needs `Authorization: Bearer <api key>` (create one with
`relay keys create NAME`). Every response is an envelope: `{"success": true, "data": …}`
or `{"success": false, "error": {"code", "message", "details"}}`. Lists take `limit`
(default 50, max 200) and an opaque `cursor`, and return `nextCursor`.
"""


PLATFORM_ROUTERS = (health.router, runs.router, codec.router)


def capability_routers() -> list[APIRouter]:
    """Every registered capability's routers (`api/routes/<name>` exports `routers`)."""
    routers: list[APIRouter] = []
    for name in CAPABILITIES:
        routers.extend(importlib.import_module(f"api.routes.{name}").routers)
    return routers


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    keyring: Keyring | None = None,
    extra_workflows: Sequence[type] = (),
) -> FastAPI:
    settings = settings or load_settings()
    settings.check()
    keyring = keyring or load_keyring(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.dev_keys_file,
    )
    owns_engine = engine is None
    engine = engine or make_engine(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
    configure_tracing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The one Temporal client of this process, connected on first use.
        app.state.temporal = TemporalGateway(lambda: connect(settings, keyring))
        # API keys: the cache of lookups is trusted only while this keeps it checked for
        # revocations (relay/api_keys.py: a revoked key is refused within a second).
        key_cache = app.state.key_cache = KeyCache(engine)
        key_checks = asyncio.create_task(key_cache.watch(), name="api-key-revocations")
        yield
        key_checks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await key_checks
        marks = getattr(app.state, "inbound_marks", None)
        if marks is not None:  # what was answered FORWARDED is marked so before exiting
            await marks.flush()
        flush_tracing()
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="Relay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.keyring = keyring
    app.state.state_queries = state_queries([*all_workflows(), *extra_workflows])
    install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)  # inside CORS: a 413 carries its headers
    # The Temporal UI calls /codec from its own origin, with the operator's cookie: the
    # UIs in TEMPORAL_UI_ORIGINS, and outside production the dev server's on localhost.
    dev_ui_origins = (
        []
        if settings.is_production
        else [
            f"http://localhost:{settings.temporal_ui_port}",
            f"http://127.0.0.1:{settings.temporal_ui_port}",
        ]
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[*dev_ui_origins, *settings.temporal_ui_origins],
        allow_credentials=True,
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
    )
    # OAuth: a bad PROVIDERS_FILE stops start-up with a ConfigError naming entry and field.
    app.state.catalog = load_catalog(settings.providers_file)
    for router in (*PLATFORM_ROUTERS, *capability_routers()):
        app.include_router(router)
    # /sandbox drives the local provider sandboxes; it exists in development only.
    if settings.relay_env == "development":
        app.include_router(sandbox.router)
    # OAuth: the callback's query holds the authorization code and state; spans record
    # the full URL, so that route is not traced.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="health,ready,v1/integrations/oauth/callback"
    )
    return app
