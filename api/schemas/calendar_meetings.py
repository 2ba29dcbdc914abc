"""Scheduled meetings on the wire (camelCase): a create, a reschedule, a meeting with its
parts (Zoom, the calendar event, reminders, the recording), and its recording."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from api.envelope import ApiModel
from relay.calendar.contracts import MeetingStatus
from relay.calendar.validation import (
    AttendeeEmail,
    RecurrenceLine,
    TimeZone,
    check_has_zone,
    instant,
)
from relay.calendar.zoom import SETTINGS, MeetingFieldError, zoom_recurrence
from relay.db import as_utc

MAX_TOPIC = 200
MAX_AGENDA = 2000
# Zoom's longest scheduled meeting is 24 hours.
MAX_DURATION_MINUTES = 24 * 60
MAX_ATTENDEES = 100
MAX_REMINDERS = 5
MAX_REMINDER_MINUTES = 40_320  # four weeks, as Google's reminders
_ID = r"^[A-Za-z0-9._:@-]+$"

SettingValue = StrictBool | StrictInt | Annotated[str, Field(max_length=64)]


def _meeting_settings(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(SETTINGS))
    if unknown:
        known = ", ".join(sorted(SETTINGS))
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {known}")
    return value


def _zoom_rrule(value: str | None) -> str | None:
    """Zoom repeats daily, weekly (BYDAY) or monthly (BYMONTHDAY), with COUNT or UNTIL."""
    if value is None:
        return None
    try:
        zoom_recurrence(value)
    except MeetingFieldError as exc:
        raise ValueError(exc.message) from None
    return value


class ReminderIn(ApiModel):
    minutes_before: int = Field(ge=0, le=MAX_REMINDER_MINUTES)
    channel: Literal["email", "push"] = "email"


class MeetingCreate(ApiModel):
    topic: str = Field(min_length=1, max_length=MAX_TOPIC)
    start_time: datetime = Field(
        description="RFC 3339 with an offset, or wall-clock time in `timezone`."
    )
    duration: int = Field(ge=1, le=MAX_DURATION_MINUTES, description="Minutes.")
    timezone: TimeZone | None = None
    agenda: str | None = Field(default=None, max_length=MAX_AGENDA)
    recurrence: RecurrenceLine | None = Field(
        default=None,
        description="One RRULE (`RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6`): DAILY, WEEKLY or "
        "MONTHLY with COUNT or UNTIL, as Zoom repeats meetings.",
    )
    settings: dict[str, SettingValue] | None = Field(
        default=None, description="hostVideo, participantVideo, waitingRoom, joinBeforeHost, …"
    )
    attendees: list[AttendeeEmail] = Field(default_factory=list, max_length=MAX_ATTENDEES)
    integration_id: uuid.UUID | None = Field(
        default=None, description="A google_calendar connection: the event is booked with it."
    )
    calendar_id: str = Field(default="primary", min_length=1, max_length=255)
    reminders: list[ReminderIn] = Field(default_factory=list, max_length=MAX_REMINDERS)
    user_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ID)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    zoom_integration_id: uuid.UUID | None = Field(
        default=None,
        description="A `zoom` connection: the meeting is booked, moved, deleted and its "
        "recordings read with that user's token instead of the server-to-server app.",
    )

    _settings = field_validator("settings")(_meeting_settings)
    _recurrence = field_validator("recurrence")(_zoom_rrule)

    def start_utc(self) -> str:
        """The start as a UTC instant (a naive time is wall-clock time in `timezone`)."""
        check_has_zone(self.start_time, self.timezone)
        return instant(self.start_time, self.timezone).astimezone(UTC).isoformat()


class MeetingPatch(ApiModel):
    start_time: datetime | None = None
    duration: int | None = Field(default=None, ge=1, le=MAX_DURATION_MINUTES)
    timezone: TimeZone | None = None
    topic: str | None = Field(default=None, min_length=1, max_length=MAX_TOPIC)
    agenda: str | None = Field(default=None, max_length=MAX_AGENDA)


class ZoomPart(ApiModel):
    meeting_id: str | None = None
    status: str
    join_url: str | None = None


class CalendarEventPart(ApiModel):
    integration_id: str | None = None
    calendar_id: str
    event_id: str | None = None
    status: str


class ReminderOut(ApiModel):
    minutes_before: int
    channel: str
    due_at: str | None = None
    status: str
    notification_ids: list[str] = Field(default_factory=list)


class RecordingFile(ApiModel):
    id: str | None = None
    file_type: str | None = None
    recording_type: str | None = None
    file_size: int | None = None
    play_url: str | None = None
    download_url: str | None = None
    recording_start: str | None = None
    recording_end: str | None = None
    status: str | None = None


class Recording(ApiModel):
    meeting_id: str
    zoom_meeting_id: str | None = None
    available: bool
    share_url: str | None = None
    start_time: str | None = None
    total_size: int | None = None
    files: list[RecordingFile] = Field(default_factory=list)


class MeetingFailure(ApiModel):
    code: str | None = None
    message: str | None = None


class Meeting(ApiModel):
    id: str
    status: MeetingStatus
    topic: str
    start_time: datetime
    duration: int
    timezone: str | None = None
    agenda: str | None = None
    recurrence: str | None = None
    settings: dict[str, Any] | None = None
    user_id: str | None = None
    attendees: list[str] = Field(default_factory=list)
    zoom_meeting_id: str | None = None
    join_url: str | None = None
    start_url: str | None = Field(
        default=None, description="The host's link: it starts the meeting as the host."
    )
    password: str | None = None
    zoom: ZoomPart
    calendar_event: CalendarEventPart | None = None
    reminders: list[ReminderOut] = Field(default_factory=list)
    recording: Recording | None = None
    failure: MeetingFailure | None = None
    created_at: datetime
    updated_at: datetime


def recording_of(
    meeting_id: str, zoom_meeting_id: str | None, stored: dict[str, Any] | None
) -> Recording:
    if stored is None:
        return Recording(meeting_id=meeting_id, zoom_meeting_id=zoom_meeting_id, available=False)
    return Recording(
        meeting_id=meeting_id,
        zoom_meeting_id=zoom_meeting_id,
        available=True,
        share_url=stored.get("shareUrl"),
        start_time=stored.get("startTime"),
        total_size=stored.get("totalSize"),
        files=[RecordingFile.model_validate(item) for item in stored.get("files") or []],
    )


def meeting_of(row: Any, *, start_url: str | None = None, password: str | None = None) -> Meeting:
    """A meeting's row as the API shows it; the host's secrets only when given."""
    calendar = None
    if row.integration_id:
        calendar = CalendarEventPart(
            integration_id=row.integration_id,
            calendar_id=row.calendar_id,
            event_id=row.calendar_event_id,
            status=row.calendar_status,
        )
    failure = (
        MeetingFailure(code=row.failure_code, message=row.failure_reason)
        if row.failure_code or row.failure_reason
        else None
    )
    return Meeting(
        id=str(row.id),
        status=row.status,
        topic=row.topic,
        start_time=as_utc(row.start_time),  # type: ignore[arg-type]
        duration=row.duration,
        timezone=row.timezone,
        agenda=row.agenda,
        recurrence=row.recurrence,
        settings=row.settings,
        user_id=row.user_id,
        attendees=list(row.attendees or []),
        zoom_meeting_id=row.zoom_meeting_id,
        join_url=row.join_url,
        start_url=start_url,
        password=password,
        zoom=ZoomPart(
            meeting_id=row.zoom_meeting_id, status=row.zoom_status, join_url=row.join_url
        ),
        calendar_event=calendar,
        reminders=[ReminderOut.model_validate(item) for item in row.reminders or []],
        recording=(
            recording_of(str(row.id), row.zoom_meeting_id, row.recordings)
            if row.recordings
            else None
        ),
        failure=failure,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        updated_at=as_utc(row.updated_at),  # type: ignore[arg-type]
    )
