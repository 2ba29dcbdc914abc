"""A small synchronous client for the part of Google Calendar v3 that Relay uses, over
google-api-python-client with the discovery document bundled in the package.

It is handed a user's access token and acts with it as a plain Bearer token: google-auth
never refreshes it (`max_refresh_attempts=0`), because a Relay connection's tokens are
refreshed only through that connection's workflow (relay/calendar/access.py does that on
`TokenRejected`). Calls never retry inside the library (`num_retries=0`): the caller (an API
route or a Temporal activity) decides.

    GoogleApiError       Google answered an error, or could not be reached (status 503);
     │                   `status`, `message` (Google's, never a token), `reason`,
     │                   `retry_after` (seconds, from Retry-After)
     └── TokenRejected   401: the access token is no longer accepted; refresh and retry once

The client is not thread-safe (httplib2): build one per thread, which is cheap enough for a
request's few calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

GOOGLE_API_BASE = "https://www.googleapis.com/calendar/v3/"
"""Google's own endpoint, used when GOOGLE_API_BASE is unset."""

TIMEOUT_SECONDS = 30.0
MEET_SOLUTION = "hangoutsMeet"
SEND_UPDATES = ("all", "externalOnly", "none")
ACL_ROLES = ("freeBusyReader", "reader", "writer", "owner")
# The event's private extended properties Relay keeps a Zoom meeting's id and join URL in.
ZOOM_MEETING_PROPERTY = "relayZoomMeetingId"
ZOOM_JOIN_URL_PROPERTY = "relayZoomJoinUrl"


class GoogleApiError(Exception):
    """Google refused or failed a call. `message` is Google's own (it never echoes a token)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Google Calendar answered {status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying later: 408, 429 and 5xx (ARCHITECTURE.md principle 6)."""
        return self.status in (408, 429) or self.status >= 500


class TokenRejected(GoogleApiError):
    """401: the access token is expired or revoked; refresh through the connection, retry once."""


def _retry_after(value: str | None) -> float | None:
    """Retry-After is delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _from_http_error(error: HttpError) -> GoogleApiError:
    status = int(error.resp.status)
    message = ""
    reason: str | None = None
    try:
        payload = json.loads(error.content.decode("utf-8", "replace"))
        detail = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(detail, dict):
            message = str(detail.get("message") or "")
            errors = detail.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                reason = errors[0].get("reason")
    except (ValueError, AttributeError):
        pass
    message = message or (error.resp.reason or f"HTTP {status}")
    retry_after = _retry_after(error.resp.get("retry-after"))
    kind = TokenRejected if status == 401 else GoogleApiError
    return kind(status, message, reason=reason, retry_after=retry_after)


def _rfc3339(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class GoogleCalendar:
    """Calendar v3 calls acting with one access token (see the module docstring)."""

    def __init__(
        self, access_token: str, api_base: str | None = None, *, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        # A token-only credential, and no refresh attempt on 401: the 401 must reach us.
        http = google_auth_httplib2.AuthorizedHttp(
            Credentials(token=access_token),
            http=httplib2.Http(timeout=timeout),
            max_refresh_attempts=0,
        )
        self._service: Any = build(
            "calendar",
            "v3",
            http=http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": api_base or GOOGLE_API_BASE},
        )

    @staticmethod
    def _execute(request: Any) -> Any:
        try:
            return request.execute(num_retries=0)
        except HttpError as error:
            raise _from_http_error(error) from None
        except (httplib2.HttpLib2Error, OSError) as error:  # timeouts are OSErrors
            raise GoogleApiError(
                503, f"Google Calendar could not be reached ({type(error).__name__})"
            ) from None

    def insert_event(
        self,
        calendar_id: str,
        body: dict[str, Any],
        *,
        send_updates: str | None = None,
        conference_data_version: int = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"calendarId": calendar_id, "body": body}
        if send_updates:
            params["sendUpdates"] = send_updates
        if conference_data_version or "conferenceData" in body:
            params["conferenceDataVersion"] = conference_data_version or 1
        result: dict[str, Any] = self._execute(self._service.events().insert(**params))
        return result

    def patch_event(
        self,
        calendar_id: str,
        event_id: str,
        body: dict[str, Any],
        *,
        send_updates: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"calendarId": calendar_id, "eventId": event_id, "body": body}
        if send_updates:
            params["sendUpdates"] = send_updates
        if "conferenceData" in body:
            params["conferenceDataVersion"] = 1
        result: dict[str, Any] = self._execute(self._service.events().patch(**params))
        return result

    def delete_event(
        self, calendar_id: str, event_id: str, *, send_updates: str | None = None
    ) -> bool:
        """True when deleted now, False when it was already gone (404 or 410)."""
        params: dict[str, Any] = {"calendarId": calendar_id, "eventId": event_id}
        if send_updates:
            params["sendUpdates"] = send_updates
        try:
            self._execute(self._service.events().delete(**params))
        except GoogleApiError as error:
            if error.status in (404, 410):
                return False
            raise
        return True

    def get_event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        request = self._service.events().get(calendarId=calendar_id, eventId=event_id)
        result: dict[str, Any] = self._execute(request)
        return result

    def list_events(
        self,
        calendar_id: str,
        *,
        time_min: datetime | str | None = None,
        time_max: datetime | str | None = None,
        page_token: str | None = None,
        max_results: int | None = None,
    ) -> dict[str, Any]:
        """One page: Google's `{items, nextPageToken?, …}`."""
        params: dict[str, Any] = {"calendarId": calendar_id}
        if time_min is not None:
            params["timeMin"] = _rfc3339(time_min)
        if time_max is not None:
            params["timeMax"] = _rfc3339(time_max)
        if page_token:
            params["pageToken"] = page_token
        if max_results is not None:
            params["maxResults"] = max_results
        result: dict[str, Any] = self._execute(self._service.events().list(**params))
        return result

    def share(self, calendar_id: str, email: str, role: str) -> dict[str, Any]:
        """ACL insert: give the user `email` the `role` on the calendar."""
        body = {"role": role, "scope": {"type": "user", "value": email}}
        request = self._service.acl().insert(calendarId=calendar_id, body=body)
        result: dict[str, Any] = self._execute(request)
        return result


def _when(value: datetime | date | str, time_zone: str | None) -> dict[str, str]:
    if isinstance(value, datetime):
        when = {"dateTime": value.isoformat()}
    elif isinstance(value, date):
        return {"date": value.isoformat()}  # an all-day event carries no zone
    else:
        when = {"dateTime": value}
    if time_zone:
        when["timeZone"] = time_zone
    return when


def stable_event_id(*parts: str) -> str:
    """An event id derived from `parts` (an integration, a calendar, an idempotency key or a
    workflow step), in Google's id alphabet (base32hex: 0-9a-v, 5..1024 characters): an insert
    retried with it answers 409 instead of creating a second event."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


def zoom_meeting_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(Zoom meeting id, join URL) an event carries in its private properties, if any."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    return private.get(ZOOM_MEETING_PROPERTY), private.get(ZOOM_JOIN_URL_PROPERTY)


def zoom_description(description: str | None, join_url: str) -> str:
    """The description with the Zoom join line appended (once)."""
    line = f"Join Zoom meeting: {join_url}"
    if description and join_url in description:
        return description
    return f"{description}\n\n{line}" if description else line


def event_body(
    *,
    summary: str | None = None,
    start: datetime | date | str | None = None,
    end: datetime | date | str | None = None,
    time_zone: str | None = None,
    description: str | None = None,
    location: str | None = None,
    attendees: Sequence[str] | None = None,
    reminders: Sequence[dict[str, Any]] | None = None,
    recurrence: Sequence[str] | None = None,
    conference: str | None = None,
    zoom_join_url: str | None = None,
    zoom_meeting_id: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Google's event JSON from Relay's fields; a field left None is left out (so the result
    also serves as a PATCH body).

    `start`/`end`: a datetime (naive ones are wall-clock time in `time_zone`), a date (all
    day) or an RFC 3339 string. `reminders`: [{method, minutes}] replaces the calendar's
    defaults (an empty list: no reminders). `conference="meet"` asks Google for a Meet link
    (`request_id` makes the request idempotent; insert then needs conferenceDataVersion=1,
    which GoogleCalendar sends when the body has conferenceData). `zoom_join_url` puts a
    Zoom meeting's join URL in the location and the description; `zoom_meeting_id` is kept in
    the event's private extended properties (ZOOM_MEETING_PROPERTY) so whoever deletes or
    moves the event finds the meeting."""
    body: dict[str, Any] = {}
    if summary is not None:
        body["summary"] = summary
    if zoom_join_url:
        description = zoom_description(description, zoom_join_url)
        location = location or zoom_join_url
    if description is not None:
        body["description"] = description
    if location is not None:
        body["location"] = location
    if start is not None:
        body["start"] = _when(start, time_zone)
    if end is not None:
        body["end"] = _when(end, time_zone)
    if attendees is not None:
        body["attendees"] = [{"email": email} for email in attendees]
    if reminders is not None:
        body["reminders"] = {
            "useDefault": False,
            "overrides": [
                {"method": reminder["method"], "minutes": int(reminder["minutes"])}
                for reminder in reminders
            ],
        }
    if recurrence is not None:
        prefixes = ("RRULE:", "EXRULE:", "RDATE", "EXDATE")
        body["recurrence"] = [
            line if line.upper().startswith(prefixes) else f"RRULE:{line}" for line in recurrence
        ]
    if zoom_meeting_id is not None or zoom_join_url:
        private: dict[str, str] = {}
        if zoom_meeting_id is not None:
            private[ZOOM_MEETING_PROPERTY] = str(zoom_meeting_id)
        if zoom_join_url:
            private[ZOOM_JOIN_URL_PROPERTY] = zoom_join_url
        body["extendedProperties"] = {"private": private}
    if conference == "meet":
        body["conferenceData"] = {
            "createRequest": {
                "requestId": request_id or uuid.uuid4().hex,
                "conferenceSolutionKey": {"type": MEET_SOLUTION},
            }
        }
    return body
