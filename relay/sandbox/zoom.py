"""The Zoom sandbox: a small HTTP server speaking the Zoom REST API v2 subset Relay uses
(meetings and their cloud recordings, with server-to-server OAuth) and sending Zoom's signed
webhooks, since no Zoom can be reached from here.

The tests run it in a thread (`ZoomSandbox(port=0).run_in_thread()`); `relay dev` runs it
(`plan`) when Zoom has no credentials in development (SANDBOX=auto), sending its webhooks to
Relay's `{PUBLIC_BASE_URL}/webhooks/zoom`. Real Zoom serves the token endpoint
on zoom.us and the API on api.zoom.us; the sandbox serves both on one base, so
ZOOM_OAUTH_BASE (the token URL is `{ZOOM_OAUTH_BASE}/oauth/token`) and ZOOM_API_BASE (the
API is `{ZOOM_API_BASE}/v2/...`) both point at it. Zoom has no official Python SDK; Relay
calls it with httpx.

Routes (Zoom's documented paths and shapes; JSON):

    POST   /oauth/token?grant_type=account_credentials&account_id=…   HTTP Basic
           client_id:client_secret → {access_token, token_type: "bearer", expires_in: 3600,
           scope}; 401 {reason, error: "invalid_client"} for other credentials, 400
           invalid_request / unsupported_grant_type for another account or grant
    POST   /v2/users/me/meetings        {topic, type: 2 scheduled | 8 recurring (with
           recurrence {type, repeat_interval, weekly_days?, monthly_day?, end_times? |
           end_date_time?}), start_time, duration, timezone, agenda, settings {host_video,
           participant_video, waiting_room, …}} → 201 with id (11 digits), uuid, join_url,
           start_url, password
    GET    /v2/users/me/meetings?page_size=&next_page_token=   the caller's meetings,
           oldest first, without start_url or password (Zoom's "List meetings")
    GET    /v2/meetings/{meetingId}     the meeting
    PATCH  /v2/meetings/{meetingId}     the same fields (settings merged) → 204
    DELETE /v2/meetings/{meetingId}     → 204
    GET    /v2/meetings/{meetingId}/recordings   the cloud recording; 404 code 3301 until
           `recording.completed` was fired for the meeting

Every /v2 call needs `Authorization: Bearer <a token this sandbox issued and that has not
expired>`, or a user's token registered through /_sandbox/tokens (401 code 124 otherwise).
A meeting remembers who created it: `host` is "account" (server-to-server) or
"user:{subject}" (a user's token). Errors have Zoom's shape `{code, message}`: an unknown
meeting is 404 code 3001, a bad field 400 code 300 with `errors: [{field, message}]`.

Webhooks, as Zoom sends them: a JSON POST `{event, event_ts, payload: {account_id, object}}`
with `x-zm-request-timestamp` (seconds) and `x-zm-signature: v0=<hex HMAC-SHA256 keyed with
the webhook secret token over "v0:{timestamp}:{raw body}">`; three attempts.

Controls for `/sandbox` and tests (not Zoom's; JSON, camelCase like Relay's own API):

    GET  /_sandbox/meetings              {data: meetings, newest first, with their webhooks}
    GET|POST /_sandbox/webhooks          show / set {url}: where events go (the app's
                                         "event notification endpoint URL")
    POST /_sandbox/meetings/{id}/events  {event: "meeting.started" | "meeting.ended" |
                                         "recording.completed"}: fires the signed event;
                                         recording.completed first creates the meeting's
                                         recording files (download_url, play_url)
    POST /_sandbox/validate              {url?}: sends Zoom's `endpoint.url_validation`
                                         {payload: {plainToken}} and checks the answer
                                         {plainToken, encryptedToken: hex HMAC-SHA256 of
                                         plainToken keyed with the secret} → {passed, ...}
    POST /_sandbox/faults                {count, status?: 429 | 503 (default)}: the next
                                         `count` API calls (token included) answer it;
                                         status "lost": the next `count` creates book the
                                         meeting and drop the connection mid-answer
    POST /_sandbox/tokens                {token, subject?, expiresAt?}: accept `token` as
                                         a user's (a catalog `zoom` connection's); or the
                                         OAuth providers sandbox's token-sink notices
                                         ({event: issued | revoked, provider, accessToken,
                                         expiresAt, subject}; other providers' ignored)

Not modelled: occurrences of recurring meetings, registrants, other users than `me`,
scopes beyond one string, downloading recordings (the URLs are not served), Zoom's webhook
retry schedule. State lives in memory. No secret or token is logged.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from relay.sandbox.server import (
    DELIVERY_DELAYS,
    AppServer,
    Delivery,
    Poster,
    free_port,
    port_open,
    wait_for_port,
)
from relay.settings import Settings

logger = logging.getLogger(__name__)

# The credentials the sandbox accepts unless told otherwise; they open nothing but it.
SANDBOX_ACCOUNT_ID = "relaySandboxAcct01"
SANDBOX_CLIENT_ID = "relaySandboxClient"
SANDBOX_CLIENT_SECRET = "relay-sandbox-zoom-client-secret"  # noqa: S105 - a local sandbox's
SANDBOX_WEBHOOK_SECRET = "relay-sandbox-zoom-webhook-secret"  # noqa: S105 - credentials
SANDBOX_HOST_EMAIL = "host@sandbox.relay.test"
SANDBOX_HOST_ID = "relaySandboxHost01"
SANDBOX_USER_SUBJECT = "sandbox-user"
# The OAuth providers sandbox's catalog key whose tokens open this API.
OAUTH_PROVIDER_KEY = "zoom"
ACCOUNT_HOST = "account"
TOKEN_SECONDS = 3600
GRANTED_SCOPE = "meeting:read:admin meeting:write:admin recording:read:admin"
READY_SECONDS = 30
VALIDATION_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
MEETING_TYPES = frozenset({1, 2, 3, 8})
RECURRENCE_TYPES = frozenset({1, 2, 3})
EVENTS = ("meeting.started", "meeting.ended", "recording.completed")
SIGNATURE_HEADER = "x-zm-signature"
TIMESTAMP_HEADER = "x-zm-request-timestamp"
_FAULT_MESSAGES = {
    429: "You have reached the maximum per-second rate limit for this API. Try again later.",
    503: "Service temporarily unavailable.",
}


class ZoomError(Exception):
    """A refusal in Zoom's API shape, or (`body` given) the OAuth endpoint's."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers

    def response(self) -> JSONResponse:
        body = self.body if self.body is not None else {"code": self.code, "message": self.message}
        return JSONResponse(body, self.status, headers=self.headers)


def _invalid(name: str) -> ZoomError:
    return ZoomError(
        400,
        300,
        "Validation Failed.",
        body={
            "code": 300,
            "message": "Validation Failed.",
            "errors": [{"field": name, "message": "Invalid field."}],
        },
    )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Zoom's x-zm-signature: `v0=` + hex HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    message = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def encrypted_token(secret: str, plain_token: str) -> str:
    """The answer to Zoom's URL-validation challenge for `plain_token`."""
    mac = hmac.new(secret.encode("utf-8"), plain_token.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _zoom_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meeting_uuid() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Webhook:
    event: str
    delivery: Delivery | None  # None: no URL registered

    def public(self) -> dict[str, Any]:
        shown = self.delivery.public() if self.delivery else {"url": None, "attempts": 0}
        return {
            "event": self.event,
            "url": shown["url"],
            "delivery": shown.get("status", "no webhook url"),
            "responseStatus": shown.get("responseStatus"),
            "attempts": shown["attempts"],
        }


@dataclass
class _Meeting:
    id: int
    uuid: str
    fields: dict[str, Any]  # topic, type, start_time, duration, timezone, agenda, recurrence
    settings: dict[str, Any]
    password: str
    created: float
    join_url: str
    start_url: str
    status: str = "waiting"  # waiting | started | finished (the sandbox's last event)
    host: str = ACCOUNT_HOST  # who created it: "account" or "user:{subject}"
    recording: dict[str, Any] | None = None
    webhooks: list[_Webhook] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        """Zoom's meeting object."""
        resource = {
            "uuid": self.uuid,
            "id": self.id,
            "host_id": SANDBOX_HOST_ID,
            "host_email": SANDBOX_HOST_EMAIL,
            "topic": self.fields.get("topic", "Zoom meeting"),
            "type": self.fields.get("type", 2),
            "status": "started" if self.status == "started" else "waiting",
            "duration": self.fields.get("duration", 60),
            "timezone": self.fields.get("timezone", "UTC"),
            "agenda": self.fields.get("agenda", ""),
            "created_at": _zoom_time(self.created),
            "start_url": self.start_url,
            "join_url": self.join_url,
            "password": self.password,
            "h323_password": self.password,
            "pre_schedule": False,
            "settings": dict(self.settings),
        }
        if "start_time" in self.fields:
            resource["start_time"] = self.fields["start_time"]
        if "recurrence" in self.fields:
            resource["recurrence"] = self.fields["recurrence"]
        return resource

    def event_object(self) -> dict[str, Any]:
        """The `payload.object` of meeting webhooks (Zoom sends the id as a string there)."""
        obj = {
            "id": str(self.id),
            "uuid": self.uuid,
            "host_id": SANDBOX_HOST_ID,
            "topic": self.fields.get("topic", "Zoom meeting"),
            "type": self.fields.get("type", 2),
            "start_time": self.fields.get("start_time", _zoom_time(self.created)),
            "timezone": self.fields.get("timezone", "UTC"),
            "duration": self.fields.get("duration", 60),
        }
        return obj

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "topic": self.fields.get("topic"),
            "type": self.fields.get("type", 2),
            "startTime": self.fields.get("start_time"),
            "status": self.status,
            "joinUrl": self.join_url,
            "hasRecording": self.recording is not None,
            "host": self.host,
            "webhooks": [w.public() for w in self.webhooks],
        }


class ZoomState:
    """Everything the sandbox knows, behind one lock; safe to call from the server's event
    loop, the webhook threads and a test at once."""

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str = SANDBOX_ACCOUNT_ID,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        webhook_secret: str = SANDBOX_WEBHOOK_SECRET,
        webhook_url: str | None = None,
        delivery_delays: tuple[float, ...] = DELIVERY_DELAYS,
    ) -> None:
        self._lock = threading.RLock()
        self.base_url = base_url.rstrip("/")
        self.account_id = account_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self._tokens: dict[str, float] = {}  # token → expiry (epoch)
        # Users' tokens by their SHA-256 (the lookup's timing says nothing of the token)
        # → (the user's subject, expiry (epoch) or None).
        self._user_tokens: dict[bytes, tuple[str, float | None]] = {}
        self._meetings: dict[int, _Meeting] = {}
        self._faults = 0
        self._fault_status = 503
        self._lost_answers = 0
        self._poster = Poster("zoom-webhooks", delivery_delays)

    def close(self) -> None:
        self._poster.close()

    # -- auth -------------------------------------------------------------------------------

    def _fault(self) -> None:
        with self._lock:
            if self._faults <= 0:
                return
            self._faults -= 1
            status = self._fault_status
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None
        raise ZoomError(status, status, _FAULT_MESSAGES[status], headers=headers)

    def grant(
        self, authorization: str | None, grant_type: str | None, account_id: str | None
    ) -> dict[str, Any]:
        """The server-to-server OAuth grant (`account_credentials`)."""
        self._fault()
        client_id, client_secret = _basic(authorization)
        # Both compared, in constant time, whatever the first answer.
        good_id = hmac.compare_digest(client_id.encode(), self._client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        if not (good_id and good_secret):
            raise ZoomError(
                401,
                401,
                "Invalid client_id or client_secret",
                body={"reason": "Invalid client_id or client_secret", "error": "invalid_client"},
            )
        if grant_type != "account_credentials":
            raise ZoomError(
                400,
                400,
                "unsupported grant type",
                body={"reason": "unsupported grant type", "error": "unsupported_grant_type"},
            )
        if account_id != self.account_id:
            reason = "Invalid request : Missing or invalid account_id"
            raise ZoomError(400, 400, reason, body={"reason": reason, "error": "invalid_request"})
        token = secrets.token_urlsafe(48)
        with self._lock:
            now = time.time()
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = now + TOKEN_SECONDS
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_SECONDS,
            "scope": GRANTED_SCOPE,
        }

    def add_user_token(
        self, token: str, subject: str = SANDBOX_USER_SUBJECT, expires_at: float | None = None
    ) -> None:
        with self._lock:
            self._user_tokens[_digest(token)] = (subject, expires_at)

    def revoke_user_token(self, token: str) -> None:
        with self._lock:
            self._user_tokens.pop(_digest(token), None)

    def authenticate(self, authorization: str | None) -> str:
        """Who calls: "account" (a server-to-server token) or "user:{subject}"; else 401."""
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            known = list(self._tokens.items())
            user = self._user_tokens.get(_digest(token.strip()))
        now = time.time()
        if scheme.lower() == "bearer" and user is not None:
            subject, expiry = user
            if expiry is None or expiry > now:
                self._fault()
                return f"user:{subject}"
        valid = False
        for issued, expiry in known:
            # Every issued token compared, in constant time: no early exit on a match.
            if hmac.compare_digest(issued.encode(), token.encode()) and expiry > now:
                valid = True
        if scheme.lower() != "bearer" or not valid:
            raise ZoomError(401, 124, "Invalid access token.")
        self._fault()
        return ACCOUNT_HOST

    # -- the meetings API -------------------------------------------------------------------

    def _meeting(self, meeting_id: str) -> _Meeting:
        meeting = self._meetings.get(int(meeting_id)) if meeting_id.isdigit() else None
        if meeting is None:
            raise ZoomError(404, 3001, f"Meeting does not exist: {meeting_id}.")
        return meeting

    def create(self, body: dict[str, Any], host: str = ACCOUNT_HOST) -> dict[str, Any]:
        fields, settings = _validate(body, creating=True)
        with self._lock:
            meeting_id = secrets.randbelow(9 * 10**10) + 10**10
            while meeting_id in self._meetings:
                meeting_id = secrets.randbelow(9 * 10**10) + 10**10
            password = secrets.token_urlsafe(6)[:8]
            meeting = _Meeting(
                id=meeting_id,
                uuid=_meeting_uuid(),
                fields=fields,
                settings={**_DEFAULT_SETTINGS, **settings},
                password=password,
                created=time.time(),
                join_url=f"{self.base_url}/j/{meeting_id}?pwd={secrets.token_urlsafe(24)}",
                start_url=f"{self.base_url}/s/{meeting_id}?zak={secrets.token_urlsafe(32)}",
                host=host,
            )
            self._meetings[meeting_id] = meeting
            return meeting.resource()

    def get(self, meeting_id: str) -> dict[str, Any]:
        with self._lock:
            return self._meeting(meeting_id).resource()

    def listed(self, host: str, page_size: int, page_token: str | None) -> dict[str, Any]:
        """Zoom's "List meetings" for the host: the list items (no start URL or
        password), oldest first, paged by `next_page_token`."""
        start = int(page_token) if page_token and page_token.isdigit() else 0
        with self._lock:
            own = [m for m in self._meetings.values() if m.host == host]
            page = own[start : start + page_size]
            more = start + page_size < len(own)
            listed = [
                {
                    key: value
                    for key, value in meeting.resource().items()
                    if key not in ("start_url", "password", "h323_password", "settings")
                }
                for meeting in page
            ]
        return {
            "page_size": page_size,
            "total_records": len(own),
            "next_page_token": str(start + page_size) if more else "",
            "meetings": listed,
        }

    def update(self, meeting_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            meeting = self._meeting(meeting_id)
            fields, settings = _validate({**meeting.fields, **body}, creating=False)
            meeting.fields = fields
            meeting.settings.update(settings)

    def delete(self, meeting_id: str) -> None:
        with self._lock:
            del self._meetings[self._meeting(meeting_id).id]

    def recordings(self, meeting_id: str) -> dict[str, Any]:
        with self._lock:
            meeting = self._meeting(meeting_id)
            if meeting.recording is None:
                raise ZoomError(404, 3301, "This recording does not exist.")
            return dict(meeting.recording)

    # -- controls ---------------------------------------------------------------------------

    def set_webhook(self, url: str) -> None:
        with self._lock:
            self.webhook_url = url

    def fail_next(self, count: int, status: int) -> None:
        with self._lock:
            self._faults, self._fault_status = count, status

    def lose_next_answers(self, count: int) -> None:
        """The next `count` creates book the meeting, then drop the connection mid-answer
        (a network failure after Zoom acted: the caller cannot tell whether it did)."""
        with self._lock:
            self._lost_answers = count

    def take_lost_answer(self) -> bool:
        with self._lock:
            if self._lost_answers <= 0:
                return False
            self._lost_answers -= 1
            return True

    def meetings(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.public() for m in reversed(self._meetings.values())]

    def fire(self, meeting_id: str, event: str) -> dict[str, Any]:
        """Sends `event` for the meeting, signed, to the registered URL."""
        with self._lock:
            meeting = self._meeting(meeting_id)
            now = time.time()
            obj = meeting.event_object()
            extra: dict[str, Any] = {}
            if event == "meeting.started":
                meeting.status = "started"
            elif event == "meeting.ended":
                meeting.status = "finished"
                obj["end_time"] = _zoom_time(now)
            else:
                meeting.recording = self._recording(meeting, now)
                obj = {**meeting.recording, "id": meeting.id}
                extra["download_token"] = secrets.token_urlsafe(32)
            body = {
                "event": event,
                "event_ts": int(now * 1000),
                "payload": {"account_id": self.account_id, "object": obj},
                **extra,
            }
            webhook = _Webhook(event, Delivery(self.webhook_url) if self.webhook_url else None)
            meeting.webhooks.append(webhook)
        if webhook.delivery is not None:
            content = json.dumps(body).encode("utf-8")
            timestamp = str(int(now))
            self._poster.post(
                webhook.delivery, headers=self.signed_headers(timestamp, content), content=content
            )
        return webhook.public()

    def signed_headers(self, timestamp: str, content: bytes) -> dict[str, str]:
        return {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._webhook_secret, timestamp, content),
            "user-agent": "Zoom Marketplace/1.0a",
        }

    def _recording(self, meeting: _Meeting, now: float) -> dict[str, Any]:
        """Zoom's cloud recording object: one MP4 and one M4A file."""
        start = now - 60 * int(meeting.fields.get("duration", 60))
        files = []
        for file_type, kind, size in (
            ("MP4", "shared_screen_with_speaker_view", 2_345_678),
            ("M4A", "audio_only", 345_678),
        ):
            file_id = secrets.token_hex(16)
            files.append(
                {
                    "id": file_id,
                    "meeting_id": meeting.uuid,
                    "recording_start": _zoom_time(start),
                    "recording_end": _zoom_time(now),
                    "file_type": file_type,
                    "file_extension": file_type,
                    "file_size": size,
                    "play_url": f"{self.base_url}/rec/play/{file_id}",
                    "download_url": f"{self.base_url}/rec/download/{file_id}",
                    "status": "completed",
                    "recording_type": kind,
                }
            )
        return {
            "uuid": meeting.uuid,
            "id": meeting.id,
            "account_id": self.account_id,
            "host_id": SANDBOX_HOST_ID,
            "topic": meeting.fields.get("topic", "Zoom meeting"),
            "type": meeting.fields.get("type", 2),
            "start_time": _zoom_time(start),
            "timezone": meeting.fields.get("timezone", "UTC"),
            "duration": int(meeting.fields.get("duration", 60)),
            "total_size": sum(f["file_size"] for f in files),
            "recording_count": len(files),
            "share_url": f"{self.base_url}/rec/share/{secrets.token_urlsafe(16)}",
            "recording_files": files,
            "password": meeting.password,
        }

    async def validate(self, url: str) -> dict[str, Any]:
        """Zoom's `endpoint.url_validation` round trip against `url`."""
        plain = secrets.token_urlsafe(16)
        now = time.time()
        body = {
            "payload": {"plainToken": plain},
            "event_ts": int(now * 1000),
            "event": "endpoint.url_validation",
        }
        content = json.dumps(body).encode("utf-8")
        headers = self.signed_headers(str(int(now)), content)
        try:
            async with httpx.AsyncClient(timeout=VALIDATION_TIMEOUT_SECONDS) as http:
                response = await http.post(url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            return {"passed": False, "responseStatus": None, "reason": type(exc).__name__}
        if response.status_code != 200:
            return _failed(response.status_code, f"HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            return _failed(200, "the answer is not JSON")
        if not isinstance(answer, dict):
            return _failed(200, "the answer is not a JSON object")
        expected = encrypted_token(self._webhook_secret, plain)
        got_plain, got_encrypted = answer.get("plainToken"), answer.get("encryptedToken")
        if not (isinstance(got_plain, str) and isinstance(got_encrypted, str)):
            return _failed(200, "plainToken and encryptedToken must be strings")
        if not hmac.compare_digest(got_plain.encode(), plain.encode()):
            return _failed(200, "plainToken does not match")
        if not hmac.compare_digest(got_encrypted.encode(), expected.encode()):
            return _failed(200, "encryptedToken does not match")
        return {"passed": True, "responseStatus": 200, "reason": None}


def _failed(status: int, reason: str) -> dict[str, Any]:
    return {"passed": False, "responseStatus": status, "reason": reason}


_DEFAULT_SETTINGS: dict[str, Any] = {
    "host_video": False,
    "participant_video": False,
    "join_before_host": False,
    "mute_upon_entry": False,
    "waiting_room": False,
    "approval_type": 2,
    "audio": "both",
    "auto_recording": "none",
}


def _basic(authorization: str | None) -> tuple[str, str]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _validate(body: dict[str, Any], *, creating: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The meeting fields and settings of a create or (merged) update, checked as Zoom does."""
    fields: dict[str, Any] = {}
    topic = body.get("topic", "Zoom meeting")
    if not isinstance(topic, str) or len(topic) > 200:
        raise _invalid("topic")
    fields["topic"] = topic
    kind = body.get("type", 2)
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in MEETING_TYPES:
        raise _invalid("type")
    fields["type"] = kind
    if "start_time" in body:
        start = body["start_time"]
        try:
            datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        except ValueError:
            raise _invalid("start_time") from None
        fields["start_time"] = start
    duration = body.get("duration", 60)
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        raise _invalid("duration")
    fields["duration"] = duration
    timezone = body.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("timezone") from None
    fields["timezone"] = timezone
    agenda = body.get("agenda", "")
    if not isinstance(agenda, str) or len(agenda) > 2000:
        raise _invalid("agenda")
    fields["agenda"] = agenda
    recurrence = body.get("recurrence")
    if kind == 8:
        if not isinstance(recurrence, dict) or recurrence.get("type") not in RECURRENCE_TYPES:
            raise _invalid("recurrence.type")
        interval = recurrence.get("repeat_interval", 1)
        if not isinstance(interval, int) or not 1 <= interval <= 90:
            raise _invalid("recurrence.repeat_interval")
        end_times = recurrence.get("end_times")
        if end_times is not None and not (isinstance(end_times, int) and 1 <= end_times <= 60):
            raise _invalid("recurrence.end_times")
        fields["recurrence"] = {**recurrence, "repeat_interval": interval}
    settings = body.get("settings", {}) if creating or "settings" in body else {}
    if not isinstance(settings, dict):
        raise _invalid("settings")
    return fields, settings


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[ZoomState, Request], Awaitable[Response]]


def _state(request: Request) -> ZoomState:
    state: ZoomState = request.app.state.zoom
    return state


def _route(handler: _Handler, *, api: bool = True) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        try:
            if api:
                request.state.host = state.authenticate(request.headers.get("authorization"))
            return await handler(state, request)
        except ZoomError as exc:
            return exc.response()

    return endpoint


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ZoomError(400, 300, "Request Body should be a valid JSON object.")
    return body


async def _token(state: ZoomState, request: Request) -> Response:
    query = request.query_params
    grant = state.grant(
        request.headers.get("authorization"), query.get("grant_type"), query.get("account_id")
    )
    return JSONResponse(grant)


async def _create(state: ZoomState, request: Request) -> Response:
    if request.method == "GET":
        size = request.query_params.get("page_size", "30")
        if not size.isdigit() or not 1 <= int(size) <= 300:
            raise ZoomError(400, 300, "page_size must be between 1 and 300")
        token = request.query_params.get("next_page_token")
        return JSONResponse(state.listed(request.state.host, int(size), token))
    created = state.create(await _json(request), request.state.host)
    if state.take_lost_answer():
        return StreamingResponse(_cut_short(json.dumps(created).encode()), 201)
    return JSONResponse(created, 201)


async def _cut_short(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    raise ConnectionAbortedError("the sandbox dropped the answer (a lost-answer fault)")


async def _meeting(state: ZoomState, request: Request) -> Response:
    meeting_id = request.path_params["meeting_id"]
    if request.method == "GET":
        return JSONResponse(state.get(meeting_id))
    if request.method == "PATCH":
        state.update(meeting_id, await _json(request))
    else:
        state.delete(meeting_id)
    return Response(status_code=204)


async def _recordings(state: ZoomState, request: Request) -> Response:
    return JSONResponse(state.recordings(request.path_params["meeting_id"]))


def _url(body: dict[str, Any]) -> str:
    url = body.get("url")
    if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
        raise ZoomError(400, 300, "url must be an http(s) URL")
    return url


async def _control_meetings(state: ZoomState, request: Request) -> Response:
    return JSONResponse({"data": state.meetings()})


async def _control_webhooks(state: ZoomState, request: Request) -> Response:
    if request.method == "POST":
        state.set_webhook(_url(await _json(request)))
    return JSONResponse({"url": state.webhook_url})


async def _control_event(state: ZoomState, request: Request) -> Response:
    event = (await _json(request)).get("event")
    if event not in EVENTS:
        raise ZoomError(400, 300, f"event must be one of {', '.join(EVENTS)}")
    return JSONResponse(state.fire(request.path_params["meeting_id"], str(event)), 202)


async def _control_validate(state: ZoomState, request: Request) -> Response:
    body = await _json(request)
    url = _url(body) if "url" in body else state.webhook_url
    if url is None:
        raise ZoomError(400, 300, "no url given and no webhook url registered")
    return JSONResponse(await state.validate(url))


async def _control_faults(state: ZoomState, request: Request) -> Response:
    body = await _json(request)
    count, status = body.get("count"), body.get("status", 503)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ZoomError(400, 300, "count must be a whole number")
    if status == "lost":
        state.lose_next_answers(count)
        return JSONResponse({"count": count, "status": status})
    if status not in _FAULT_MESSAGES:
        raise ZoomError(400, 300, "status must be 429 or 503")
    state.fail_next(count, int(status))
    return JSONResponse({"count": count, "status": status})


async def _control_tokens(state: ZoomState, request: Request) -> Response:
    body = await _json(request)
    # Either {token, subject?, expiresAt?} or the OAuth sandbox's token-sink notice,
    # {event, provider, accessToken, expiresAt, subject}; other providers' tokens are ignored.
    provider = body.get("provider", OAUTH_PROVIDER_KEY)
    token = body.get("token", body.get("accessToken"))
    subject = body.get("subject", SANDBOX_USER_SUBJECT)
    raw_expiry = body.get("expiresAt")
    if not isinstance(token, str) or not token:
        raise ZoomError(400, 300, "token must be a non-empty string")
    if provider != OAUTH_PROVIDER_KEY:
        return JSONResponse({"accepted": False})
    if body.get("event") == "revoked":
        state.revoke_user_token(token)
        return JSONResponse({"accepted": True})
    if not isinstance(subject, str) or not subject:
        raise ZoomError(400, 300, "subject must be a non-empty string")
    try:
        expires_at = None if raw_expiry is None else datetime.fromisoformat(str(raw_expiry))
    except ValueError:
        raise ZoomError(400, 300, "expiresAt must be an ISO 8601 time") from None
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    state.add_user_token(token, subject, expires_at.timestamp() if expires_at else None)
    return JSONResponse({"accepted": True, "subject": subject}, 201)


def create_app(state: ZoomState) -> Starlette:
    """The ASGI app serving `state`."""
    meeting = "/v2/meetings/{meeting_id}"
    routes = [
        Route("/oauth/token", _route(_token, api=False), methods=["POST"]),
        Route("/v2/users/me/meetings", _route(_create), methods=["GET", "POST"]),
        Route(meeting, _route(_meeting), methods=["GET", "PATCH", "DELETE"]),
        Route(f"{meeting}/recordings", _route(_recordings), methods=["GET"]),
        Route("/_sandbox/meetings", _route(_control_meetings, api=False), methods=["GET"]),
        Route("/_sandbox/webhooks", _route(_control_webhooks, api=False), methods=["GET", "POST"]),
        Route(
            "/_sandbox/meetings/{meeting_id}/events",
            _route(_control_event, api=False),
            methods=["POST"],
        ),
        Route("/_sandbox/validate", _route(_control_validate, api=False), methods=["POST"]),
        Route("/_sandbox/faults", _route(_control_faults, api=False), methods=["POST"]),
        Route("/_sandbox/tokens", _route(_control_tokens, api=False), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.zoom = state
    return app


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no Zoom credentials at all (ZOOM_ACCOUNT_ID,
    ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET): the sandbox stands in for Zoom. Any one of them set
    means a Zoom of the developer's, which the sandbox's settings must not override."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.zoom_account_id is None
        and settings.zoom_client_id is None
        and settings.zoom_client_secret is None
    )


@dataclass
class ZoomSandbox:
    """One Zoom sandbox server: its command, the settings that point Relay at it, and a way
    to run it in this process (tests). `port=0` with `run_in_thread` binds a free port."""

    port: int = field(default_factory=free_port)
    account_id: str = SANDBOX_ACCOUNT_ID
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    webhook_secret: str = SANDBOX_WEBHOOK_SECRET
    webhook_url: str | None = None
    host: str = "127.0.0.1"

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.api_base}/oauth/token"

    def command(self) -> list[str]:
        """The command line; the default secrets are not on it (non-default ones would be)."""
        command = [sys.executable, "-m", "relay.sandbox.zoom", "--port", str(self.port)]
        command += ["--host", self.host, "--account-id", self.account_id]
        command += ["--client-id", self.client_id]
        if self.client_secret != SANDBOX_CLIENT_SECRET:
            command += ["--client-secret", self.client_secret]
        if self.webhook_secret != SANDBOX_WEBHOOK_SECRET:
            command += ["--webhook-secret", self.webhook_secret]
        if self.webhook_url is not None:
            command += ["--webhook-url", self.webhook_url]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's Zoom code here: the
        API and the token endpoint share the sandbox's base."""
        return {
            "ZOOM_ACCOUNT_ID": self.account_id,
            "ZOOM_CLIENT_ID": self.client_id,
            "ZOOM_CLIENT_SECRET": self.client_secret,
            "ZOOM_WEBHOOK_SECRET": self.webhook_secret,
            "ZOOM_API_BASE": self.api_base,
            "ZOOM_OAUTH_BASE": self.api_base,
        }

    def state(self) -> ZoomState:
        return ZoomState(
            base_url=self.api_base,
            account_id=self.account_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhook_secret=self.webhook_secret,
            webhook_url=self.webhook_url,
        )

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the Zoom sandbox", timeout)

    @property
    def token_sink(self) -> str:
        """The URL to hand `OAuthProvidersSandbox.register_token_sink` so the `zoom` tokens it
        issues open this API as their users'."""
        return f"{self.api_base}/_sandbox/tokens"

    def register_webhook(self, url: str) -> None:
        """Set the running sandbox's event notification URL."""
        response = httpx.post(f"{self.api_base}/_sandbox/webhooks", json={"url": url})
        response.raise_for_status()

    def run_in_thread(self) -> ZoomServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return ZoomServer(self).start()


class ZoomServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: ZoomSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "Zoom", self.state.close
        )
        sandbox.port = self._server.port
        # Join and recording links hang off the base, whose port is known only once bound.
        self.state.base_url = sandbox.api_base

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> ZoomServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ZoomServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> ZoomSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real Zoom, or none).
    Its webhook URL is Relay's /webhooks/zoom under PUBLIC_BASE_URL."""
    if not wanted(settings):
        return None
    return ZoomSandbox(webhook_url=f"{settings.base_url}/webhooks/zoom")


def describe(settings: Settings, sandbox: ZoomSandbox | None) -> str:
    """The banner's line for Zoom."""
    if sandbox is not None:
        return f"sandboxed (local Zoom at {sandbox.api_base}, webhooks to {sandbox.webhook_url})"
    if settings.zoom_account_id and settings.zoom_client_id and settings.zoom_client_secret:
        return f"real ({settings.zoom_api_base})"
    return (
        "not configured (set ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET, "
        "or SANDBOX=auto in development)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.zoom", description="Relay's local Zoom sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--account-id", default=SANDBOX_ACCOUNT_ID)
    parser.add_argument("--client-id", default=SANDBOX_CLIENT_ID)
    parser.add_argument("--client-secret", default=SANDBOX_CLIENT_SECRET)
    parser.add_argument("--webhook-secret", default=SANDBOX_WEBHOOK_SECRET)
    parser.add_argument("--webhook-url")
    args = parser.parse_args(argv)
    sandbox = ZoomSandbox(
        port=args.port,
        host=args.host,
        account_id=args.account_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        webhook_secret=args.webhook_secret,
        webhook_url=args.webhook_url,
    )
    logging.basicConfig(level=logging.INFO, format="zoom-sandbox: %(message)s")
    state = sandbox.state()
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")
    finally:
        state.close()


if __name__ == "__main__":
    main()
