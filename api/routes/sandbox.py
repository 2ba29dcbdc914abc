"""/sandbox: what the local provider sandboxes hold and "sent", and controls that fire
provider events (development only: create_app mounts this router only when RELAY_ENV is
development, and it is not in the OpenAPI schema).

GET /sandbox renders one section per sandboxed provider (relay.sandbox.sections; a new
provider adds a section there, not here) as plain server-rendered HTML, every value
escaped. Each control is a form that POSTs to /sandbox/{provider}/{action}[/{target}];
the route calls the sandbox's own control route server-side and redirects back (303)
with a one-shot flash of what happened.

Controls change state, so even in development they refuse cross-site requests: a POST
whose Origin (or, absent, Referer) is not this page's own origin gets 403, and so does
one whose Host is neither loopback nor PUBLIC_BASE_URL's host (a DNS-rebinding page
would otherwise be its own origin). An unknown provider or action is 404.
"""

from __future__ import annotations

import asyncio
import html
from urllib.parse import quote, unquote, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import SecretStr

from api.deps import SettingsDep
from relay.errors import ErrorCode, RelayError
from relay.sandbox.sections import (
    TARGET,
    Control,
    Row,
    SandboxError,
    Section,
    SectionView,
    Table,
    is_loopback,
    section_named,
    sections_for,
)
from relay.settings import Settings

router = APIRouter(prefix="/sandbox", tags=["sandbox"], include_in_schema=False)

FLASH_COOKIE = "relay_sandbox_flash"
FLASH_SECONDS = 60
FLASH_MAX_CHARS = 500
SANDBOX_TIMEOUT_SECONDS = 10
# Shorter secrets would redact ordinary words; no real key is this short.
MIN_REDACTED_CHARS = 8
# Object ids as providers issue them (sections.TARGET); anything else never reaches a
# sandbox URL.
_TARGET = TARGET
# The form field a control with an input sends its id in.
ID_FIELD = "id"

_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Relay sandbox</title>
<style>
body{{font-family:sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
th,td{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}}
caption{{text-align:left;font-weight:bold;padding:.3em 0}}
form{{display:inline}} .flash{{padding:.6em;border:1px solid}}
.ok{{background:#eef8ee;border-color:#6a6}} .error{{background:#fbeeee;border-color:#c66}}
.problem{{color:#a33}}
</style>
<body>
<h1>Relay sandbox</h1>
<p>Development only. The local servers <code>relay dev</code> runs for providers without
credentials: what they hold, what they sent to Relay, and controls that make them fire
the provider's events. <a href="/sandbox">Refresh</a></p>
{flash}
{sections}
</body></html>"""

_NONE = """<p id="no-sandbox">No provider is sandboxed. <code>relay dev</code> runs a sandbox
for each provider without credentials when <code>SANDBOX=auto</code>.</p>"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CROSS_SITE = "sandbox controls accept requests from the /sandbox page only"


def _control_url(section: str, action: str, target: str | None) -> str:
    url = f"/sandbox/{quote(section, safe='')}/{quote(action, safe='')}"
    return f"{url}/{quote(target, safe='')}" if target is not None else url


def _table(section: str, table: Table) -> str:
    has_controls = any(row.controls for row in table.rows)
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    if has_controls:
        head += "<th>Controls</th>"
    if not table.rows:
        span = len(table.columns) + has_controls
        body = f'<tr><td colspan="{span}" class="empty">{_e(table.empty)}</td></tr>'
    else:
        body = "".join(_row(section, row, has_controls) for row in table.rows)
    return (
        f'<table id="{_e(section)}-{_e(table.name)}"><caption>{_e(table.caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _form(section: str, control: Control) -> str:
    field = ""
    if control.field is not None and control.target is None:
        field = (
            f'<input name="{ID_FIELD}" required placeholder="{_e(control.field)}" '
            f'aria-label="{_e(control.field)}"> '
        )
    return (
        f'<form method="post" action="{_e(_control_url(section, control.action, control.target))}"'
        f' data-action="{_e(control.action)}">{field}<button>{_e(control.label)}</button></form>'
    )


def _row(section: str, row: Row, has_controls: bool) -> str:
    key = f' data-id="{_e(row.key)}"' if row.key is not None else ""
    cells = "".join(f"<td>{_e(cell)}</td>" for cell in row.cells)
    if has_controls:
        cells += f"<td>{' '.join(_form(section, c) for c in row.controls)}</td>"
    return f"<tr{key}>{cells}</tr>"


def _section(key: str, view: SectionView) -> str:
    problems = "".join(f'<p class="problem">{_e(p)}</p>' for p in view.problems)
    controls = "".join(f"<p>{_form(key, c)}</p>" for c in view.controls)
    tables = "".join(_table(key, table) for table in view.tables)
    return (
        f'<section id="sandbox-{_e(key)}"><h2>{_e(view.title)}</h2>'
        f"<p>{_e(view.summary)}</p>{problems}{controls}{tables}</section>"
    )


def _flash(request: Request) -> str:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return ""
    kind, _, message = unquote(raw).partition(":")
    kind = "ok" if kind == "ok" else "error"
    return f'<p id="flash" class="flash {kind}" role="status">{_e(message)}</p>'


def _secrets(settings: Settings) -> set[str]:
    """Every secret setting's value (each item of a comma-separated list)."""
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.update(part.strip() for part in value.get_secret_value().split(","))
    return {value for value in found if len(value) >= MIN_REDACTED_CHARS}


def _redacted(page: str, settings: Settings) -> str:
    """Sections never put a key in a view; this holds even if a sandbox echoes one back."""
    for secret in _secrets(settings):
        page = page.replace(_e(secret), "[redacted]")
    return page


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=SANDBOX_TIMEOUT_SECONDS)


@router.get("", response_class=HTMLResponse)
async def sandbox_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    sections = sections_for(settings)
    async with _client() as http:
        views = await asyncio.gather(*(s(settings, http).view() for s in sections))
    body = "".join(_section(s.key, v) for s, v in zip(sections, views, strict=True)) or _NONE
    response = HTMLResponse(
        _redacted(_PAGE.format(flash=_flash(request), sections=body), settings),
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/sandbox")
    return response


def _origin(url: str | None) -> str | None:
    if not url or url == "null":
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _same_origin(request: Request, settings: Settings) -> bool:
    """The POST came from a page of this origin, served under a name we answer to."""
    host = request.headers.get("host")
    if not host:
        return False
    own = f"{request.url.scheme}://{host}".lower()
    claimed = _origin(request.headers.get("origin")) or _origin(request.headers.get("referer"))
    if claimed != own:
        return False
    name = urlsplit(own).hostname
    return is_loopback(own) or name == urlsplit(settings.base_url).hostname


async def _control(
    request: Request,
    settings: Settings,
    provider: str,
    action: str,
    target: str | None,
    *,
    typed: bool = False,
) -> RedirectResponse:
    if not _same_origin(request, settings):
        raise RelayError(ErrorCode.FORBIDDEN, _CROSS_SITE)
    section: type[Section] | None = section_named(settings, provider)
    if section is None:
        raise RelayError(ErrorCode.NOT_FOUND, f"no sandboxed provider '{provider}'")
    if action not in section.actions or (
        not typed and target is not None and not _TARGET.fullmatch(target)
    ):
        raise RelayError(ErrorCode.NOT_FOUND, f"the {section.title} sandbox has no such control")
    if target is not None and not _TARGET.fullmatch(target):  # typed into the page's form
        return _back(f"error:{target[:80]!r} is not an id")
    async with _client() as http:
        try:
            message = "ok:" + await section(settings, http).act(action, target)
        except SandboxError as exc:
            message = f"error:{exc}"
    return _back(message)


def _back(message: str) -> RedirectResponse:
    """303 to the page, which shows `message` ("ok:…" or "error:…") once."""
    response = RedirectResponse("/sandbox", status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        quote(message[:FLASH_MAX_CHARS], safe=""),
        max_age=FLASH_SECONDS,
        path="/sandbox",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/{provider}/{action}")
async def sandbox_control(
    request: Request, settings: SettingsDep, provider: str, action: str
) -> RedirectResponse:
    """A control on no row: its target, if any, is the form's `id` field."""
    if not _same_origin(request, settings):  # before reading a body from another site
        raise RelayError(ErrorCode.FORBIDDEN, _CROSS_SITE)
    typed = (await request.form()).get(ID_FIELD)
    target = typed.strip() if isinstance(typed, str) and typed.strip() else None
    return await _control(request, settings, provider, action, target, typed=True)


@router.post("/{provider}/{action}/{target}")
async def sandbox_control_on(
    request: Request, settings: SettingsDep, provider: str, action: str, target: str
) -> RedirectResponse:
    return await _control(request, settings, provider, action, target)
