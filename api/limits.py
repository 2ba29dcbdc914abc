"""Caps on request bodies, enforced before the app reads, authenticates or parses anything.

FastAPI reads and parses a route's body before its dependencies run, so without a cap an
anonymous client could make any route (`/v1/*` before the key is checked, `/codec/*`) hold
a body of any size in memory. `BodyLimit` is a pure ASGI middleware in front of the app:

- a `Content-Length` over the cap is refused at once, before a byte of the body is read;
- otherwise it reads the body itself, counting bytes as they arrive (chunked transfer, or a
  `Content-Length` that lies), and refuses as soon as the count passes the cap, so at most
  the cap is ever held;
- a body within the cap is handed to the app unchanged.

A refusal is 413 with Relay's envelope (`PAYLOAD_TOO_LARGE`, the cap in `details`); the
server discards whatever of the body still arrives. The caps come from settings:
`API_MAX_BODY_BYTES` everywhere, `CODEC_MAX_BODY_BYTES` under `/codec`, and
`WEBHOOK_MAX_PAYLOAD_BYTES` plus envelope headroom for `POST /v1/events` (whose route
checks the exact limit again), and 16 MiB for `POST /v1/events/batch`, the bulk
notification sends and SendGrid's Event Webhook (docs/notifications.md).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from relay.errors import ErrorCode
from relay.settings import Settings

CODEC_PREFIX = "/codec"
EVENTS_PATH = "/v1/events"
# Room for the event's `type` (200 characters) and `idempotencyKey` (255) around its data.
EVENT_ENVELOPE_HEADROOM = 16 * 1024


# Bulk sends carry up to 10,000 recipients with their template data, and SendGrid batches
# many events into one Event Webhook POST: both outgrow the 1 MiB default by design.
BULK_PATHS = (
    "/v1/notifications/email/bulk",
    "/v1/notifications/sms/bulk",
    "/v1/events/batch",  # up to 1,000 events; each one's data is checked on its own
)
SENDGRID_EVENTS_PATH = "/webhooks/sendgrid/events"
BULK_MAX_BODY_BYTES = 16 * 1024 * 1024


def route_caps(settings: Settings) -> list[tuple[str, int]]:
    """(path prefix, cap) for the routes whose cap differs from API_MAX_BODY_BYTES."""
    larger = max(settings.api_max_body_bytes, BULK_MAX_BODY_BYTES)
    return [
        (CODEC_PREFIX, settings.codec_max_body_bytes),
        (EVENTS_PATH, settings.webhook_max_payload_bytes + EVENT_ENVELOPE_HEADROOM),
        *((path, larger) for path in (*BULK_PATHS, SENDGRID_EVENTS_PATH)),
    ]


class BodyLimit:
    """Pure ASGI middleware: 413 for a request body over its path's cap."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.default = settings.api_max_body_bytes
        # Longest prefix first, so the most specific route wins.
        self.routes = sorted(route_caps(settings), key=lambda item: len(item[0]), reverse=True)

    def cap_for(self, path: str) -> int:
        for prefix, cap in self.routes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return cap
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(cap, scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                await _refuse(cap, scope, receive, send)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _refuse(cap: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is over the {cap}-byte limit",
        {"limitBytes": cap},
    )
    # No `Connection: close`: the server discards the rest of the body as it arrives (never
    # buffering it), and the client reads this answer once it has sent its body; closing
    # with unread data would reset the connection and most clients would lose the 413.
    await response(scope, receive, send)
