"""Google Calendar events and sharing on the wire (camelCase): create, update, the event as
Relay returns it, a deletion, an ACL rule."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from api.envelope import ApiModel
from relay.calendar.validation import (
    MAX_REMINDERS,
    AttendeeEmail,
    RecurrenceLine,
    ReminderMethod,
    ReminderMinutes,
    TimeZone,
    check_end_after_start,
    check_has_zone,
)

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_ATTENDEES = 300
MAX_RECURRENCE = 10


def _day_or_moment(value: Any) -> Any:
    """`2026-12-01` is an all-day date, anything longer a date-time (pydantic would read
    the short form as midnight)."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        return date.fromisoformat(value)
    return value


When = Annotated[
    datetime | date,
    BeforeValidator(_day_or_moment),
    Field(
        description="An RFC 3339 date-time (`2026-12-01T10:00:00Z`, or without offset in "
        "`timeZone`), or a date (`2026-12-01`) for an all-day event.",
        examples=["2026-12-01T10:00:00+01:00"],
    ),
]
CalendarId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._@#+-]+$",
        description="`primary` (the connected user's calendar) or a calendar id.",
    ),
]
Conference = Literal["zoom", "meet"]
SendUpdates = Literal["all", "externalOnly", "none"]
AclRole = Literal["freeBusyReader", "reader", "writer", "owner"]


class EventReminder(ApiModel):
    method: ReminderMethod
    minutes: ReminderMinutes = Field(description="Before the start, 0..40320 (four weeks).")


class _EventFields(ApiModel):
    """Fields shared by create and update; declaration order matters to the validators
    (a field's validator sees only the fields declared before it)."""

    summary: str | None = Field(default=None, min_length=1, max_length=1024)
    description: str | None = Field(default=None, max_length=8192)
    location: str | None = Field(default=None, max_length=1024)
    time_zone: TimeZone | None = Field(
        default=None,
        description="IANA name; the zone of start and end (required for a date-time without "
        "offset and for a recurring event).",
    )
    start: When | None = None
    end: When | None = None
    attendees: list[AttendeeEmail] | None = Field(default=None, max_length=MAX_ATTENDEES)
    reminders: list[EventReminder] | None = Field(
        default=None,
        max_length=MAX_REMINDERS,
        description="Replace the calendar's default reminders; [] for none.",
    )
    recurrence: list[RecurrenceLine] | None = Field(
        default=None,
        max_length=MAX_RECURRENCE,
        description="RRULE lines (`FREQ=WEEKLY;BYDAY=MO;COUNT=10`, `RRULE:` optional), "
        "EXRULE, RDATE or EXDATE lines.",
    )
    conference: Conference | None = Field(
        default=None,
        description='"meet": Google creates a Meet link; "zoom": Relay creates a Zoom meeting '
        "(server-to-server Zoom) and puts its join URL in the location and description.",
    )
    send_updates: SendUpdates | None = Field(
        default=None, description="Who Google e-mails about the change (Google's default: none)."
    )

    @field_validator("start")
    @classmethod
    def _start_zone(cls, value: datetime | date | None, info: ValidationInfo) -> Any:
        if value is not None:
            check_has_zone(value, info.data.get("time_zone"))
        return value

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: datetime | date | None, info: ValidationInfo) -> Any:
        if value is None:
            return value
        time_zone = info.data.get("time_zone")
        check_has_zone(value, time_zone)
        start = info.data.get("start")
        if start is not None:
            check_end_after_start(start, value, time_zone)
        return value

    @field_validator("recurrence")
    @classmethod
    def _recurrence_zone(cls, value: list[str] | None, info: ValidationInfo) -> Any:
        if value and not info.data.get("time_zone"):
            # Google: "Missing time zone definition for start time." on a recurring event.
            raise ValueError("a recurring event needs timeZone")
        return value


class EventCreate(_EventFields):
    integration_id: uuid.UUID = Field(description="A CONNECTED google_calendar integration.")
    calendar_id: CalendarId = "primary"
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A retry with the same key returns the event created first (the "
        "event's Google id is derived from it) instead of creating another.",
    )
    summary: str = Field(min_length=1, max_length=1024)  # type: ignore[assignment]
    start: When  # type: ignore[assignment]
    end: When  # type: ignore[assignment]


class EventUpdate(_EventFields):
    """Only the fields given change. start and end are checked against each other when both
    are given; `timeZone` alone needs start and end."""

    integration_id: uuid.UUID
    calendar_id: CalendarId = "primary"


class EventTime(ApiModel):
    date_time: str | None = None
    date: str | None = None
    time_zone: str | None = None


class EventAttendee(ApiModel):
    email: str
    response_status: str | None = None
    organizer: bool | None = None


class EventConference(ApiModel):
    type: Literal["meet", "zoom"]
    join_url: str


class EventOut(ApiModel):
    id: str
    calendar_id: str
    status: str | None = None
    html_link: str | None = None
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    start: EventTime | None = None
    end: EventTime | None = None
    attendees: list[EventAttendee] = []
    reminders: list[EventReminder] | None = Field(
        default=None, description="null: the calendar's default reminders."
    )
    recurrence: list[str] | None = None
    conference: EventConference | None = None
    i_cal_uid: str | None = Field(default=None, alias="iCalUID")
    created: str | None = None
    updated: str | None = None


class EventDeleted(ApiModel):
    id: str
    calendar_id: str
    deleted: bool = Field(description="false when Google had it deleted already.")


class CalendarShare(ApiModel):
    integration_id: uuid.UUID
    email: AttendeeEmail
    role: AclRole = "reader"


class CalendarShareOut(ApiModel):
    id: str
    calendar_id: str
    role: str
    email: str
