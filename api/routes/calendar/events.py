"""Google Calendar events and sharing, acting with a user's Google connection:
/v1/calendar/events… and /v1/calendar/calendars/{calendarId}/share.

Each call loads the `google_calendar` integration, reads its token and calls Google through
`relay.calendar.access.GoogleAccess`, which refreshes through the connection's workflow
(when the token is due, and once on a 401) and turns Google's answers into Relay's errors
(docs/calendar.md). A 429 leaves with a Retry-After header. No Temporal workflow runs for a
plain event; a meeting booked across Zoom and Google is /v1/meetings.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute

from api.deps import (
    CatalogDep,
    EngineDep,
    KeyringDep,
    SettingsDep,
    get_temporal,
    require_api_key,
)
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.errors import error_response
from api.idempotency import require_same_request
from api.pagination import page
from api.schemas.calendar_events import (
    CalendarShare,
    CalendarShareOut,
    EventCreate,
    EventDeleted,
    EventOut,
    EventUpdate,
)
from relay.calendar.access import GoogleAccess
from relay.calendar.google import (
    GoogleApiError,
    GoogleCalendar,
    event_body,
    stable_event_id,
    zoom_meeting_of,
)
from relay.calendar.validation import instant
from relay.calendar.zoom import MeetingFieldError, ZoomApiError, ZoomClient, meeting_body
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import Integration
from relay.oauth.contracts import RefreshRequest
from relay.settings import Settings
from workflows.clients import oauth as oauth_client

log = logging.getLogger(__name__)

_ID_PATTERN = r"^[A-Za-z0-9._@#+-]+$"
EventIdPath = Annotated[str, Path(min_length=1, max_length=1024, pattern=_ID_PATTERN)]
CalendarIdPath = Annotated[str, Path(min_length=1, max_length=255, pattern=_ID_PATTERN)]
CalendarIdQuery = Annotated[
    str, Query(alias="calendarId", min_length=1, max_length=255, pattern=_ID_PATTERN)
]
IntegrationIdQuery = Annotated[uuid.UUID, Query(alias="integrationId")]
GOOGLE_ERRORS = error_responses(401, 404, 409, 422, 429, 502, 503)


class _RetryAfterRoute(APIRoute):
    """Adds `Retry-After` to a 429 RATE_LIMITED (the envelope carries no headers)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RelayError as exc:
                if exc.code != ErrorCode.RATE_LIMITED:
                    raise
                response = error_response(exc.code, exc.message, exc.details, status=exc.status)
                details = exc.details if isinstance(exc.details, dict) else {}
                response.headers["Retry-After"] = str(math.ceil(details.get("retryAfter") or 1))
                return response

        return route


router = APIRouter(
    prefix="/v1/calendar",
    tags=["calendar"],
    dependencies=[Depends(require_api_key)],
    route_class=_RetryAfterRoute,
)


def get_access(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    keyring: KeyringDep,
    catalog: CatalogDep,
) -> GoogleAccess:
    async def refresh(integration: Integration, *, force: bool) -> object:
        # Temporal is reached only when a refresh is needed: a call with a live token
        # works while Temporal is down.
        client = await get_temporal(request)
        return await oauth_client.refresh(
            client, settings, integration, RefreshRequest(force=force, reason="calendar")
        )

    return GoogleAccess(engine, keyring, catalog, refresh, settings.google_api_base)


AccessDep = Annotated[GoogleAccess, Depends(get_access)]


def _invalid(field: str, message: str, where: str = "body") -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "the request is invalid",
        [{"field": field, "in": where, "message": message}],
    )


def event_out(calendar_id: str, event: dict[str, Any]) -> EventOut:
    """Google's event as Relay returns it."""
    reminders = event.get("reminders") or {}
    conference: dict[str, str] | None = None
    _, zoom_url = zoom_meeting_of(event)
    if event.get("hangoutLink"):
        conference = {"type": "meet", "joinUrl": event["hangoutLink"]}
    elif zoom_url:
        conference = {"type": "zoom", "joinUrl": zoom_url}
    return EventOut.model_validate(
        {
            "id": event["id"],
            "calendarId": calendar_id,
            "status": event.get("status"),
            "htmlLink": event.get("htmlLink"),
            "summary": event.get("summary"),
            "description": event.get("description"),
            "location": event.get("location"),
            "start": event.get("start"),
            "end": event.get("end"),
            "attendees": event.get("attendees") or [],
            "reminders": None if reminders.get("useDefault", True) else reminders.get("overrides"),
            "recurrence": event.get("recurrence"),
            "conference": conference,
            "iCalUID": event.get("iCalUID"),
            "created": event.get("created"),
            "updated": event.get("updated"),
        }
    )


# --- Zoom, for conference "zoom" -------------------------------------------------------------


def _zoom_error(error: ZoomApiError) -> RelayError:
    details: dict[str, Any] = {"provider": "zoom", "status": error.status, "code": error.code}
    if error.status == 429:
        seconds = error.retry_after.total_seconds() if error.retry_after else 1.0
        return RelayError(
            ErrorCode.RATE_LIMITED, f"Zoom: {error.message}", details | {"retryAfter": seconds}
        )
    return RelayError(ErrorCode.PROVIDER_ERROR, f"Zoom: {error.message}", details)


def _zoom_client(settings: Settings) -> ZoomClient:
    zoom = ZoomClient.from_settings(settings)
    if zoom is None:
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            'conference "zoom" needs Zoom (ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET)',
        )
    return zoom


async def _create_zoom_meeting(settings: Settings, payload: EventCreate) -> dict[str, Any]:
    """A Zoom meeting for the event's time, its summary as the topic."""
    start, end = payload.start, payload.end
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise _invalid("conference", 'a "zoom" conference needs start and end date-times')
    begins, ends = instant(start, payload.time_zone), instant(end, payload.time_zone)
    try:
        body = meeting_body(
            topic=payload.summary,
            start_time=begins,
            duration=max(1, math.ceil((ends - begins).total_seconds() / 60)),
            timezone=payload.time_zone,
            agenda=payload.description,
        )
    except MeetingFieldError as exc:
        raise _invalid(exc.field, exc.message) from None
    zoom = _zoom_client(settings)
    try:
        return await zoom.create_meeting(body)
    except ZoomApiError as exc:
        raise _zoom_error(exc) from None
    finally:
        await zoom.aclose()


async def _delete_zoom_meeting(settings: Settings, meeting_id: str) -> None:
    """Best effort: the calendar side is what the caller asked about."""
    zoom = ZoomClient.from_settings(settings)
    if zoom is None:
        log.warning("Zoom meeting %s kept: Zoom is not configured", meeting_id)
        return
    try:
        await zoom.delete_meeting(meeting_id)
    except ZoomApiError as exc:
        log.warning("Zoom meeting %s not deleted: HTTP %s", meeting_id, exc.status)
    finally:
        await zoom.aclose()


# --- routes ----------------------------------------------------------------------------------


@router.post(
    "/events",
    status_code=201,
    summary="Create a Google Calendar event",
    description='`conference: "meet"` asks Google for a Meet link; `"zoom"` creates a Zoom '
    "meeting (server-to-server Zoom) whose join URL goes in the event (if the event then "
    "fails, the Zoom meeting is deleted).",
    response_model=Envelope[EventOut],
    responses=error_responses(400, 401, 404, 409, 422, 429, 502, 503),
)
async def create_event(
    payload: EventCreate, settings: SettingsDep, access: AccessDep
) -> dict[str, Any]:
    await access.integration(payload.integration_id)  # 404/409 before Zoom is touched
    event_id = (
        stable_event_id(str(payload.integration_id), payload.calendar_id, payload.idempotency_key)
        if payload.idempotency_key
        else None
    )
    if event_id is not None:
        earlier = await access.call(
            payload.integration_id, lambda c: _existing(c, payload.calendar_id, event_id)
        )
        if earlier is not None:  # a retry: the first request's event, nothing created
            _require_same_event(payload, earlier)
            return ok(event_out(payload.calendar_id, earlier))
    zoom_meeting: dict[str, Any] | None = None
    if payload.conference == "zoom":
        zoom_meeting = await _create_zoom_meeting(settings, payload)
    body = event_body(
        summary=payload.summary,
        description=payload.description,
        location=payload.location,
        start=payload.start,
        end=payload.end,
        time_zone=payload.time_zone,
        attendees=payload.attendees,
        reminders=[r.model_dump() for r in payload.reminders]
        if payload.reminders is not None
        else None,
        recurrence=payload.recurrence,
        conference="meet" if payload.conference == "meet" else None,
        zoom_join_url=zoom_meeting.get("join_url") if zoom_meeting else None,
        zoom_meeting_id=str(zoom_meeting["id"]) if zoom_meeting else None,
        request_id=event_id or uuid.uuid4().hex,
    )
    if event_id is not None:
        body["id"] = event_id

    def insert(calendar: GoogleCalendar) -> tuple[dict[str, Any], bool]:
        try:
            created = calendar.insert_event(
                payload.calendar_id, body, send_updates=payload.send_updates
            )
        except GoogleApiError as error:
            if error.status != 409 or event_id is None:
                raise
            # A concurrent request with the same key won the race: answer with its event.
            return calendar.get_event(payload.calendar_id, event_id), False
        return created, True

    try:
        event, created = await access.call(payload.integration_id, insert)
    except BaseException:
        if zoom_meeting is not None:  # no orphan Zoom meeting
            await _delete_zoom_meeting(settings, str(zoom_meeting["id"]))
        raise
    if not created:
        if zoom_meeting is not None:
            await _delete_zoom_meeting(settings, str(zoom_meeting["id"]))
        _require_same_event(payload, event)
    return ok(event_out(payload.calendar_id, event))


def _existing(calendar: GoogleCalendar, calendar_id: str, event_id: str) -> dict[str, Any] | None:
    try:
        return calendar.get_event(calendar_id, event_id)
    except GoogleApiError as error:
        if error.status in (404, 410):
            return None
        raise


def _require_same_event(payload: EventCreate, event: dict[str, Any]) -> None:
    """A reused idempotencyKey must ask for the same event (its summary and times)."""
    zone = payload.time_zone

    def asked(value: datetime | date) -> datetime:
        return instant(value, zone if isinstance(value, datetime) else None)

    require_same_request(
        {
            "summary": (payload.summary, event.get("summary")),
            "start": (asked(payload.start), _moment(event.get("start") or {})),
            "end": (asked(payload.end), _moment(event.get("end") or {})),
        }
    )


@router.get(
    "/events",
    summary="List a calendar's events (Google's pages)",
    description="One page of Google's events.list, `from`/`to` bounding the events' times. "
    "`nextCursor` is Google's page token: pass it back as `cursor` (with the same filters) "
    "for the next page; null on the last one.",
    response_model=Page[EventOut],
    responses=GOOGLE_ERRORS,
)
async def list_events(
    access: AccessDep,
    integration_id: IntegrationIdQuery,
    calendar_id: CalendarIdQuery = "primary",
    time_from: Annotated[datetime | None, Query(alias="from")] = None,
    time_to: Annotated[datetime | None, Query(alias="to")] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    page_token: Annotated[
        str | None, Query(alias="pageToken", max_length=1024, description="Same as cursor.")
    ] = None,
    # Google's maxResults goes to 2500; Relay's pages stop at MAX_LIMIT like every list.
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    if cursor and page_token and cursor != page_token:
        raise _invalid("pageToken", "pass either cursor or pageToken", "query")
    for name, value in (("from", time_from), ("to", time_to)):
        if value is not None and value.tzinfo is None:
            raise _invalid(name, "needs a UTC offset (2026-12-01T00:00:00Z)", "query")
    if time_from is not None and time_to is not None:
        try:
            empty = time_to <= time_from
        except OverflowError:
            empty = True
        if empty:
            raise _invalid("to", "must be after from", "query")

    def list_page(calendar: GoogleCalendar) -> dict[str, Any]:
        return calendar.list_events(
            calendar_id,
            time_min=time_from,
            time_max=time_to,
            page_token=cursor or page_token,
            max_results=limit,
        )

    listed = await access.call(integration_id, list_page)
    events = [event_out(calendar_id, item) for item in listed.get("items") or []]
    return page(events, listed.get("nextPageToken"))


@router.get(
    "/events/{event_id}",
    summary="One Google Calendar event",
    response_model=Envelope[EventOut],
    responses=GOOGLE_ERRORS,
)
async def get_event(
    event_id: EventIdPath,
    access: AccessDep,
    integration_id: IntegrationIdQuery,
    calendar_id: CalendarIdQuery = "primary",
) -> dict[str, Any]:
    event = await access.call(integration_id, lambda c: c.get_event(calendar_id, event_id))
    return ok(event_out(calendar_id, event))


@router.patch(
    "/events/{event_id}",
    summary="Update a Google Calendar event",
    description="Only the fields given change. An event with a Relay-made Zoom meeting moves "
    "the meeting too when start, end, summary or timeZone change.",
    response_model=Envelope[EventOut],
    responses=error_responses(400, 401, 404, 409, 422, 429, 502, 503),
)
async def update_event(
    event_id: EventIdPath,
    payload: EventUpdate,
    settings: SettingsDep,
    access: AccessDep,
) -> dict[str, Any]:
    given = payload.model_fields_set
    if payload.time_zone and (payload.start is None or payload.end is None):
        raise _invalid("timeZone", "is changed together with start and end")
    if payload.conference == "zoom":
        raise _invalid("conference", '"zoom" is chosen when the event is created')
    body = event_body(
        summary=payload.summary,
        description=payload.description,
        location=payload.location,
        start=payload.start,
        end=payload.end,
        time_zone=payload.time_zone,
        attendees=payload.attendees,
        reminders=[r.model_dump() for r in payload.reminders]
        if payload.reminders is not None
        else None,
        recurrence=payload.recurrence,
        conference=payload.conference,
        request_id=uuid.uuid4().hex,
    )
    if not body:
        raise _invalid("body", "give at least one field to change")

    def patch(calendar: GoogleCalendar) -> dict[str, Any]:
        if ("start" in body) != ("end" in body):
            # One end moves: Google would compare it with the kept one and answer "The
            # specified time range is empty."; say which field is wrong instead.
            _check_against_kept(calendar.get_event(payload.calendar_id, event_id), body)
        return calendar.patch_event(
            payload.calendar_id, event_id, body, send_updates=payload.send_updates
        )

    event = await access.call(payload.integration_id, patch)
    zoom_id, _ = zoom_meeting_of(event)
    moved = given & {"start", "end", "summary", "time_zone"}
    if zoom_id and moved:
        await _move_zoom_meeting(settings, zoom_id, event, payload)
    return ok(event_out(payload.calendar_id, event))


def _moment(when: dict[str, Any]) -> datetime | None:
    if when.get("dateTime"):
        moment = datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00"))
        return instant(moment, when.get("timeZone"))
    if when.get("date"):
        return instant(date.fromisoformat(str(when["date"])), None)
    return None


def _check_against_kept(current: dict[str, Any], body: dict[str, Any]) -> None:
    """A new start before the kept end, or a new end after the kept start (422 otherwise)."""
    start = _moment(body.get("start") or current.get("start") or {})
    end = _moment(body.get("end") or current.get("end") or {})
    if start is not None and end is not None and end <= start:
        if "start" in body:
            raise _invalid("start", "must be before the event's end")
        raise _invalid("end", "must be after the event's start")


async def _move_zoom_meeting(
    settings: Settings, meeting_id: str, event: dict[str, Any], payload: EventUpdate
) -> None:
    """The Zoom meeting follows the event's new time and title (from the patched event)."""
    start = (event.get("start") or {}).get("dateTime")
    end = (event.get("end") or {}).get("dateTime")
    if not start or not end:
        return
    begins, ends = datetime.fromisoformat(start), datetime.fromisoformat(end)
    zone = (event.get("start") or {}).get("timeZone")
    if begins.tzinfo is None:
        begins, ends = instant(begins, zone), instant(ends, zone)
    body = meeting_body(
        topic=payload.summary,
        start_time=begins,
        duration=max(1, math.ceil((ends - begins).total_seconds() / 60)),
        timezone=zone,
    )
    zoom = _zoom_client(settings)
    try:
        await zoom.update_meeting(meeting_id, body)
    except ZoomApiError as exc:
        raise _zoom_error(exc) from None
    finally:
        await zoom.aclose()


@router.delete(
    "/events/{event_id}",
    summary="Delete a Google Calendar event",
    description="`deleted: false` when Google had deleted it already. A Relay-made Zoom "
    "meeting of the event is deleted too.",
    response_model=Envelope[EventDeleted],
    responses=GOOGLE_ERRORS,
)
async def delete_event(
    event_id: EventIdPath,
    settings: SettingsDep,
    access: AccessDep,
    integration_id: IntegrationIdQuery,
    calendar_id: CalendarIdQuery = "primary",
    send_updates: Annotated[
        str | None, Query(alias="sendUpdates", pattern="^(all|externalOnly|none)$")
    ] = None,
) -> dict[str, Any]:
    # Only a Relay with Zoom can have made a Zoom meeting for the event: look for it then.
    with_zoom = ZoomClient.from_settings(settings) is not None

    def remove(calendar: GoogleCalendar) -> tuple[bool, str | None]:
        zoom_id = None
        if with_zoom:
            try:
                zoom_id, _ = zoom_meeting_of(calendar.get_event(calendar_id, event_id))
            except GoogleApiError as error:
                if error.status not in (404, 410):  # gone already: the delete says so
                    raise
        deleted = calendar.delete_event(calendar_id, event_id, send_updates=send_updates)
        return deleted, zoom_id

    deleted, zoom_id = await access.call(integration_id, remove)
    if deleted and zoom_id:
        await _delete_zoom_meeting(settings, zoom_id)
    return ok(EventDeleted(id=event_id, calendar_id=calendar_id, deleted=deleted))


@router.post(
    "/calendars/{calendar_id}/share",
    status_code=201,
    summary="Share a calendar (ACL insert)",
    description="Gives the user `email` the `role` on the calendar.",
    response_model=Envelope[CalendarShareOut],
    responses=GOOGLE_ERRORS,
)
async def share_calendar(
    calendar_id: CalendarIdPath, payload: CalendarShare, access: AccessDep
) -> dict[str, Any]:
    rule = await access.call(
        payload.integration_id, lambda c: c.share(calendar_id, payload.email, payload.role)
    )
    scope = rule.get("scope") or {}
    return ok(
        CalendarShareOut(
            id=rule.get("id", ""),
            calendar_id=calendar_id,
            role=rule.get("role", payload.role),
            email=scope.get("value", payload.email),
        )
    )
