"""Calendar: each scheduled meeting Relay books, its read model.

`meetings` maps Relay's meeting id to Zoom's meeting id, so a Zoom webhook that names only
Zoom's meeting reaches the right workflow; the meeting's workflow (the single writer) keeps
the rest for the routes. The host's start URL and the meeting password are sealed with
the keyring (relay/crypto.py) like tokens: they never enter workflow history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, String, Text
from sqlmodel import Field, SQLModel

from relay.calendar.contracts import MeetingStatus, PartStatus
from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime


class Meeting(SQLModel, table=True):
    """A scheduled meeting: Zoom meeting, calendar event, reminders, recordings."""

    __tablename__ = "meetings"

    id: uuid.UUID = Field(primary_key=True)
    user_id: str | None = Field(default=None, max_length=255, index=True)
    status: MeetingStatus = Field(default=MeetingStatus.SCHEDULING, sa_type=String(16), index=True)
    topic: str = Field(max_length=200)
    start_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    duration: int
    timezone: str | None = Field(default=None, max_length=64)
    agenda: str | None = Field(default=None, max_length=2000)
    recurrence: str | None = Field(default=None, max_length=500)
    settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    attendees: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    zoom_meeting_id: str | None = Field(default=None, max_length=32, unique=True, index=True)
    zoom_status: PartStatus = Field(default=PartStatus.PENDING, sa_type=String(16))
    join_url: str | None = Field(default=None, max_length=2000)
    start_url_sealed: str | None = Field(default=None, sa_column=Column(Text))
    password_sealed: str | None = Field(default=None, max_length=512)
    integration_id: str | None = Field(default=None, max_length=64)
    # The user's Zoom connection the meeting was booked with (None: the server-to-server app).
    zoom_integration_id: str | None = Field(default=None, max_length=64)
    calendar_id: str = Field(default="primary", max_length=255)
    calendar_event_id: str | None = Field(default=None, max_length=1024)
    calendar_status: PartStatus = Field(default=PartStatus.NONE, sa_type=String(16))
    reminders: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    recordings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    failure_code: str | None = Field(default=None, max_length=64)
    failure_reason: str | None = Field(default=None, max_length=1000)
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    request_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
