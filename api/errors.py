"""Every error leaves the API as the envelope with a contract code, never a stack trace,
and the OpenAPI schema documents the envelope for every status a route can answer with."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from api.envelope import ErrorEnvelope
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
        if error.get("type") == "json_invalid":  # its "loc" is the offset in the body
            fields.append({"field": "body", "in": "body", "message": "the body is not valid JSON"})
            continue
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
        return error_response(exc.code, exc.message, exc.details, status=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            ErrorCode.VALIDATION_ERROR, "the request is invalid", _validation_details(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "There was an error parsing the body": a JSON body that is not
            # UTF-8, a broken form. The client's error, like any other malformed body.
            return error_response(
                ErrorCode.VALIDATION_ERROR,
                "the request is invalid",
                [{"field": "body", "in": "body", "message": _unparsable_body(exc)}],
            )
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
        message = exc.detail if isinstance(exc.detail, str) else code.value.lower()
        return error_response(code, message, status=exc.status_code)

    # Connection-level failures only: an IntegrityError is a bug or a conflict, not an outage.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(ErrorCode.DATABASE_UNAVAILABLE, "the database is not reachable")

    # The database refused a value the request carried (PostgreSQL: a NUL character in text,
    # a number out of range): the client's data, so a 422 like any other invalid input.
    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        log.info("the database refused a request value: %s", type(exc.orig).__name__)
        return error_response(
            ErrorCode.VALIDATION_ERROR,
            "the request holds a value the database cannot store or compare "
            "(for example a NUL character)",
        )

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, exc: RPCError) -> JSONResponse:
        if is_unavailable(exc) or exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
            return error_response(ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal is not reachable")
        if exc.status == RPCStatusCode.NOT_FOUND:
            # Routes turn a missing run the client named into their 404; one that reaches
            # here is a workflow Relay itself runs (a webhook dispatcher) that is not
            # running: the worker is down or has not started it yet. An outage, not a bug.
            log.warning("a workflow this request needs is not running: %s", exc.message)
            return error_response(
                ErrorCode.TEMPORAL_UNAVAILABLE,
                "a workflow this request needs is not running; is the worker up?",
            )
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            # Temporal refused what the client sent (an id over its length limit, …).
            # Routes that know which field it was say so; this is the fallback.
            return error_response(
                ErrorCode.VALIDATION_ERROR,
                "the request is invalid",
                [{"field": "", "in": "request", "message": exc.message}],
            )
        log.error("Temporal call failed: %s", exc.status)
        return error_response(ErrorCode.INTERNAL_ERROR, "the workflow service failed")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(ErrorCode.INTERNAL_ERROR, "an internal error occurred")

    document_error_responses(app)


def _unparsable_body(exc: StarletteHTTPException) -> str:
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return "the body is not valid UTF-8"
    return "the body could not be parsed"


# --- the error statuses in the OpenAPI schema ----------------------------------------------
#
# Routes declare the statuses only they answer with (`responses=error_responses(404, 409)`).
# The ones that follow from the platform are added here, once, to every operation that can
# answer with them, so no route has to remember them and a new route is documented too:
#
#   422 VALIDATION_ERROR      any operation with a parameter or a body (FastAPI's own 422,
#                             `{"detail": …}`, is replaced: Relay answers with the envelope)
#   413 PAYLOAD_TOO_LARGE     any operation with a body, and every /v1 and /codec operation
#                             (api/limits.py caps every request's body before routing)
#   401, 403                  operations behind an API key or a codec session (`security`)
#   503 DATABASE_UNAVAILABLE, /v1 and /codec operations that read the database or Temporal:
#       TEMPORAL_UNAVAILABLE  all but a GET with no key, no parameter and no body (a form)

_PLATFORM_PREFIXES = ("/v1/", "/codec/")
_DESCRIPTIONS = {
    401: "No API key, or one that is unknown or revoked (`UNAUTHORIZED`)",
    403: "The API key lacks the scope this route needs (`FORBIDDEN`)",
    413: "The request body is over its cap (`PAYLOAD_TOO_LARGE`, the cap in `details`)",
    422: "The request is invalid (`VALIDATION_ERROR`, each offending field in `details`)",
    503: "The database or Temporal is unreachable (`DATABASE_UNAVAILABLE`, `TEMPORAL_UNAVAILABLE`)",
}
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def platform_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses the platform (not the route) can answer `operation` with."""
    has_body = "requestBody" in operation
    has_input = has_body or bool(operation.get("parameters"))
    secured = bool(operation.get("security"))
    statuses: set[int] = set()
    if has_input:
        statuses.add(422)
    if has_body or path.startswith(_PLATFORM_PREFIXES):
        statuses.add(413)
    if path.startswith(_PLATFORM_PREFIXES):
        if secured:
            statuses |= {401, 403}
        if secured or has_input or method != "get":
            statuses.add(503)
    return statuses


def _is_fastapi_validation(entry: dict[str, Any]) -> bool:
    return "HTTPValidationError" in json.dumps(entry)


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the envelope for every platform error status of every operation."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in envelope.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(ErrorEnvelope.__name__, envelope)
    ref = {"$ref": f"#/components/schemas/{ErrorEnvelope.__name__}"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in platform_statuses(path, method, operation):
                entry = responses.get(str(status))
                if entry is None or _is_fastapi_validation(entry):
                    responses[str(status)] = {
                        "description": _DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": ref}},
                    }
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's validation models are no longer referenced by anything.
    for name in ("HTTPValidationError", "ValidationError"):
        if name in components:
            rest = {key: value for key, value in components.items() if key != name}
            if f'/{name}"' not in json.dumps([schema.get("paths"), rest]):
                del components[name]
    return schema


def document_error_responses(app: FastAPI) -> None:
    """Post-process the app's OpenAPI schema with `add_error_responses` (built once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
