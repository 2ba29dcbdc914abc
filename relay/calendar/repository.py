"""Meetings' database reads and writes (synchronous; async callers use `asyncio.to_thread`).

`meetings` is the meetings' read model: only the meeting workflow's activities write it
(the workflow is the single writer), the routes and the Zoom webhook route read it. The
host's start URL and the meeting password are sealed with the keyring, bound to the
meeting's id, so a sealed value copied to another row does not open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from relay.calendar.contracts import (
    CreateMeeting,
    MeetingState,
    MeetingStatus,
    PartStatus,
    ReminderState,
)
from relay.crypto import Keyring
from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.calendar import Meeting

M = Meeting.__table__  # type: ignore[attr-defined]


def _context(meeting_id: str, what: str) -> str:
    return f"meeting:{meeting_id}:{what}"


def request_hash(request: CreateMeeting) -> str:
    """What a create asks for (not its id): one idempotencyKey, one request."""
    asked = dataclasses.asdict(request)
    asked.pop("idempotency_key", None)
    if asked.get("zoom_integration_id") is None:
        # Absent from requests hashed before the field existed: their hashes still match.
        asked.pop("zoom_integration_id", None)
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key(meeting_id: str) -> uuid.UUID | None:
    """A meeting id from a path or a workflow: not one of Relay's ids is simply not found."""
    try:
        return uuid.UUID(meeting_id)
    except ValueError:
        return None


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def insert_meeting(engine: Engine, meeting_id: str, request: CreateMeeting) -> bool:
    """The meeting's row, SCHEDULING; False when it exists already (a retried activity)."""
    now = utcnow()
    values = {
        "id": uuid.UUID(meeting_id),
        "user_id": request.user_id,
        "status": MeetingStatus.SCHEDULING.value,
        "topic": request.topic,
        "start_time": _parse_time(request.start_time),
        "duration": request.duration,
        "timezone": request.timezone,
        "agenda": request.agenda,
        "recurrence": request.recurrence,
        "settings": request.settings or None,
        "attendees": list(request.attendees),
        "zoom_status": PartStatus.PENDING.value,
        "integration_id": request.integration_id,
        "zoom_integration_id": request.zoom_integration_id,
        "calendar_id": request.calendar_id,
        "calendar_status": (
            PartStatus.PENDING.value if request.integration_id else PartStatus.NONE.value
        ),
        "reminders": [],
        "idempotency_key": request.idempotency_key,
        "request_hash": request_hash(request),
        "created_at": now,
        "updated_at": now,
    }
    try:
        with engine.begin() as connection:
            connection.execute(insert(M).values(**values))
    except IntegrityError:
        if find(engine, meeting_id) is None:
            raise
        return False
    return True


def save_booking(
    engine: Engine,
    keyring: Keyring,
    meeting_id: str,
    *,
    zoom_meeting_id: str,
    join_url: str,
    start_url: str | None,
    password: str | None,
) -> None:
    """Zoom's meeting: its id and join URL in the clear, the host's start URL and the
    password sealed."""
    values: dict[str, Any] = {
        "zoom_meeting_id": zoom_meeting_id,
        "join_url": join_url,
        "zoom_status": PartStatus.CREATED.value,
        "updated_at": utcnow(),
    }
    if start_url is not None:
        values["start_url_sealed"] = keyring.seal(start_url, _context(meeting_id, "start_url"))
    if password is not None:
        values["password_sealed"] = keyring.seal(password, _context(meeting_id, "password"))
    with engine.begin() as connection:
        connection.execute(update(M).where(M.c.id == uuid.UUID(meeting_id)).values(**values))


def host_secrets(keyring: Keyring, row: Any) -> tuple[str | None, str | None]:
    """(start URL, password) of a meeting's row, opened."""
    start_url = (
        keyring.open(row.start_url_sealed, _context(str(row.id), "start_url"))
        if row.start_url_sealed
        else None
    )
    password = (
        keyring.open(row.password_sealed, _context(str(row.id), "password"))
        if row.password_sealed
        else None
    )
    return start_url, password


def save_state(engine: Engine, state: MeetingState) -> None:
    """The workflow's state written to the row (the row exists: insert_meeting ran first)."""
    values: dict[str, Any] = {
        "status": state.status,
        "topic": state.topic,
        "duration": state.duration,
        "timezone": state.timezone,
        "zoom_status": state.zoom_status,
        "calendar_event_id": state.calendar_event_id,
        "calendar_status": state.calendar_status,
        "reminders": [dataclasses.asdict(reminder) for reminder in state.reminders],
        "failure_code": state.failure_code,
        "failure_reason": (state.failure_reason or None) and state.failure_reason[:1000],
        "updated_at": utcnow(),
    }
    if state.start_time:
        values["start_time"] = _parse_time(state.start_time)
    if state.zoom_meeting_id is not None:
        values["zoom_meeting_id"] = state.zoom_meeting_id
        values["join_url"] = state.join_url
    with engine.begin() as connection:
        connection.execute(update(M).where(M.c.id == uuid.UUID(state.meeting_id)).values(**values))


def save_recordings(engine: Engine, meeting_id: str, recordings: dict[str, Any]) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(M)
            .where(M.c.id == uuid.UUID(meeting_id))
            .values(recordings=recordings, updated_at=utcnow())
        )


def state_of(row: Any) -> MeetingState:
    """A meeting's row as the workflow's state (a recovering run starts from it)."""
    start = as_utc(row.start_time)
    return MeetingState(
        meeting_id=str(row.id),
        status=row.status,
        topic=row.topic,
        start_time=start.isoformat() if start else "",
        duration=row.duration,
        timezone=row.timezone,
        user_id=row.user_id,
        attendees=list(row.attendees or []),
        zoom_meeting_id=row.zoom_meeting_id,
        join_url=row.join_url,
        zoom_status=row.zoom_status,
        integration_id=row.integration_id,
        calendar_id=row.calendar_id,
        calendar_event_id=row.calendar_event_id,
        calendar_status=row.calendar_status,
        reminders=[ReminderState(**reminder) for reminder in row.reminders or []],
        recording_published=row.recordings is not None,
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
        zoom_integration_id=row.zoom_integration_id,
    )


def find(engine: Engine, meeting_id: str) -> Row[Any] | None:
    key = _key(meeting_id)
    if key is None:
        return None
    with engine.connect() as connection:
        return connection.execute(select(M).where(M.c.id == key)).first()


def load(engine: Engine, meeting_id: str) -> Row[Any]:
    row = find(engine, meeting_id)
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no meeting with that id")
    return row


def meeting_id_for_zoom(engine: Engine, zoom_meeting_id: str) -> str | None:
    """Relay's id of the meeting booked as that Zoom meeting, or None (not one of Relay's)."""
    with engine.connect() as connection:
        found = connection.execute(
            select(M.c.id).where(M.c.zoom_meeting_id == str(zoom_meeting_id))
        ).scalar_one_or_none()
    return str(found) if found is not None else None


def meetings_query(*, user_id: str | None = None, status: str | None = None) -> Select[Any]:
    query = select(M)
    if user_id:
        query = query.where(M.c.user_id == user_id)
    if status:
        query = query.where(M.c.status == status)
    return query
