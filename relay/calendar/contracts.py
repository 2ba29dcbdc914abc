"""What crosses Temporal for scheduled meetings: the meeting workflow's input, state and
messages, its activities' inputs and results, the names the inbox forwards Zoom events by,
the status enums and the workflow-id function.

Standard library only. New fields get defaults so recorded histories still decode. The
host's start URL and the meeting password never cross Temporal: the booking activity seals
them into the database and the API reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PROVIDER = "zoom"
# The inbox forwards Zoom events by these names (signal-with-start, see
# relay.inbound.forward), so they are fixed here rather than taken from the class.
MEETING_WORKFLOW = "MeetingWorkflow"
ZOOM_EVENT_SIGNAL = "zoom_event"
# Zoom's events the meeting workflow applies.
MEETING_STARTED = "meeting.started"
MEETING_ENDED = "meeting.ended"
RECORDING_COMPLETED = "recording.completed"
ZOOM_EVENTS = frozenset({MEETING_STARTED, MEETING_ENDED, RECORDING_COMPLETED})
# The outgoing webhook event published when a meeting's cloud recording is ready.
RECORDING_READY_EVENT = "meeting.recording_ready"
MAX_SEEN_EVENTS = 200
# After meeting.ended the run waits this long for recording.completed, then ends; a
# recording that comes later starts a recovering run that publishes it.
DEFAULT_RECORDING_WAIT_SECONDS = 24 * 3600.0
# A meeting Zoom never reports as ended is closed this long after its scheduled end.
DEFAULT_END_GRACE_SECONDS = 2 * 86400.0
DEFAULT_CALENDAR_ID = "primary"


def meeting_workflow_id(meeting_id: str) -> str:
    return f"meeting-{meeting_id}"


class MeetingStatus(StrEnum):
    """SCHEDULING ──► SCHEDULED ──► STARTED ──► ENDED
    FAILED: booking failed (Zoom refused, or the calendar step failed and the Zoom meeting
    was deleted); CANCELED: DELETE /v1/meetings/{id}."""

    SCHEDULING = "SCHEDULING"
    SCHEDULED = "SCHEDULED"
    STARTED = "STARTED"
    ENDED = "ENDED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"


FINAL = frozenset({MeetingStatus.CANCELED, MeetingStatus.FAILED})
RESCHEDULABLE = frozenset({MeetingStatus.SCHEDULED})
CANCELABLE = frozenset({MeetingStatus.SCHEDULING, MeetingStatus.SCHEDULED, MeetingStatus.STARTED})


class PartStatus(StrEnum):
    """The state of one part of a meeting: the Zoom meeting or the calendar event."""

    NONE = "NONE"  # not asked for (no integrationId)
    PENDING = "PENDING"
    CREATED = "CREATED"
    DELETED = "DELETED"  # undone (saga) or canceled
    FAILED = "FAILED"


class ReminderStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"  # the notification was created
    SKIPPED = "SKIPPED"  # due before it was scheduled, or no one to send it to
    CANCELED = "CANCELED"


class ReminderChannel(StrEnum):
    EMAIL = "email"
    PUSH = "push"


@dataclass
class ReminderSpec:
    minutes_before: int
    channel: str = ReminderChannel.EMAIL.value


@dataclass
class ReminderState:
    minutes_before: int
    channel: str
    due_at: str  # ISO 8601 UTC, for the current start time
    status: str = ReminderStatus.PENDING.value
    notification_ids: list[str] = field(default_factory=list)


@dataclass
class MeetingInput:
    """The workflow's start argument. `recover`: started by a Zoom event when no run was
    open (the inbox's signal-with-start): the run loads the meeting from the database,
    applies the event and ends."""

    meeting_id: str
    user_id: str | None = None
    recover: bool = False
    recording_wait_seconds: float = DEFAULT_RECORDING_WAIT_SECONDS
    end_grace_seconds: float = DEFAULT_END_GRACE_SECONDS


@dataclass
class CreateMeeting:
    """POST /v1/meetings, validated; times are ISO 8601 with an offset."""

    topic: str
    start_time: str
    duration: int
    timezone: str | None = None
    agenda: str | None = None
    recurrence: str | None = None  # one RRULE
    settings: dict[str, Any] = field(default_factory=dict)
    attendees: list[str] = field(default_factory=list)
    integration_id: str | None = None
    calendar_id: str = DEFAULT_CALENDAR_ID
    reminders: list[ReminderSpec] = field(default_factory=list)
    user_id: str | None = None
    idempotency_key: str | None = None
    # A `zoom` catalog connection: Zoom is called with its token, not the server-to-server
    # app's. Only the id crosses Temporal, never a token.
    zoom_integration_id: str | None = None


@dataclass
class RescheduleMeeting:
    """PATCH /v1/meetings/{id}: only what changes."""

    start_time: str | None = None
    duration: int | None = None
    timezone: str | None = None
    topic: str | None = None
    agenda: str | None = None


@dataclass
class CancelMeeting:
    reason: str | None = None


@dataclass
class MeetingState:
    """The workflow's view, and what GET /v1/meetings/{id} shows with the database's."""

    meeting_id: str
    status: str = MeetingStatus.SCHEDULING.value
    topic: str = ""
    start_time: str = ""
    duration: int = 0
    timezone: str | None = None
    user_id: str | None = None
    attendees: list[str] = field(default_factory=list)
    zoom_meeting_id: str | None = None
    join_url: str | None = None
    zoom_status: str = PartStatus.PENDING.value
    integration_id: str | None = None
    calendar_id: str = DEFAULT_CALENDAR_ID
    calendar_event_id: str | None = None
    calendar_status: str = PartStatus.NONE.value
    reminders: list[ReminderState] = field(default_factory=list)
    recording_published: bool = False
    failure_code: str | None = None
    failure_reason: str | None = None
    events_applied: int = 0
    duplicates_dropped: int = 0
    zoom_integration_id: str | None = None  # None: the server-to-server app


# --- activities --------------------------------------------------------------------------


@dataclass
class RecordMeeting:
    """Inserts the meeting's row (idempotent: a retried insert finds it)."""

    meeting_id: str
    request: CreateMeeting


@dataclass
class BookZoomMeeting:
    meeting_id: str
    request: CreateMeeting


@dataclass
class ZoomBooking:
    """What the workflow keeps of Zoom's answer: no start URL, no password."""

    zoom_meeting_id: str
    join_url: str


@dataclass
class BookCalendarEvent:
    meeting_id: str
    integration_id: str
    calendar_id: str
    request: CreateMeeting
    join_url: str


@dataclass
class CalendarBooking:
    event_id: str
    html_link: str | None = None


@dataclass
class UpdateZoomMeeting:
    meeting_id: str
    zoom_meeting_id: str
    change: RescheduleMeeting
    zoom_integration_id: str | None = None


@dataclass
class UpdateCalendarEvent:
    meeting_id: str
    integration_id: str
    calendar_id: str
    event_id: str
    start_time: str
    duration: int
    timezone: str | None = None
    topic: str | None = None
    agenda: str | None = None


@dataclass
class DeleteZoomMeeting:
    meeting_id: str
    zoom_meeting_id: str
    zoom_integration_id: str | None = None


@dataclass
class DeleteCalendarEvent:
    meeting_id: str
    integration_id: str
    calendar_id: str
    event_id: str


@dataclass
class SaveMeeting:
    """The workflow's state written to the meeting's row."""

    state: MeetingState


@dataclass
class LoadMeeting:
    meeting_id: str


@dataclass
class SendReminder:
    """Creates the reminder's notifications through the notifications capability's own
    path, keyed by meeting + reminder + start time so a retry or replay sends none twice."""

    meeting_id: str
    reminder_index: int
    minutes_before: int
    channel: str
    start_time: str
    topic: str
    join_url: str | None
    attendees: list[str] = field(default_factory=list)
    user_id: str | None = None


@dataclass
class ReminderRequest:
    """One notification a reminder created (or found: `created` False) and started."""

    notification_id: str
    channels: list[str] = field(default_factory=list)
    created: bool = True


@dataclass
class ReminderSent:
    notifications: list[ReminderRequest] = field(default_factory=list)


@dataclass
class FetchRecordings:
    meeting_id: str
    zoom_meeting_id: str


@dataclass
class RecordingLinks:
    """Whether Zoom had the recording; its links went to the read model and the event."""

    found: bool
    files: int = 0


@dataclass
class PublishRecording:
    meeting_id: str
    zoom_meeting_id: str
    user_id: str | None = None
    zoom_integration_id: str | None = None
