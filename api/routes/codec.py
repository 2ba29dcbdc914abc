"""Temporal's codec-server protocol, so operators read decrypted payloads in the UI and CLI.

POST /codec/encode and /codec/decode take and return `{"payloads": [...]}` in the
protobuf JSON form. They require an API key with the `codec` (or `admin`) scope: the
Temporal CLI sends one with `--codec-auth "Bearer <key>"`. A browser opens a codec
session instead (GET /codec/login, POST /codec/session): its HttpOnly cookie holds a
random token whose hash is stored server-side (relay.codec_sessions), never the key,
and the Temporal UI sends it with its decode requests (the UI's codec "include
credentials" setting, on in `relay dev` and compose). Anyone else sees ciphertext.
"""

from __future__ import annotations

import asyncio
import html
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import CodecCookie, _bearer, require_codec_access
from api.envelope import error_responses
from relay.api_keys import Scope, allows, authenticate
from relay.codec import EncryptionCodec
from relay.codec_sessions import open_session, revoke_session
from relay.errors import ErrorCode, RelayError
from relay.settings import Settings

router = APIRouter(prefix="/codec", tags=["codec"])

_EXAMPLE = {"payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}, "data": "…"}]}


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


@router.post(
    "/encode",
    summary="Encrypt payloads",
    dependencies=[Depends(require_codec_access)],
    responses=error_responses(401, 403, 422),
)
async def encode(
    request: Request, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> dict[str, Any]:
    return await _transform(body, request, encode=True)


@router.post(
    "/decode",
    summary="Decrypt payloads",
    dependencies=[Depends(require_codec_access)],
    responses=error_responses(401, 403, 422),
)
async def decode(
    request: Request, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]
) -> dict[str, Any]:
    return await _transform(body, request, encode=False)


_PAGE = """<!doctype html><meta charset="utf-8"><title>Relay codec</title>
<body style="font-family:sans-serif;margin:3em;max-width:46em">{body}</body>"""

_LOGIN_FORM = """<h1>Read payloads in the Temporal UI</h1>
<form method="post" action="/codec/session">
<p>Paste an API key with the <code>codec</code> (or <code>admin</code>) scope
(<code>relay keys create NAME --scope codec</code>). This browser gets a session of its own
for 8 hours; the key itself is not kept.</p>
<input type="password" name="apiKey" size="60" autofocus aria-label="API key">
<button>Open session</button>
</form>"""


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(body=body), status_code=status)


def _wants_html(request: Request) -> bool:
    """A browser submitting the login form, not an API client (which gets 204)."""
    return "text/html" in request.headers.get("accept", "")


def temporal_ui_url(settings: Settings) -> str | None:
    """Where the operator reads runs: the dev server's UI, or the first configured UI."""
    if settings.manages_dev_server and not settings.is_production:
        return f"http://localhost:{settings.temporal_ui_port}"
    return settings.temporal_ui_origins[0] if settings.temporal_ui_origins else None


@router.get("/login", summary="A form that opens a codec session", response_class=HTMLResponse)
async def login_page() -> HTMLResponse:
    return _page(_LOGIN_FORM)


@router.post(
    "/session",
    summary="Let this browser decode payloads in the Temporal UI",
    status_code=204,
    responses={
        200: {"description": "The form was submitted by a browser: what to do next"},
        **error_responses(401, 403),
    },
)
async def open_codec_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Form(alias="apiKey")] = None,
) -> Response:
    """Opens a server-side codec session for the caller's API key (which needs the
    `codec` or `admin` scope) and sets its cookie: HttpOnly, 8 hours, holding a random
    token (only its hash is stored), Secure with the `__Host-` prefix over https."""
    settings: Settings = request.app.state.settings
    engine = request.app.state.engine
    raw = credentials.credentials if credentials else (api_key or "").strip()
    key = await asyncio.to_thread(authenticate, engine, raw) if raw else None
    if key is None:
        raise RelayError(ErrorCode.UNAUTHORIZED, "the API key is unknown or revoked")
    if not allows(key, Scope.CODEC):
        raise RelayError(
            ErrorCode.FORBIDDEN,
            f"this API key lacks the '{Scope.CODEC}' scope a codec session needs",
            {"requiredScope": Scope.CODEC.value},
        )
    session, token = await asyncio.to_thread(open_session, engine, key)
    cookie = CodecCookie.of(settings)
    if not _wants_html(request):
        response: Response = Response(status_code=204)
    else:
        ui = temporal_ui_url(settings)
        where = (
            f'<a href="{html.escape(ui)}" id="temporal-ui">{html.escape(ui)}</a>'
            if ui
            else "your Temporal UI"
        )
        response = _page(
            f"""<h1>Codec session open</h1>
<p id="codec-session-open">This browser can read payloads until
{session.expires_at:%Y-%m-%d %H:%M} UTC (key <code>{html.escape(key.name)}</code>).</p>
<p>Next: open the Temporal UI at {where} and open a workflow run. Its inputs, results and
failures show as JSON; without a session they stay encrypted.</p>
<form method="post" action="/codec/logout"><button>Log out</button></form>"""
        )
    cookie.set_on(response, token)
    return response


@router.post(
    "/logout",
    summary="End this browser's codec session",
    status_code=204,
    responses={200: {"description": "Submitted by a browser: a confirmation page"}},
)
async def logout(request: Request) -> Response:
    """Revokes the codec session whose cookie came with the request and clears the cookie."""
    cookie = CodecCookie.of(request.app.state.settings)
    token = request.cookies.get(cookie.name)
    if token:
        await asyncio.to_thread(revoke_session, request.app.state.engine, token)
    response: Response = (
        _page("<h1>Codec session closed</h1><p>Payloads show encrypted again.</p>")
        if _wants_html(request)
        else Response(status_code=204)
    )
    cookie.clear_on(response)
    return response
