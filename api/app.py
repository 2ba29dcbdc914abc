"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import install_error_handlers
from api.limits import CODEC_PREFIX, BodyLimit
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

# Not traced: the probes (polled, and dull), and the OAuth callback, whose query holds the
# authorization code and state (a span records the URL's path and query).
UNTRACED_PATHS = frozenset({"/health", "/ready"})
UNTRACED_PREFIXES = ("/v1/integrations/oauth/callback/",)


class CodecCors:
    """CORS for /codec, the only routes a browser calls from another origin (the Temporal
    UI); every other request skips it (Starlette's CORS middleware rebuilds the response
    headers of every request it sees to add `Vary: Origin`)."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if path == CODEC_PREFIX or path.startswith(CODEC_PREFIX + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def untraced(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path in UNTRACED_PATHS or path.startswith(UNTRACED_PREFIXES)


# Request spans come from FastAPI's own OpenTelemetry support, through the global tracer
# provider `relay.telemetry.configure_tracing` installs. FastAPI names a span
# "{method} {route template}" ("GET /v1/integrations/{integration_id}/credentials", never
# the raw path: ids in span names are a cardinality bug) from the route its router
# selected, where opentelemetry-instrumentation-fastapi matched every route of the app
# again on every request to find that name (12 % of the API's CPU on the credentials
# read), and with no provider configured it costs a check per request and nothing else.
# One server span per request, as before: no per-dependency "operation" spans, and no
# OpenTelemetry log records (Relay's redacting logger is where errors are logged).
TELEMETRY: TelemetryConfig = {
    "tracing": True,
    "operation_spans": False,
    "logs": False,
    "exclude": untraced,
}


def capability_routers() -> list[APIRouter]:
    """Every registered capability's routers (`api/routes/<name>` exports `routers`)."""
    routers: list[APIRouter] = []
    for name in CAPABILITIES:
        routers.extend(importlib.import_module(f"api.routes.{name}").routers)
    return routers


# The routes applications call most (issue 15). Routing tries an app's routes in order, at
# ~2 µs each (about 100 routes: 0.2 ms for the last), so the routers holding these come
# right after /health and /ready. No two routers serve the same method and path
# (tests/api/test_routing.py), so the order changes what routing costs, never which
# route answers.
HOT_PATHS = frozenset(
    {"/v1/integrations/{integration_id}/credentials", "/v1/events", "/v1/events/batch"}
)


def app_routers(settings: Settings) -> list[APIRouter]:
    """Every router of the app, in the order it matches them."""
    routers = [*PLATFORM_ROUTERS, *capability_routers()]
    hot = [r for r in routers if any(getattr(x, "path", None) in HOT_PATHS for x in r.routes)]
    ordered = [
        health.router,
        *hot,
        *(r for r in routers if r is not health.router and r not in hot),
    ]
    # /sandbox drives the local provider sandboxes; it exists in development only.
    if settings.relay_env == "development":
        ordered.append(sandbox.router)
    return ordered


def freeze_startup_objects() -> None:
    """Exempt what start-up built (the app, its routes and models, SQLAlchemy's and
    Temporal's modules: ~260,000 objects) from the garbage collector's full collections.

    A full collection walks every tracked object: ~130 ms here, during which the process
    answers nothing, and it comes every few thousand requests; at concurrency 20 that one
    pause was most of the credential reads' p99. Frozen, those objects are never scanned
    again (they live as long as the process anyway), and a full collection takes a few ms.
    Only for an app that owns its process's resources (`relay api`: create_app built the
    engine); an app embedded in another process (tests) leaves that process's GC alone."""
    gc.collect()
    gc.freeze()


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
        if owns_engine:
            freeze_startup_objects()
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
        telemetry=TELEMETRY,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.keyring = keyring
    app.state.state_queries = state_queries([*all_workflows(), *extra_workflows])
    install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)  # inside CORS: a 413 carries its headers
    # The Temporal UI calls /codec from its own origin, with the operator's cookie: the
    # UIs in TEMPORAL_UI_ORIGINS, and outside production the dev server's on localhost.
    # Nothing else is called cross-origin, so CORS applies under /codec only.
    dev_ui_origins = (
        []
        if settings.is_production
        else [
            f"http://localhost:{settings.temporal_ui_port}",
            f"http://127.0.0.1:{settings.temporal_ui_port}",
        ]
    )
    app.add_middleware(
        CodecCors,
        allow_origins=[*dev_ui_origins, *settings.temporal_ui_origins],
        allow_credentials=True,
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
    )
    # OAuth: a bad PROVIDERS_FILE stops start-up with a ConfigError naming entry and field.
    app.state.catalog = load_catalog(settings.providers_file)
    for router in app_routers(settings):
        app.include_router(router)
    return app
