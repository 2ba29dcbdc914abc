"""Every error leaves the API as the envelope with a contract code, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from api.temporal_gateway import is_unavailable
from relay.errors import ErrorCode, RelayError

log = logging.getLogger("relay.api")

_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
}


def error_response(
    code: ErrorCode, message: str, details: Any = None, status: int | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == ErrorCode.UNAUTHORIZED else None
    return JSONResponse(
        status_code=status or code.status,
        content={
            "success": False,
            "error": {"code": code.value, "message": message, "details": details},
        },
        headers=headers,
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    fields = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        # "body" / "query" first, then the field path as the client sent it.
        fields.append(
            {
                "field": ".".join(location[1:]) or location[0] if location else "",
                "in": location[0] if location else "body",
                "message": error.get("msg", "invalid"),
            }
        )
    return fields


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RelayError)
    async def _relay(_: Request, exc: RelayError) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            ErrorCode.VALIDATION_ERROR, "the request is invalid", _validation_details(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
        message = exc.detail if isinstance(exc.detail, str) else code.value.lower()
        return error_response(code, message, status=exc.status_code)

    # Connection-level failures only: an IntegrityError is a bug or a conflict, not an outage.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(ErrorCode.DATABASE_UNAVAILABLE, "the database is not reachable")

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, exc: RPCError) -> JSONResponse:
        if is_unavailable(exc):
            return error_response(ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal is not reachable")
        log.error("Temporal call failed: %s", exc.status)
        return error_response(ErrorCode.INTERNAL_ERROR, "the workflow service failed")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(ErrorCode.INTERNAL_ERROR, "an internal error occurred")
