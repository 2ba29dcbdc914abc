"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.envelope import ok
from api.errors import error_response
from relay.errors import ErrorCode, RelayError

router = APIRouter(tags=["health"])

READY_TIMEOUT = timedelta(seconds=3)


@router.get("/health", summary="The process is up", response_model=dict[str, Any])
async def health() -> dict[str, Any]:
    return ok({"status": "ok"})


def _ping_database(request: Request) -> None:
    with request.app.state.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _temporal_reachable(request: Request) -> bool:
    # One bound for connecting and asking: a server that accepts connections but never
    # answers would otherwise hold /ready for the SDK's own 30-second timeout.
    try:
        async with asyncio.timeout(READY_TIMEOUT.total_seconds()):
            client = await request.app.state.temporal.client()
            return await client.service_client.check_health(timeout=READY_TIMEOUT)  # type: ignore[no-any-return]
    except (RelayError, Exception):
        return False


async def _database_reachable(request: Request) -> bool:
    try:
        await asyncio.wait_for(
            asyncio.to_thread(_ping_database, request), READY_TIMEOUT.total_seconds()
        )
        return True
    except Exception:
        return False


@router.get(
    "/ready",
    summary="The database and Temporal are both reachable",
    responses={503: {"description": "names the part that is down"}},
)
async def ready(request: Request) -> JSONResponse:
    database, temporal = await asyncio.gather(
        _database_reachable(request), _temporal_reachable(request)
    )
    checks = {"database": "ok" if database else "down", "temporal": "ok" if temporal else "down"}
    if not database:
        return error_response(
            ErrorCode.DATABASE_UNAVAILABLE, "the database is not reachable", checks
        )
    if not temporal:
        return error_response(ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal is not reachable", checks)
    return JSONResponse(ok({"status": "ready", "checks": checks}))
