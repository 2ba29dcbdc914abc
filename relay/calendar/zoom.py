"""Zoom's REST API v2, the meetings subset Relay uses, over httpx with server-to-server OAuth
or, for a meeting booked with `zoomIntegrationId`, a user's `zoom` catalog connection.

Zoom has no official Python SDK. `ZoomClient` fetches an `account_credentials` token from
`{ZOOM_OAUTH_BASE}/oauth/token`, caches it until shortly before it expires, and fetches a
new one once when the API answers 401 (a token revoked or expired early) before giving up.
Every refusal is a `ZoomApiError` carrying Zoom's status, code and message; classifying it
(permanent or transient, Retry-After) is the caller's job at the activity boundary.
`ZoomTokenClient` calls with a user's access token instead; it never fetches one: its 401 is
`ZoomTokenRejected`, and refreshing is the connection's workflow's job
(relay/calendar/access.py `ZoomAccess`).

`meeting_body` is the pure mapping from Relay's meeting fields (camelCase, an RRULE for the
recurrence) to Zoom's meeting JSON; it raises `MeetingFieldError` naming the Relay field.

    ZoomApiError        any non-2xx answer from Zoom or its token endpoint, or no answer
     │                  that makes sense (status 502, code None)
     └── ZoomTokenRejected   401 to a user's token (ZoomTokenClient): refresh, retry once
    MeetingFieldError   a Relay field Zoom cannot represent (ValueError; the API's 422)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from relay.provider_errors import parse_retry_after
from relay.settings import Settings

PROVIDER = "zoom"
# A token is replaced this long before Zoom says it expires, so a call never carries one
# that dies in flight.
TOKEN_EXPIRY_MARGIN_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 20.0
# Zoom's largest page; a reconciliation reads at most this many pages of meetings.
LIST_PAGE_SIZE = 300
LIST_PAGES_MAX = 20
CREATED_SKEW = timedelta(minutes=1)
# Zoom's codes that mean "not there": 3001 meeting does not exist, 3301 no recording.
MEETING_NOT_FOUND = 3001
NO_RECORDING = 3301
SCHEDULED_MEETING = 2
RECURRING_MEETING_FIXED_TIME = 8
_MESSAGE_LIMIT = 300


class ZoomApiError(Exception):
    """Zoom refused or failed a call. `status` is the HTTP status, `code` Zoom's own code
    (None when the body had none), `message` Zoom's message (never a credential),
    `retry_after` the delay Zoom asked for (429), `field` the field a 400 code 300 named."""

    def __init__(
        self,
        status: int,
        code: int | None,
        message: str,
        *,
        retry_after: timedelta | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(
            f"Zoom answered HTTP {status}" + (f" ({code})" if code else "") + f": {message}"
        )
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.field = field


class ZoomTokenRejected(ZoomApiError):
    """401 to a user's access token: refresh through the connection, retry once."""


class MeetingFieldError(ValueError):
    """A meeting field Zoom cannot take; `field` is Relay's (camelCase) name for it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class ZoomClient:
    """One account's Zoom API. Safe to share between concurrent activities: the token is
    fetched under a lock, so a burst of calls asks for one token, not one each."""

    def __init__(
        self,
        *,
        account_id: str,
        client_id: str,
        client_secret: str,
        api_base: str,
        oauth_base: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._account_id = account_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._api_base = api_base.rstrip("/")
        self._oauth_base = oauth_base.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never print the secret
        return f"ZoomClient(account_id={self._account_id!r}, api_base={self._api_base!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> ZoomClient | None:
        return from_settings(settings)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- the meetings API ---------------------------------------------------------------

    async def create_meeting(self, body: dict[str, Any]) -> dict[str, Any]:
        """Schedules a meeting for the account's user (`me`): Zoom's meeting object,
        with id, join_url, start_url and password."""
        response = await self._call("POST", "/v2/users/me/meetings", json=body)
        return _json_object(response)

    async def list_meetings(self) -> list[dict[str, Any]]:
        """Every meeting of the account's user (`me`), as Zoom lists them: without start
        URL or password (read one with `get_meeting` for those)."""
        meetings: list[dict[str, Any]] = []
        page_token = ""
        for _ in range(LIST_PAGES_MAX):
            params: dict[str, str | int] = {"type": "scheduled", "page_size": LIST_PAGE_SIZE}
            if page_token:
                params["next_page_token"] = page_token
            page = _json_object(await self._call("GET", "/v2/users/me/meetings", params=params))
            meetings.extend(item for item in page.get("meetings") or [] if isinstance(item, dict))
            page_token = str(page.get("next_page_token") or "")
            if not page_token:
                break
        return meetings

    async def get_meeting(self, meeting_id: str) -> dict[str, Any]:
        return _json_object(await self._call("GET", f"/v2/meetings/{meeting_id}"))

    async def update_meeting(self, meeting_id: str, body: dict[str, Any]) -> None:
        await self._call("PATCH", f"/v2/meetings/{meeting_id}", json=body)

    async def delete_meeting(self, meeting_id: str) -> bool:
        """True when deleted now, False when Zoom no longer knows it (already deleted):
        deleting is idempotent for a saga's undo and a retried activity."""
        try:
            await self._call("DELETE", f"/v2/meetings/{meeting_id}")
        except ZoomApiError as exc:
            if exc.status == 404 and exc.code in (MEETING_NOT_FOUND, None):
                return False
            raise
        return True

    async def recordings(self, meeting_id: str) -> dict[str, Any] | None:
        """The meeting's cloud recording, or None while it has none (Zoom's 3301)."""
        try:
            response = await self._call("GET", f"/v2/meetings/{meeting_id}/recordings")
        except ZoomApiError as exc:
            if exc.code == NO_RECORDING:
                return None
            raise
        return _json_object(response)

    # -- plumbing -------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._server_to_server_call(method, path, **kwargs)

    async def _server_to_server_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = await self._access_token()
        response = await self._send(method, path, token, **kwargs)
        if response.status_code == 401:
            # One fresh token, once: a second 401 is Zoom's verdict, not a stale cache.
            token = await self._access_token(stale=token)
            response = await self._send(method, path, token, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response

    async def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self._http.request(
            method, f"{self._api_base}{path}", headers=headers, **kwargs
        )

    async def _access_token(self, *, stale: str | None = None) -> str:
        async with self._token_lock:
            cached = self._token
            if (
                cached is not None
                and cached.value != stale
                and cached.expires_at > time.monotonic()
            ):
                return cached.value
            response = await self._http.post(
                f"{self._oauth_base}/oauth/token",
                params={"grant_type": "account_credentials", "account_id": self._account_id},
                auth=(self._client_id, self._client_secret),
            )
            if response.status_code >= 400:
                raise _error(response)
            body = _json_object(response)
            value, expires_in = body.get("access_token"), body.get("expires_in", 3600)
            if not isinstance(value, str) or not isinstance(expires_in, int | float):
                raise ZoomApiError(502, None, "the token endpoint answered without a token")
            lifetime = max(0.0, float(expires_in) - TOKEN_EXPIRY_MARGIN_SECONDS)
            self._token = _Token(value, time.monotonic() + lifetime)
            return value


class ZoomTokenClient(ZoomClient):
    """Zoom's API with one user's OAuth access token (a `zoom` catalog connection's): no
    token endpoint, no server-to-server credentials; a 401 is `ZoomTokenRejected`."""

    def __init__(
        self, access_token: str, *, api_base: str, http: httpx.AsyncClient | None = None
    ) -> None:
        super().__init__(
            account_id="",
            client_id="",
            client_secret="",
            api_base=api_base,
            oauth_base="",
            http=http,
        )
        self._user_token = access_token

    def __repr__(self) -> str:  # never print the token
        return f"ZoomTokenClient(api_base={self._api_base!r})"

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(method, path, self._user_token, **kwargs)
        if response.status_code == 401:
            refused = _error(response)
            raise ZoomTokenRejected(refused.status, refused.code, refused.message)
        if response.status_code >= 400:
            raise _error(response)
        return response


def from_settings(settings: Settings) -> ZoomClient | None:
    """The account's client, or None when the server-to-server credentials are not all set."""
    secret = settings.zoom_client_secret
    secret_value = secret.get_secret_value() if secret is not None else None
    if not (settings.zoom_account_id and settings.zoom_client_id and secret_value):
        return None
    return ZoomClient(
        account_id=settings.zoom_account_id,
        client_id=settings.zoom_client_id,
        client_secret=secret_value,
        api_base=settings.zoom_api_base,
        oauth_base=settings.zoom_oauth_base,
    )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ZoomApiError(502, None, f"HTTP {response.status_code} without a JSON object")
    return body


def _error(response: httpx.Response) -> ZoomApiError:
    """Zoom's `{code, message, errors?}` or the token endpoint's `{reason, error}`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code: int | None = None
    message = response.reason_phrase or "error"
    field: str | None = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        text = body.get("message") or body.get("reason") or body.get("error")
        if isinstance(text, str) and text:
            message = text
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            named = errors[0].get("field")
            field = named if isinstance(named, str) else None
            if field:
                message = f"{message} {field}: {errors[0].get('message', 'invalid')}"
    return ZoomApiError(
        response.status_code,
        code,
        message[:_MESSAGE_LIMIT],
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        field=field,
    )


# --- Relay's fields → Zoom's JSON --------------------------------------------------------

# Relay's camelCase meeting settings and Zoom's names for them; others are refused so a
# typo is a 422, not a setting silently dropped.
SETTINGS = {
    "hostVideo": "host_video",
    "participantVideo": "participant_video",
    "waitingRoom": "waiting_room",
    "joinBeforeHost": "join_before_host",
    "muteUponEntry": "mute_upon_entry",
    "autoRecording": "auto_recording",
    "approvalType": "approval_type",
    "audio": "audio",
    "meetingAuthentication": "meeting_authentication",
}
_FREQUENCIES = {"DAILY": 1, "WEEKLY": 2, "MONTHLY": 3}
# RFC 5545 weekdays → Zoom's weekly_days (1 = Sunday … 7 = Saturday).
_WEEKDAYS = {"SU": "1", "MO": "2", "TU": "3", "WE": "4", "TH": "5", "FR": "6", "SA": "7"}
MAX_REPEAT_INTERVAL = 90
MAX_OCCURRENCES = 60


def zoom_time(value: datetime) -> str:
    """Zoom's UTC `yyyy-MM-ddTHH:mm:ssZ`."""
    if value.tzinfo is None:
        raise MeetingFieldError("startTime", "startTime must carry a UTC offset")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_start(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MeetingFieldError("startTime", "startTime is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise MeetingFieldError("startTime", "startTime must carry a UTC offset")
    return moment


def zoom_recurrence(rrule: str) -> dict[str, Any]:
    """An RRULE (`RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6`, the form Google Calendar takes
    too) as Zoom's recurrence object. Zoom knows daily, weekly and monthly-by-day."""
    text = rrule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[len("RRULE:") :]
    parts: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise MeetingFieldError("recurrence", f"recurrence has a malformed part {item!r}")
        parts[key.strip().upper()] = value.strip().upper()
    frequency = _FREQUENCIES.get(parts.pop("FREQ", ""))
    if frequency is None:
        raise MeetingFieldError("recurrence", "recurrence FREQ must be DAILY, WEEKLY or MONTHLY")
    result: dict[str, Any] = {"type": frequency}
    interval = parts.pop("INTERVAL", "1")
    if not interval.isdigit() or not 1 <= int(interval) <= MAX_REPEAT_INTERVAL:
        raise MeetingFieldError(
            "recurrence", f"recurrence INTERVAL must be 1 to {MAX_REPEAT_INTERVAL}"
        )
    result["repeat_interval"] = int(interval)
    if "BYDAY" in parts:
        if frequency != _FREQUENCIES["WEEKLY"]:
            raise MeetingFieldError("recurrence", "recurrence BYDAY is supported for WEEKLY only")
        days = parts.pop("BYDAY").split(",")
        if not days or any(day not in _WEEKDAYS for day in days):
            raise MeetingFieldError("recurrence", "recurrence BYDAY must list SU,MO,TU,WE,TH,FR,SA")
        result["weekly_days"] = ",".join(_WEEKDAYS[day] for day in days)
    if "BYMONTHDAY" in parts:
        day = parts.pop("BYMONTHDAY")
        if frequency != _FREQUENCIES["MONTHLY"] or not day.isdigit() or not 1 <= int(day) <= 31:
            raise MeetingFieldError("recurrence", "recurrence BYMONTHDAY must be 1 to 31, MONTHLY")
        result["monthly_day"] = int(day)
    if "COUNT" in parts and "UNTIL" in parts:
        raise MeetingFieldError("recurrence", "recurrence takes COUNT or UNTIL, not both")
    if "COUNT" in parts:
        count = parts.pop("COUNT")
        if not count.isdigit() or not 1 <= int(count) <= MAX_OCCURRENCES:
            raise MeetingFieldError(
                "recurrence", f"recurrence COUNT must be 1 to {MAX_OCCURRENCES}"
            )
        result["end_times"] = int(count)
    elif "UNTIL" in parts:
        result["end_date_time"] = _until(parts.pop("UNTIL"))
    else:
        # Zoom needs an end; RFC 5545's "forever" is not something Zoom schedules.
        raise MeetingFieldError("recurrence", "recurrence needs COUNT or UNTIL")
    if parts:
        unsupported = ", ".join(sorted(parts))
        raise MeetingFieldError("recurrence", f"recurrence part(s) not supported: {unsupported}")
    return result


def _until(value: str) -> str:
    for pattern in ("%Y%m%dT%H%M%SZ", "%Y%m%d"):
        try:
            moment = datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        return zoom_time(moment)
    raise MeetingFieldError("recurrence", "recurrence UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ")


def zoom_settings(settings: dict[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    for name, value in settings.items():
        zoom_name = SETTINGS.get(name)
        if zoom_name is None:
            raise MeetingFieldError(f"settings.{name}", f"settings.{name} is not a meeting setting")
        mapped[zoom_name] = value
    return mapped


def meeting_body(
    *,
    topic: str | None = None,
    start_time: str | datetime | None = None,
    duration: int | None = None,
    timezone: str | None = None,
    agenda: str | None = None,
    recurrence: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Zoom's meeting JSON for a create (all of topic, start_time, duration given) or a
    PATCH (only what changes). A recurrence makes it type 8 (recurring, fixed time)."""
    body: dict[str, Any] = {}
    if topic is not None:
        body["topic"] = topic
    if start_time is not None:
        body["start_time"] = zoom_time(parse_start(start_time))
    if duration is not None:
        body["duration"] = duration
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise MeetingFieldError("timezone", f"unknown time zone {timezone!r}") from None
        body["timezone"] = timezone
    if agenda is not None:
        body["agenda"] = agenda
    if recurrence is not None:
        body["type"] = RECURRING_MEETING_FIXED_TIME
        body["recurrence"] = zoom_recurrence(recurrence)
    elif topic is not None:
        body["type"] = SCHEDULED_MEETING
    if settings:
        body["settings"] = zoom_settings(settings)
    return body


class AmbiguousMeeting(Exception):
    """More than one meeting could be the one an interrupted create made."""


def created_by(
    meetings: list[dict[str, Any]], body: dict[str, Any], since: datetime
) -> dict[str, Any] | None:
    """The meeting an interrupted create of `body` made, among the host's `meetings`: the
    same topic and start time, created no earlier than `since` (a minute's clock skew
    allowed). None when there is none; `AmbiguousMeeting` when there are several."""
    if since.tzinfo is None:  # SQLite hands timestamps back naive; they are UTC
        since = since.replace(tzinfo=UTC)
    earliest = since - CREATED_SKEW
    found = []
    for meeting in meetings:
        if meeting.get("topic") != body.get("topic"):
            continue
        if "start_time" in body and meeting.get("start_time") != body["start_time"]:
            continue
        try:
            created = parse_start(str(meeting.get("created_at") or ""))
        except (ValueError, MeetingFieldError):
            continue
        if created >= earliest:
            found.append(meeting)
    if len(found) > 1:
        raise AmbiguousMeeting(f"{len(found)} meetings match the interrupted create")
    return found[0] if found else None


def recording_links(recording: dict[str, Any]) -> dict[str, Any]:
    """Zoom's cloud recording as Relay keeps and publishes it (camelCase, links only)."""
    files = [
        {
            "id": item.get("id"),
            "fileType": item.get("file_type"),
            "recordingType": item.get("recording_type"),
            "fileSize": item.get("file_size"),
            "playUrl": item.get("play_url"),
            "downloadUrl": item.get("download_url"),
            "recordingStart": item.get("recording_start"),
            "recordingEnd": item.get("recording_end"),
            "status": item.get("status"),
        }
        for item in recording.get("recording_files") or []
        if isinstance(item, dict)
    ]
    return {
        "uuid": recording.get("uuid"),
        "shareUrl": recording.get("share_url"),
        "startTime": recording.get("start_time"),
        "totalSize": recording.get("total_size"),
        "files": files,
    }
