"""Temporal's codec-server protocol, so operators read decrypted payloads in the UI and CLI.

POST /codec/encode and /codec/decode take and return `{"payloads": [...]}` in the
protobuf JSON form. They require an API key: the Temporal CLI sends one with
`--codec-auth "Bearer <key>"`; the Web UI sends the `relay_codec` cookie that
POST /codec/session sets (the UI's "include cross-origin credentials" option), so
anyone without a key sees only ciphertext.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Cookie, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import _bearer
from api.envelope import error_responses
from relay.api_keys import authenticate
from relay.codec import EncryptionCodec
from relay.errors import ErrorCode, RelayError

router = APIRouter(prefix="/codec", tags=["codec"])

COOKIE = "relay_codec"
COOKIE_MAX_AGE = 8 * 3600

_EXAMPLE = {"payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}, "data": "…"}]}


async def _codec_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    relay_codec: Annotated[str | None, Cookie()] = None,
) -> None:
    raw = credentials.credentials if credentials else relay_codec
    if not raw or await asyncio.to_thread(authenticate, request.app.state.engine, raw) is None:
        raise RelayError(ErrorCode.UNAUTHORIZED, "an API key is required to read payloads")


def _codec(request: Request) -> EncryptionCodec:
    return EncryptionCodec(request.app.state.keyring)


async def _transform(body: dict[str, Any], request: Request, encode: bool) -> dict[str, Any]:
    try:
        payloads = json_format.ParseDict(body, Payloads())
    except json_format.ParseError as exc:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "body is not a Payloads message") from exc
    codec = _codec(request)
    try:
        result = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
    except Exception as exc:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "a payload could not be decoded") from exc
    return json_format.MessageToDict(Payloads(payloads=result))


@router.post("/encode", summary="Encrypt payloads", dependencies=[Depends(_codec_operator)])
async def encode(
    request: Request, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> dict[str, Any]:
    return await _transform(body, request, encode=True)


@router.post("/decode", summary="Decrypt payloads", dependencies=[Depends(_codec_operator)])
async def decode(
    request: Request, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> dict[str, Any]:
    return await _transform(body, request, encode=False)


_LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>Relay codec</title>
<form method="post" action="/codec/session" style="font-family:sans-serif;margin:3em">
<p>Paste an API key to read decrypted payloads in the Temporal UI (enable
"Include cross-origin credentials" in the UI's codec server settings).</p>
<input type="password" name="apiKey" size="60" autofocus> <button>Open session</button>
</form>"""


@router.get("/login", summary="A form that opens a codec session", response_class=HTMLResponse)
async def login_page() -> str:
    return _LOGIN_PAGE


@router.post(
    "/session",
    summary="Let this browser decode payloads in the Temporal UI",
    status_code=204,
    responses=error_responses(401),
)
async def open_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Form(alias="apiKey")] = None,
) -> Response:
    """Sets an HttpOnly cookie holding the caller's API key, sent back to /codec only."""
    raw = credentials.credentials if credentials else api_key
    if not raw or await asyncio.to_thread(authenticate, request.app.state.engine, raw) is None:
        raise RelayError(ErrorCode.UNAUTHORIZED, "the API key is unknown or revoked")
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE, raw, max_age=COOKIE_MAX_AGE, httponly=True, samesite="lax", path="/codec"
    )
    return response
