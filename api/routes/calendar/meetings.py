"""Scheduled meetings: /v1/meetings… Each meeting is a `meeting-{id}` workflow, the single
writer of its row; the routes check the request, hand it to the workflow (an update) and
answer from the row it wrote. The host's start URL and the password come from the row,
sealed there: they never pass through Temporal.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.deps import (
    CatalogDep,
    EngineDep,
    KeyringDep,
    SettingsDep,
    TemporalDep,
    get_temporal,
    require_api_key,
)
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import uuid_for
from api.pagination import newest_first_page, page
from api.schemas.calendar_meetings import (
    Meeting,
    MeetingCreate,
    MeetingPatch,
    Recording,
    meeting_of,
    recording_of,
)
from relay.calendar import repository
from relay.calendar.access import ZOOM_PROVIDER, ZoomAccess, require_connection, require_google
from relay.calendar.contracts import (
    CancelMeeting,
    CreateMeeting,
    MeetingStatus,
    ReminderSpec,
    RescheduleMeeting,
)
from relay.calendar.validation import check_has_zone, instant
from relay.calendar.zoom import ZoomApiError, from_settings, recording_links
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import Integration
from relay.oauth import repository as oauth_repository
from relay.oauth.contracts import RefreshRequest
from relay.settings import Settings
from workflows.clients import oauth as oauth_client
from workflows.clients.calendar import (
    cancel_meeting,
    create_meeting,
    reschedule_meeting,
)

router = APIRouter(
    prefix="/v1/meetings", tags=["calendar"], dependencies=[Depends(require_api_key)]
)

# Relay's meeting ids are UUIDs; one derived from the client's idempotencyKey (v5), so a
# retried request lands on the same workflow and so the same Zoom meeting.
_ID_NAMESPACE = uuid.UUID("0b7f3c52-8e1d-4a6b-9f2e-5c4d3b2a1e0f")


def meeting_id_for(idempotency_key: str | None) -> str:
    return uuid_for(_ID_NAMESPACE, idempotency_key)


def _invalid(field: str, message: str) -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "the request is invalid",
        [{"field": field, "in": "body", "message": message}],
    )


def _require_zoom(settings: Settings) -> None:
    if not (settings.zoom_account_id and settings.zoom_client_id and settings.zoom_client_secret):
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "Zoom is not configured (ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET); "
            "or name a user's zoom connection in zoomIntegrationId",
        )


async def _answer(engine: Any, keyring: Any, meeting_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, meeting_id)
    start_url, password = repository.host_secrets(keyring, row)
    return ok(meeting_of(row, start_url=start_url, password=password))


def _failed(row: Any) -> RelayError:
    """A booking that failed answers a retry as it answered the first request."""
    try:
        code = ErrorCode(row.failure_code or ErrorCode.PROVIDER_ERROR.value)
    except ValueError:
        code = ErrorCode.PROVIDER_ERROR
    return RelayError(
        code,
        row.failure_reason or "the meeting could not be booked",
        {"meetingId": str(row.id), "status": row.status},
    )


def _request(body: MeetingCreate) -> CreateMeeting:
    try:
        start = body.start_utc()
    except ValueError as exc:
        raise _invalid("startTime", str(exc)) from None
    if any(reminder.channel == "push" for reminder in body.reminders) and not body.user_id:
        raise _invalid("reminders", "a push reminder needs userId (its devices)")
    return CreateMeeting(
        topic=body.topic,
        start_time=start,
        duration=body.duration,
        timezone=body.timezone,
        agenda=body.agenda,
        recurrence=body.recurrence,
        settings=dict(body.settings or {}),
        attendees=list(dict.fromkeys(body.attendees)),
        integration_id=str(body.integration_id) if body.integration_id else None,
        calendar_id=body.calendar_id,
        reminders=[ReminderSpec(r.minutes_before, r.channel) for r in body.reminders],
        user_id=body.user_id,
        idempotency_key=body.idempotency_key,
        zoom_integration_id=str(body.zoom_integration_id) if body.zoom_integration_id else None,
    )


@router.post(
    "",
    status_code=201,
    summary="Book a meeting: Zoom, then (with integrationId) the attendees' calendar event",
    description="The `meeting-{id}` workflow books the Zoom meeting, then the Google Calendar "
    "event carrying its join URL; if the calendar step fails for good the Zoom meeting is "
    "deleted and the meeting is FAILED (the error names the provider's message). "
    "`reminders` are sent through notifications before the start (email: the attendees; "
    "push: userId's devices). The same `idempotencyKey` lands on the same meeting. "
    "`startUrl` starts the meeting as its host: keep it to the host. With `zoomIntegrationId` "
    "(a `zoom` connection) Zoom is called with that user's token, otherwise with the "
    "server-to-server app (400 PROVIDER_NOT_CONFIGURED when it is not set up).",
    response_model=Envelope[Meeting],
    responses=error_responses(400, 401, 404, 409, 422, 429, 502, 503),
)
async def create(
    body: MeetingCreate,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> dict[str, Any]:
    request = _request(body)
    if body.zoom_integration_id is not None:
        zoom_connection = await asyncio.to_thread(
            oauth_repository.get_integration, engine, body.zoom_integration_id
        )
        require_connection(zoom_connection, body.zoom_integration_id, ZOOM_PROVIDER)
    else:
        _require_zoom(settings)
    if body.integration_id is not None:
        integration = await asyncio.to_thread(
            oauth_repository.get_integration, engine, body.integration_id
        )
        require_google(integration, body.integration_id)
    meeting_id = meeting_id_for(body.idempotency_key)
    if body.idempotency_key:
        # A meeting that exists is answered as it is: its run may have ended, and a new
        # run must never book a second Zoom meeting.
        row = await asyncio.to_thread(repository.find, engine, meeting_id)
        if row is not None:
            if row.request_hash != repository.request_hash(request):
                raise RelayError(
                    ErrorCode.CONFLICT,
                    "this idempotencyKey was used for a different request",
                    [{"field": "idempotencyKey", "in": "body", "message": "already used"}],
                )
            if row.status == MeetingStatus.FAILED:
                raise _failed(row)
            if row.status != MeetingStatus.SCHEDULING:
                return await _answer(engine, keyring, meeting_id)
    await create_meeting(client, settings, meeting_id, request)
    return await _answer(engine, keyring, meeting_id)


@router.get(
    "",
    summary="List meetings",
    description="Newest first; filter by `userId` and `status`. No host links in lists.",
    response_model=Page[Meeting],
    responses=error_responses(401, 422),
)
async def list_meetings(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    status: Annotated[MeetingStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    query = repository.meetings_query(user_id=user_id, status=status.value if status else None)
    rows, next_cursor = await newest_first_page(engine, repository.M, query, cursor, limit)
    return page([meeting_of(row) for row in rows], next_cursor)


@router.get(
    "/{meeting_id}",
    summary="One meeting and its parts: Zoom, the calendar event, reminders, the recording",
    response_model=Envelope[Meeting],
    responses=error_responses(401, 404),
)
async def get_meeting(meeting_id: str, engine: EngineDep, keyring: KeyringDep) -> dict[str, Any]:
    return await _answer(engine, keyring, meeting_id)


@router.patch(
    "/{meeting_id}",
    summary="Reschedule: Zoom, the calendar event and the reminders move together",
    description="Only a SCHEDULED meeting (409 otherwise).",
    response_model=Envelope[Meeting],
    responses=error_responses(401, 404, 409, 422, 429, 502, 503),
)
async def reschedule(
    meeting_id: str,
    body: MeetingPatch,
    engine: EngineDep,
    keyring: KeyringDep,
    client: TemporalDep,
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, meeting_id)
    meeting_id = str(row.id)  # the canonical spelling names the workflow
    if not body.model_fields_set:
        raise _invalid("body", "give at least one of startTime, duration, timezone, topic, agenda")
    start: str | None = None
    if body.start_time is not None:
        zone = body.timezone or row.timezone
        try:
            check_has_zone(body.start_time, zone)
        except ValueError as exc:
            raise _invalid("startTime", str(exc)) from None
        start = instant(body.start_time, zone).astimezone(UTC).isoformat()
    change = RescheduleMeeting(
        start_time=start,
        duration=body.duration,
        timezone=body.timezone,
        topic=body.topic,
        agenda=body.agenda,
    )
    await reschedule_meeting(client, meeting_id, change)
    return await _answer(engine, keyring, meeting_id)


@router.delete(
    "/{meeting_id}",
    summary="Cancel: the Zoom meeting and the calendar event are deleted, reminders canceled",
    response_model=Envelope[Meeting],
    responses=error_responses(401, 404, 409, 502, 503),
)
async def cancel(
    meeting_id: str, engine: EngineDep, keyring: KeyringDep, client: TemporalDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, meeting_id)
    meeting_id = str(row.id)  # the canonical spelling names the workflow
    await cancel_meeting(client, meeting_id, CancelMeeting(reason="requested"))
    return await _answer(engine, keyring, meeting_id)


@router.get(
    "/{meeting_id}/recordings",
    summary="The meeting's cloud recording (`available: false` until Zoom has one)",
    response_model=Envelope[Recording],
    responses=error_responses(400, 401, 404, 429, 502),
)
async def recordings(
    meeting_id: str,
    request: Request,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    catalog: CatalogDep,
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, meeting_id)
    if row.recordings is not None or row.zoom_meeting_id is None:
        return ok(recording_of(str(row.id), row.zoom_meeting_id, row.recordings))
    zoom_meeting_id = str(row.zoom_meeting_id)
    zoom_integration_id: str | None = row.zoom_integration_id
    try:
        if zoom_integration_id is not None:
            # A refresh goes through the connection's workflow.
            client = await get_temporal(request)

            async def refresh(integration: Integration, *, force: bool) -> object:
                return await oauth_client.refresh(
                    client, settings, integration, RefreshRequest(force=force, reason="calendar")
                )

            access = ZoomAccess(engine, keyring, catalog, refresh, settings.zoom_api_base)
            found = await access.call(
                uuid.UUID(zoom_integration_id), lambda zoom: zoom.recordings(zoom_meeting_id)
            )
        else:
            _require_zoom(settings)
            zoom = from_settings(settings)
            assert zoom is not None
            try:
                found = await zoom.recordings(zoom_meeting_id)
            finally:
                await zoom.aclose()
    except ZoomApiError as exc:
        raise _zoom_error(exc) from None
    if found is None:
        return ok(recording_of(str(row.id), row.zoom_meeting_id, None))
    return ok(recording_of(str(row.id), row.zoom_meeting_id, recording_links(found)))


def _zoom_error(exc: ZoomApiError) -> RelayError:
    details: dict[str, Any] = {"provider": "zoom", "status": exc.status, "zoomCode": exc.code}
    if exc.status == 429:
        retry = exc.retry_after.total_seconds() if exc.retry_after else 1.0
        return RelayError(
            ErrorCode.RATE_LIMITED, f"Zoom: {exc.message}", details | {"retryAfter": retry}
        )
    if exc.status == 404:
        return RelayError(ErrorCode.NOT_FOUND, f"Zoom: {exc.message}", details)
    return RelayError(ErrorCode.PROVIDER_ERROR, f"Zoom: {exc.message}", details)
