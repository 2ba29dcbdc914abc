"""The Google Calendar sandbox: a small HTTP server speaking the subset of the Calendar API v3
that Relay's calendar capability uses, since no Google can be reached from here.

`relay dev` runs it when GOOGLE_API_BASE is unset in development (SANDBOX=auto) and the OAuth
providers sandbox stands in for the catalog's google_calendar (registering this sandbox as
its token sink), and the tests run it in a thread (`GoogleCalendarSandbox(port=0).run_in_thread()`). Relay points
google-api-python-client at it through the `api_endpoint` client option, with the discovery
document bundled in the package:

    build("calendar", "v3", credentials=credentials, static_discovery=True,
          client_options={"api_endpoint": settings.google_api_base})

`api_endpoint` replaces the discovery's whole base URL (rootUrl + servicePath), so
GOOGLE_API_BASE is `http://host:port/calendar/v3/` here, as `https://www.googleapis.com/
calendar/v3/` is Google's, and the library appends `calendars/…` to it.

Routes (Google's paths under /calendar/v3; JSON in and out):

    POST   /calendars/{calendarId}/events            insert; conferenceDataVersion,
                                                     sendUpdates (all | externalOnly | none)
    GET    /calendars/{calendarId}/events            list; timeMin, timeMax, singleEvents,
                                                     orderBy (startTime | updated),
                                                     maxResults, pageToken, showDeleted
    GET    /calendars/{calendarId}/events/{eventId}  get (a deleted event: status cancelled)
    PATCH  /calendars/{calendarId}/events/{eventId}  patch (top-level fields replaced)
    DELETE /calendars/{calendarId}/events/{eventId}  204; 410 once deleted, 404 unknown
    POST   /calendars/{calendarId}/acl               ACL insert {role, scope: {type, value}}
    GET    /calendars/{calendarId}/acl               ACL list

`primary` is the calendar of the token's user (its email); any other calendar id is created
on first use (Google would answer 404 for one the user cannot see).

Auth: `Authorization: Bearer <token>` with a token the sandbox knows: SANDBOX_ACCESS_TOKEN,
the `tokens` it was started with, and those registered through the control below (the OAuth
sandbox's, once `token_sink` is registered with it as a token sink). Anything else answers
401 in Google's error shape, `{"error": {"code", "message", "errors": [{domain, reason,
message, …}], "status"}}`, which google-auth's transport meets by trying to refresh the
credentials once.

Validation, 400 in Google's shape (Google's message where known, e.g. end before start "The
specified time range is empty."): a missing or unknown time zone, a dateTime without offset
and without timeZone, a recurring event without a start time zone, an RRULE that does not
parse, an attendee that is not an email, an unknown reminder method or minutes outside
0..40320, more than 5 overrides, default reminders together with overrides, a conference
type other than hangoutsMeet, orderBy=startTime without singleEvents=true.

A Meet conference: with conferenceDataVersion=1, `conferenceData.createRequest` with
`conferenceSolutionKey.type` "hangoutsMeet" is answered at once (status "success") with a
`meet.google.com/xxx-xxxx-xxx` entry point and `hangoutLink`.

Controls for `/sandbox` and tests (not Google's; JSON, camelCase like Relay's own API):

    GET  /_sandbox/events     {data: [{calendarId, event, updates}]}: every event of every
                              calendar, deleted ones included; `updates` are the
                              notifications sendUpdates would have sent
    POST /_sandbox/tokens     {token, email?, expiresAt?}: accept `token` as the user
                              `email` (until `expiresAt`); also takes the OAuth sandbox's
                              token-sink notices as they are ({event: issued | revoked,
                              provider, accessToken, expiresAt, subject}), keeping the
                              google_calendar ones (user `{subject}@example.com`)
    POST /_sandbox/faults     {count, status?, retryAfter?}: the next `count` API calls answer
                              `status` (503 unless given) in Google's shape; a 429 carries
                              Retry-After (`retryAfter` seconds, 1 unless given)

Not modelled: expanding recurring events into instances (singleEvents is accepted, a
recurring event is listed once), instances/move/import/quickAdd, syncToken, ETag
preconditions, free/busy, the calendar list, real e-mails. State lives in memory. No token is
logged or echoed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import re
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.sandbox.oauth_providers import sandboxed_providers
from relay.sandbox.server import AppServer, free_port, port_open, wait_for_port
from relay.settings import Settings

logger = logging.getLogger(__name__)

# The path Google serves the API under, kept so GOOGLE_API_BASE has Google's shape.
SERVICE_PATH = "/calendar/v3"
# The token the sandbox accepts unless told otherwise; it opens nothing but it.
SANDBOX_ACCESS_TOKEN = "relay-sandbox-google-token"  # noqa: S105 - a local sandbox's credential
SANDBOX_USER_EMAIL = "sandbox-user@example.com"
READY_SECONDS = 30
DEFAULT_MAX_RESULTS = 250
MAX_MAX_RESULTS = 2500
MAX_REMINDER_MINUTES = 40320
MAX_REMINDER_OVERRIDES = 5
DEFAULT_RETRY_AFTER_SECONDS = 1
SEND_UPDATES = ("all", "externalOnly", "none")
ACL_ROLES = ("none", "freeBusyReader", "reader", "writer", "owner")
ACL_SCOPES = ("default", "user", "group", "domain")
MEET = "hangoutsMeet"
# The OAuth sandbox's catalog key whose tokens open this API.
OAUTH_PROVIDER_KEY = "google_calendar"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# Google's event ids: base32hex (a-v, 0-9), 5 to 1024 characters.
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
_FREQS = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_WEEKDAY = r"(MO|TU|WE|TH|FR|SA|SU)"
_RRULE_PARTS: dict[str, re.Pattern[str]] = {
    "FREQ": re.compile("|".join(_FREQS)),
    "INTERVAL": re.compile(r"[1-9]\d*"),
    "COUNT": re.compile(r"[1-9]\d*"),
    "UNTIL": re.compile(r"\d{8}(T\d{6}Z?)?"),
    "WKST": re.compile(_WEEKDAY),
    "BYDAY": re.compile(rf"[+-]?\d{{0,2}}{_WEEKDAY}(,[+-]?\d{{0,2}}{_WEEKDAY})*"),
    "BYMONTHDAY": re.compile(r"[+-]?\d{1,2}(,[+-]?\d{1,2})*"),
    "BYYEARDAY": re.compile(r"[+-]?\d{1,3}(,[+-]?\d{1,3})*"),
    "BYWEEKNO": re.compile(r"[+-]?\d{1,2}(,[+-]?\d{1,2})*"),
    "BYMONTH": re.compile(r"\d{1,2}(,\d{1,2})*"),
    "BYHOUR": re.compile(r"\d{1,2}(,\d{1,2})*"),
    "BYMINUTE": re.compile(r"\d{1,2}(,\d{1,2})*"),
    "BYSECOND": re.compile(r"\d{1,2}(,\d{1,2})*"),
    "BYSETPOS": re.compile(r"[+-]?\d{1,3}(,[+-]?\d{1,3})*"),
}
_STATUSES = {
    400: ("badRequest", "INVALID_ARGUMENT"),
    401: ("authError", "UNAUTHENTICATED"),
    403: ("forbidden", "PERMISSION_DENIED"),
    404: ("notFound", "NOT_FOUND"),
    409: ("duplicate", "ALREADY_EXISTS"),
    410: ("deleted", "NOT_FOUND"),
    429: ("rateLimitExceeded", "RESOURCE_EXHAUSTED"),
    500: ("backendError", "INTERNAL"),
    503: ("backendError", "UNAVAILABLE"),
}
_FAULT_MESSAGES = {
    403: "Rate Limit Exceeded",
    429: "Rate Limit Exceeded",
    500: "Backend Error",
    503: "The service is currently unavailable.",
}
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class GoogleError(Exception):
    """A refusal in Google's JSON error shape."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message)
        default_reason, self.status = _STATUSES.get(code, ("backendError", "UNKNOWN"))
        self.code = code
        self.message = message
        self.reason = reason or default_reason
        self.headers = headers or {}
        self.location = location

    def response(self) -> JSONResponse:
        detail: dict[str, Any] = {
            "domain": "global",
            "reason": self.reason,
            "message": self.message,
        }
        if self.location is not None:
            detail |= {"locationType": "header", "location": self.location}
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [detail],
                "status": self.status,
            }
        }
        return JSONResponse(body, self.code, headers=self.headers)


def _bad(message: str, reason: str = "invalid") -> GoogleError:
    return GoogleError(400, message, reason)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_instant(value: object, name: str) -> datetime:
    """An RFC 3339 timestamp with an offset, as timeMin/timeMax must be."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2) is None:
        raise _bad(f"Invalid value for: {name}")
    try:
        return datetime.fromisoformat(match.group(0).replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(f"Invalid value for: {name}") from exc


def _zone(name: object, which: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise _bad(f"Invalid time zone definition for {which} time.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _bad(f"Invalid time zone definition for {which} time.") from exc


def _when(value: object, which: str, recurring: bool) -> datetime:
    """The instant an event's start or end stands for (an all-day date: UTC midnight)."""
    if not isinstance(value, dict):
        raise _bad(f"Missing {which} time.", "required")
    zone_name = value.get("timeZone")
    zone = _zone(zone_name, which) if zone_name is not None else None
    if recurring and zone is None and which == "start":
        raise _bad("Missing time zone definition for start time.", "required")
    if "dateTime" in value:
        raw = value["dateTime"]
        if not isinstance(raw, str) or not _RFC3339.fullmatch(raw):
            raise _bad(f"Invalid value for: {which}.dateTime")
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise _bad(f"Invalid value for: {which}.dateTime") from exc
        if moment.tzinfo is None:
            if zone is None:
                raise _bad(f"Missing time zone definition for {which} time.", "required")
            moment = moment.replace(tzinfo=zone)
        return moment
    if "date" in value:
        try:
            day = date.fromisoformat(str(value["date"]))
        except ValueError as exc:
            raise _bad(f"Invalid value for: {which}.date") from exc
        return datetime.combine(day, time(), UTC)
    raise _bad(f"Missing {which} time.", "required")


def validate_recurrence(lines: object) -> None:
    """RRULE/EXRULE lines checked against RFC 5545's grammar; RDATE/EXDATE lines kept."""
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise _bad("Invalid recurrence rule.")
    for line in lines:
        name, _, rule = line.partition(":")
        if name in ("RDATE", "EXDATE") or name.startswith(("RDATE;", "EXDATE;")):
            continue
        if name not in ("RRULE", "EXRULE") or not rule:
            raise _bad("Invalid recurrence rule.")
        parts: dict[str, str] = {}
        for part in rule.split(";"):
            key, sep, value = part.partition("=")
            pattern = _RRULE_PARTS.get(key)
            if not sep or pattern is None or key in parts or not pattern.fullmatch(value):
                raise _bad("Invalid recurrence rule.")
            parts[key] = value
        if "FREQ" not in parts or ("COUNT" in parts and "UNTIL" in parts):
            raise _bad("Invalid recurrence rule.")


def _validate_reminders(reminders: object) -> None:
    if reminders is None:
        return
    if not isinstance(reminders, dict):
        raise _bad("Invalid value for: reminders")
    overrides = reminders.get("overrides") or []
    if not isinstance(overrides, list):
        raise _bad("Invalid value for: reminders.overrides")
    if reminders.get("useDefault") and overrides:
        raise _bad("Cannot specify both default reminders and overrides at the same time.")
    if len(overrides) > MAX_REMINDER_OVERRIDES:
        raise _bad("The maximum number of override reminders is exceeded.")
    for override in overrides:
        if not isinstance(override, dict) or override.get("method") not in ("email", "popup"):
            raise _bad("Invalid reminder method.")
        minutes = override.get("minutes")
        if (
            not isinstance(minutes, int)
            or isinstance(minutes, bool)
            or not 0 <= minutes <= MAX_REMINDER_MINUTES
        ):
            raise _bad("Invalid reminder minutes value.")


def _meet_code() -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    pick = [secrets.choice(letters) for _ in range(10)]
    return f"{''.join(pick[:3])}-{''.join(pick[3:7])}-{''.join(pick[7:])}"


def _conference(data: object) -> dict[str, Any]:
    """conferenceData as Google answers it: a Meet createRequest gets its meeting at once."""
    if not isinstance(data, dict):
        raise _bad("Invalid value for: conferenceData")
    request = data.get("createRequest")
    if request is None:
        return dict(data)
    key = request.get("conferenceSolutionKey") if isinstance(request, dict) else None
    if not isinstance(key, dict) or key.get("type") != MEET:
        raise _bad("Invalid conference type value.")
    if not request.get("requestId"):
        raise _bad("Missing conference request id.", "required")
    code = _meet_code()
    return {
        "createRequest": {
            "requestId": request["requestId"],
            "conferenceSolutionKey": {"type": MEET},
            "status": {"statusCode": "success"},
        },
        "entryPoints": [
            {
                "entryPointType": "video",
                "uri": f"https://meet.google.com/{code}",
                "label": f"meet.google.com/{code}",
            }
        ],
        "conferenceSolution": {
            "key": {"type": MEET},
            "name": "Google Meet",
            "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png",
        },
        "conferenceId": code,
    }


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _offset(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = raw.partition(":")
        if kind != "o" or not number.isdigit():
            raise ValueError(token)
        return int(number)
    except ValueError as exc:
        raise _bad("Invalid page token value.") from exc


def _digest(token: str) -> bytes:
    # Tokens are looked up by their SHA-256: the lookup's timing says nothing of the token.
    return hashlib.sha256(token.encode("utf-8")).digest()


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Event:
    calendar_id: str
    resource: dict[str, Any]
    start: datetime
    end: datetime
    updates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def deleted(self) -> bool:
        return bool(self.resource.get("status") == "cancelled")


@dataclass
class _Calendar:
    id: str
    events: dict[str, _Event] = field(default_factory=dict)
    acl: dict[str, dict[str, Any]] = field(default_factory=dict)


class GoogleCalendarState:
    """Every calendar, event, ACL rule and token the sandbox knows, behind one lock."""

    def __init__(self, *, tokens: Iterable[str] = ()) -> None:
        self._lock = threading.RLock()
        # SHA-256 of the token → (its user's email, when it stops working or None).
        self._tokens: dict[bytes, tuple[str, datetime | None]] = {}
        self._calendars: dict[str, _Calendar] = {}
        self._faults = 0
        self._fault_status = 503
        self._retry_after = DEFAULT_RETRY_AFTER_SECONDS
        for token in (SANDBOX_ACCESS_TOKEN, *tokens):
            self.add_token(token)

    def close(self) -> None:
        """Nothing to stop: the sandbox sends no callbacks."""

    # -- controls ---------------------------------------------------------------------------

    def add_token(
        self, token: str, email: str = SANDBOX_USER_EMAIL, expires_at: datetime | None = None
    ) -> None:
        with self._lock:
            self._tokens[_digest(token)] = (email, expires_at)

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(_digest(token), None)

    def fail_next(
        self, count: int, status: int = 503, retry_after: int = DEFAULT_RETRY_AFTER_SECONDS
    ) -> None:
        with self._lock:
            self._faults, self._fault_status, self._retry_after = count, status, retry_after

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "calendarId": calendar.id,
                    "event": json.loads(json.dumps(event.resource)),
                    "updates": list(event.updates),
                }
                for calendar in self._calendars.values()
                for event in calendar.events.values()
            ]

    # -- the API ----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        """The email of the token's user, or 401; then a pending fault, if any."""
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            known = self._tokens.get(_digest(token.strip())) if scheme.lower() == "bearer" else None
            email, expires_at = known or (None, None)
            if email is None or (expires_at is not None and expires_at <= datetime.now(UTC)):
                raise GoogleError(
                    401,
                    UNAUTHENTICATED,
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                    location="Authorization",
                )
            if self._faults > 0:
                self._faults -= 1
                status = self._fault_status
                headers = {"Retry-After": str(self._retry_after)} if status == 429 else {}
                raise GoogleError(
                    status, _FAULT_MESSAGES.get(status, "Backend Error"), headers=headers
                )
            return email

    def _calendar(self, calendar_id: str, email: str) -> _Calendar:
        calendar_id = email if calendar_id == "primary" else calendar_id
        if calendar_id not in self._calendars:
            self._calendars[calendar_id] = _Calendar(calendar_id)
        return self._calendars[calendar_id]

    def _event(self, calendar: _Calendar, event_id: str) -> _Event:
        event = calendar.events.get(event_id)
        if event is None:
            raise GoogleError(404, "Not Found")
        return event

    def _apply(
        self, body: dict[str, Any], base: dict[str, Any], conference_version: int
    ) -> tuple[dict[str, Any], datetime, datetime]:
        """`base` with `body`'s fields, validated as Google validates an event."""
        resource = dict(base)
        for name, value in body.items():
            if name in ("kind", "etag", "created", "updated", "htmlLink", "iCalUID"):
                continue
            if name == "conferenceData":
                if conference_version >= 1 and value is None:
                    resource.pop("conferenceData", None)
                    resource.pop("hangoutLink", None)
                elif conference_version >= 1:
                    resource["conferenceData"] = _conference(value)
                continue
            resource[name] = value
        recurrence = resource.get("recurrence")
        if recurrence is not None:
            validate_recurrence(recurrence)
        start = _when(resource.get("start"), "start", bool(recurrence))
        end = _when(resource.get("end"), "end", bool(recurrence))
        if end < start:
            raise _bad("The specified time range is empty.", "timeRangeEmpty")
        attendees = resource.get("attendees") or []
        if not isinstance(attendees, list):
            raise _bad("Invalid value for: attendees")
        for attendee in attendees:
            if not isinstance(attendee, dict) or not _EMAIL.fullmatch(
                str(attendee.get("email", ""))
            ):
                raise _bad("Invalid attendee email.")
            attendee.setdefault("responseStatus", "needsAction")
        _validate_reminders(resource.get("reminders"))
        if resource.get("status", "confirmed") not in ("confirmed", "tentative", "cancelled"):
            raise _bad("Invalid value for: status")
        conference = resource.get("conferenceData")
        if isinstance(conference, dict) and "createRequest" in conference:
            resource["hangoutLink"] = conference["entryPoints"][0]["uri"]
        return resource, start, end

    @staticmethod
    def _update(event: _Event, action: str, send_updates: str | None, email: str) -> None:
        recipients = [
            a["email"]
            for a in event.resource.get("attendees") or []
            if a["email"] != email and send_updates in ("all", "externalOnly")
        ]
        if recipients:
            event.updates.append(
                {"action": action, "sendUpdates": send_updates, "recipients": recipients}
            )

    def insert(
        self,
        email: str,
        calendar_id: str,
        body: dict[str, Any],
        conference_version: int,
        send_updates: str | None,
    ) -> dict[str, Any]:
        with self._lock:
            calendar = self._calendar(calendar_id, email)
            generated = base64.b32hexencode(secrets.token_bytes(15)).decode().lower()
            event_id = body.get("id", generated)
            if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
                raise _bad("Invalid resource id value.")
            if event_id in calendar.events:
                raise GoogleError(409, "The requested identifier already exists.")
            now = _rfc3339(datetime.now(UTC))
            eid = base64.urlsafe_b64encode(f"{event_id} {calendar.id}".encode()).decode()
            base = {
                "kind": "calendar#event",
                "id": event_id,
                "status": "confirmed",
                "htmlLink": f"https://www.google.com/calendar/event?eid={eid.rstrip('=')}",
                "created": now,
                "updated": now,
                "creator": {"email": email, "self": True},
                "organizer": {"email": calendar.id, "self": calendar.id == email},
                "iCalUID": f"{event_id}@google.com",
                "sequence": 0,
                "reminders": {"useDefault": True},
                "eventType": "default",
            }
            resource, start, end = self._apply(
                {k: v for k, v in body.items() if k != "id"}, base, conference_version
            )
            resource["etag"] = f'"{secrets.randbelow(10**16)}"'
            event = _Event(calendar.id, resource, start, end)
            calendar.events[event_id] = event
            self._update(event, "created", send_updates, email)
            return json.loads(json.dumps(resource))  # type: ignore[no-any-return]

    def get(self, email: str, calendar_id: str, event_id: str) -> dict[str, Any]:
        with self._lock:
            event = self._event(self._calendar(calendar_id, email), event_id)
            return json.loads(json.dumps(event.resource))  # type: ignore[no-any-return]

    def patch(
        self,
        email: str,
        calendar_id: str,
        event_id: str,
        body: dict[str, Any],
        conference_version: int,
        send_updates: str | None,
    ) -> dict[str, Any]:
        with self._lock:
            event = self._event(self._calendar(calendar_id, email), event_id)
            if event.deleted:
                raise GoogleError(410, "Resource has been deleted")
            changes = {k: v for k, v in body.items() if k != "id"}
            resource, start, end = self._apply(changes, event.resource, conference_version)
            resource["updated"] = _rfc3339(datetime.now(UTC))
            resource["sequence"] = int(resource.get("sequence", 0)) + 1
            resource["etag"] = f'"{secrets.randbelow(10**16)}"'
            event.resource, event.start, event.end = resource, start, end
            self._update(event, "updated", send_updates, email)
            return json.loads(json.dumps(resource))  # type: ignore[no-any-return]

    def delete(self, email: str, calendar_id: str, event_id: str, send_updates: str | None) -> None:
        with self._lock:
            event = self._event(self._calendar(calendar_id, email), event_id)
            if event.deleted:
                raise GoogleError(410, "Resource has been deleted")
            # Google keeps a deleted event as cancelled: a second delete answers 410.
            event.resource["status"] = "cancelled"
            event.resource["updated"] = _rfc3339(datetime.now(UTC))
            self._update(event, "cancelled", send_updates, email)

    def list(self, email: str, calendar_id: str, query: dict[str, str]) -> dict[str, Any]:
        single = query.get("singleEvents", "false") == "true"
        order = query.get("orderBy")
        if order not in (None, "startTime", "updated"):
            raise _bad("Invalid value for: orderBy")
        if order == "startTime" and not single:
            raise _bad("The requested ordering is not available for the particular query.")
        raw_max = query.get("maxResults", str(DEFAULT_MAX_RESULTS))
        if not raw_max.isdigit() or int(raw_max) < 1:
            raise _bad("Invalid value for: maxResults")
        size = min(int(raw_max), MAX_MAX_RESULTS)
        low = _parse_instant(query["timeMin"], "timeMin") if "timeMin" in query else None
        high = _parse_instant(query["timeMax"], "timeMax") if "timeMax" in query else None
        if low is not None and high is not None and high <= low:
            raise _bad("The specified time range is empty.", "timeRangeEmpty")
        offset = _offset(query["pageToken"]) if "pageToken" in query else 0
        show_deleted = query.get("showDeleted", "false") == "true"
        with self._lock:
            calendar = self._calendar(calendar_id, email)
            # Google's bounds: timeMin against the end, timeMax against the start, exclusive.
            found = [
                e
                for e in calendar.events.values()
                if (show_deleted or not e.deleted)
                and (low is None or e.end > low)
                and (high is None or e.start < high)
            ]
            if order == "startTime":
                found.sort(key=lambda e: e.start)
            elif order == "updated":
                found.sort(key=lambda e: str(e.resource["updated"]))
            page = [json.loads(json.dumps(e.resource)) for e in found[offset : offset + size]]
            answer: dict[str, Any] = {
                "kind": "calendar#events",
                "etag": f'"{secrets.randbelow(10**16)}"',
                "summary": calendar.id,
                "updated": _rfc3339(datetime.now(UTC)),
                "timeZone": "UTC",
                "accessRole": "owner",
                "defaultReminders": [{"method": "popup", "minutes": 10}],
                "items": page,
            }
            if offset + size < len(found):
                answer["nextPageToken"] = _page_token(offset + size)
            return answer

    def acl_insert(self, email: str, calendar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        role = body.get("role")
        scope = body.get("scope")
        if role not in ACL_ROLES:
            raise _bad("Invalid value for: role", "required" if role is None else "invalid")
        if not isinstance(scope, dict) or scope.get("type") not in ACL_SCOPES:
            raise _bad("Invalid scope type value.")
        kind, value = scope["type"], scope.get("value")
        if kind in ("user", "group") and not (isinstance(value, str) and _EMAIL.fullmatch(value)):
            raise _bad("Invalid scope value.")
        if kind == "default" and value is not None:
            raise _bad("Invalid scope value.")
        rule_id = kind if kind == "default" else f"{kind}:{value}"
        rule = {
            "kind": "calendar#aclRule",
            "etag": f'"{secrets.randbelow(10**16)}"',
            "id": rule_id,
            "scope": {"type": kind} | ({"value": value} if value is not None else {}),
            "role": role,
        }
        with self._lock:
            self._calendar(calendar_id, email).acl[rule_id] = rule
        return dict(rule)

    def acl_list(self, email: str, calendar_id: str) -> dict[str, Any]:
        with self._lock:
            calendar = self._calendar(calendar_id, email)
            owner = {
                "kind": "calendar#aclRule",
                "id": f"user:{calendar.id}",
                "scope": {"type": "user", "value": calendar.id},
                "role": "owner",
            }
            rules = [owner, *(dict(r) for r in calendar.acl.values())]
        return {"kind": "calendar#acl", "items": rules}


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[GoogleCalendarState, str, Request], Awaitable[Response]]


def _state(request: Request) -> GoogleCalendarState:
    state: GoogleCalendarState = request.app.state.google_calendar
    return state


def _route(handler: _Handler, *, api: bool = True) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        try:
            email = state.authenticate(request.headers.get("authorization")) if api else ""
            return await handler(state, email, request)
        except GoogleError as exc:
            return exc.response()

    return endpoint


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _bad("Parse Error", "parseError")
    return body


def _send_updates(request: Request) -> str | None:
    value = request.query_params.get("sendUpdates")
    if value is not None and value not in SEND_UPDATES:
        raise _bad("Invalid value for: sendUpdates")
    if value is None and request.query_params.get("sendNotifications") == "true":
        return "all"
    return value


def _conference_version(request: Request) -> int:
    raw = request.query_params.get("conferenceDataVersion", "0")
    if raw not in ("0", "1"):
        raise _bad("Invalid conference data version value.")
    return int(raw)


async def _insert(state: GoogleCalendarState, email: str, request: Request) -> Response:
    body = await _json(request)
    event = state.insert(
        email,
        request.path_params["calendar_id"],
        body,
        _conference_version(request),
        _send_updates(request),
    )
    return JSONResponse(event)


async def _list(state: GoogleCalendarState, email: str, request: Request) -> Response:
    query = dict(request.query_params)
    return JSONResponse(state.list(email, request.path_params["calendar_id"], query))


async def _get(state: GoogleCalendarState, email: str, request: Request) -> Response:
    params = request.path_params
    return JSONResponse(state.get(email, params["calendar_id"], params["event_id"]))


async def _patch(state: GoogleCalendarState, email: str, request: Request) -> Response:
    params = request.path_params
    event = state.patch(
        email,
        params["calendar_id"],
        params["event_id"],
        await _json(request),
        _conference_version(request),
        _send_updates(request),
    )
    return JSONResponse(event)


async def _delete(state: GoogleCalendarState, email: str, request: Request) -> Response:
    params = request.path_params
    state.delete(email, params["calendar_id"], params["event_id"], _send_updates(request))
    return Response(status_code=204)


async def _acl_insert(state: GoogleCalendarState, email: str, request: Request) -> Response:
    rule = state.acl_insert(email, request.path_params["calendar_id"], await _json(request))
    return JSONResponse(rule)


async def _acl_list(state: GoogleCalendarState, email: str, request: Request) -> Response:
    return JSONResponse(state.acl_list(email, request.path_params["calendar_id"]))


async def _control_events(state: GoogleCalendarState, _: str, request: Request) -> Response:
    return JSONResponse({"data": state.events()})


async def _control_tokens(state: GoogleCalendarState, _: str, request: Request) -> Response:
    body = await _json(request)
    # Either {token, email?, expiresAt?} or the OAuth sandbox's token-sink notice,
    # {event, provider, accessToken, expiresAt, subject}; other providers' tokens are ignored.
    provider = body.get("provider", OAUTH_PROVIDER_KEY)
    token = body.get("token", body.get("accessToken"))
    subject = body.get("subject")
    default_email = f"{subject}@example.com" if isinstance(subject, str) else SANDBOX_USER_EMAIL
    email = body.get("email", default_email)
    raw_expiry = body.get("expiresAt")
    if not isinstance(token, str) or not token:
        raise _bad("token must be a non-empty string", "required")
    if provider != OAUTH_PROVIDER_KEY:
        return JSONResponse({"accepted": False})
    if body.get("event") == "revoked":
        state.revoke_token(token)
        return JSONResponse({"accepted": True})
    if not isinstance(email, str) or not _EMAIL.fullmatch(email):
        raise _bad("email must be an email address")
    try:
        expires_at = None if raw_expiry is None else datetime.fromisoformat(str(raw_expiry))
    except ValueError as exc:
        raise _bad("expiresAt must be an ISO 8601 time") from exc
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    state.add_token(token, email, expires_at)
    return JSONResponse({"accepted": True, "email": email}, 201)


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _control_faults(state: GoogleCalendarState, _: str, request: Request) -> Response:
    body = await _json(request)
    count = body.get("count")
    status = body.get("status", 503)
    retry_after = body.get("retryAfter", DEFAULT_RETRY_AFTER_SECONDS)
    if not _whole(count):
        raise _bad("count must be a whole number")
    if not (_whole(status) and 400 <= status <= 599):
        raise _bad("status must be an HTTP error status")
    if not _whole(retry_after):
        raise _bad("retryAfter must be a whole number of seconds")
    state.fail_next(count, status, retry_after)
    return JSONResponse({"count": count, "status": status, "retryAfter": retry_after})


def create_app(state: GoogleCalendarState) -> Starlette:
    """The ASGI app serving `state`."""
    events = f"{SERVICE_PATH}/calendars/{{calendar_id}}/events"
    acl = f"{SERVICE_PATH}/calendars/{{calendar_id}}/acl"
    routes = [
        Route(events, _route(_insert), methods=["POST"]),
        Route(events, _route(_list), methods=["GET"]),
        Route(f"{events}/{{event_id}}", _route(_get), methods=["GET"]),
        Route(f"{events}/{{event_id}}", _route(_patch), methods=["PATCH"]),
        Route(f"{events}/{{event_id}}", _route(_delete), methods=["DELETE"]),
        Route(acl, _route(_acl_insert), methods=["POST"]),
        Route(acl, _route(_acl_list), methods=["GET"]),
        Route("/_sandbox/events", _route(_control_events, api=False), methods=["GET"]),
        Route("/_sandbox/tokens", _route(_control_tokens, api=False), methods=["POST"]),
        Route("/_sandbox/faults", _route(_control_faults, api=False), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.google_calendar = state
    return app


# --- running it ----------------------------------------------------------------------------


GOOGLE_CALENDAR = "google_calendar"


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, no GOOGLE_API_BASE, and the OAuth providers sandbox standing
    in for the catalog's google_calendar (no GOOGLE_CALENDAR_CLIENT_ID/SECRET, no
    PROVIDERS_FILE): the sandbox accepts only that sandbox's tokens, so it runs with it. A
    real Google connection's tokens would be refused here, so with them Google stays real."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.google_api_base is None
        and GOOGLE_CALENDAR in sandboxed_providers(settings)
    )


@dataclass
class GoogleCalendarSandbox:
    """One Google Calendar sandbox server: its command, the settings that point Relay at it,
    and a way to run it in this process (tests). `port=0` with `run_in_thread` binds a free
    port."""

    port: int = field(default_factory=free_port)
    tokens: tuple[str, ...] = ()
    host: str = "127.0.0.1"

    @property
    def api_base(self) -> str:
        """Scheme, host and port: where the controls hang off."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_endpoint(self) -> str:
        """google-api-python-client's `api_endpoint` (GOOGLE_API_BASE)."""
        return f"{self.api_base}{SERVICE_PATH}/"

    def command(self) -> list[str]:
        """The command line; extra tokens are registered through the control, not put on it."""
        return [
            sys.executable,
            "-m",
            "relay.sandbox.google_calendar",
            "--port",
            str(self.port),
            "--host",
            self.host,
        ]

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's calendar code here."""
        return {"GOOGLE_API_BASE": self.api_endpoint}

    def state(self) -> GoogleCalendarState:
        return GoogleCalendarState(tokens=self.tokens)

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the Google Calendar sandbox", timeout)

    @property
    def token_sink(self) -> str:
        """The URL to hand `OAuthProvidersSandbox.register_token_sink` so the tokens it
        issues for google_calendar work here."""
        return f"{self.api_base}/_sandbox/tokens"

    def register_token(self, token: str, email: str = SANDBOX_USER_EMAIL) -> None:
        """Have the running sandbox accept `token` as the user `email`."""
        response = httpx.post(
            f"{self.api_base}/_sandbox/tokens", json={"token": token, "email": email}
        )
        response.raise_for_status()

    def run_in_thread(self) -> GoogleCalendarServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return GoogleCalendarServer(self).start()


class GoogleCalendarServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: GoogleCalendarSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "Google Calendar", self.state.close
        )
        sandbox.port = self._server.port

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    @property
    def api_endpoint(self) -> str:
        return self.sandbox.api_endpoint

    def start(self) -> GoogleCalendarServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> GoogleCalendarServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> GoogleCalendarSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real Google, or none)."""
    return GoogleCalendarSandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: GoogleCalendarSandbox | None) -> str:
    """The banner's line for Google Calendar."""
    if sandbox is not None:
        return f"sandboxed (local Google Calendar at {sandbox.api_endpoint})"
    if GOOGLE_CALENDAR not in settings.oauth_clients and settings.providers_file is None:
        return (
            "not configured (set GOOGLE_CALENDAR_CLIENT_ID and GOOGLE_CALENDAR_CLIENT_SECRET, "
            "or SANDBOX=auto in development)"
        )
    return f"real ({settings.google_api_base or 'https://www.googleapis.com/calendar/v3/'})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.google_calendar",
        description="Relay's local Google Calendar sandbox.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="google-calendar-sandbox: %(message)s")
    state = GoogleCalendarSandbox(port=args.port, host=args.host).state()
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
