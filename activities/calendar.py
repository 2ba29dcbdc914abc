"""The scheduled meeting's side effects: Zoom (server-to-server, or the user's `zoom`
connection when the meeting names one), the Google Calendar event
(acting with the user's connection), the meetings read model, reminders through the
notifications capability, and `meeting.recording_ready` through outgoing webhooks.

Every activity is idempotent: the Zoom booking runs in the provider-call ledger under
`meeting-{id}:zoom-create` (Zoom takes no idempotency key; when an attempt got no answer,
the next one looks for the meeting in the host's list before booking again), the calendar event's id is
derived from the meeting's id (a retried insert finds it), deletes treat "already gone" as
done, reminders' notifications are keyed by meeting + reminder + start time + recipient,
and the recording event by meeting + Zoom recording.

Provider failures are classified here (relay.provider_errors): a Zoom 4xx is a
non-retryable PROVIDER_ERROR carrying Zoom's message and code; 429 and 5xx are retried,
Zoom's Retry-After as the next delay. The host's start URL and the password go from Zoom's
answer straight into the database, sealed: no activity returns them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from relay.calendar import repository
from relay.calendar.access import GoogleAccess, ZoomAccess, application_error
from relay.calendar.contracts import (
    RECORDING_READY_EVENT,
    BookCalendarEvent,
    BookZoomMeeting,
    CalendarBooking,
    DeleteCalendarEvent,
    DeleteZoomMeeting,
    LoadMeeting,
    MeetingState,
    PublishRecording,
    RecordingLinks,
    RecordMeeting,
    ReminderChannel,
    ReminderRequest,
    ReminderSent,
    SaveMeeting,
    SendReminder,
    UpdateCalendarEvent,
    UpdateZoomMeeting,
)
from relay.calendar.google import GoogleCalendar, event_body
from relay.calendar.zoom import (
    AmbiguousMeeting,
    MeetingFieldError,
    ZoomApiError,
    ZoomClient,
    created_by,
    from_settings,
    recording_links,
)
from relay.calendar.zoom import meeting_body as zoom_meeting_body
from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.ledger import Ledger
from relay.models.oauth import Integration
from relay.notifications import repository as notifications
from relay.notifications.contracts import FINAL as NOTIFICATION_FINAL
from relay.notifications.contracts import NotificationInput, notification_workflow_id
from relay.notifications.repository import NewMessage
from relay.oauth.catalog import Catalog, load_catalog
from relay.oauth.contracts import RefreshOutcome, RefreshRequest, integration_workflow_id
from relay.provider_errors import error_for_status, translate
from relay.settings import Settings
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext

T = TypeVar("T")

PROVIDER = "zoom"
# The notifications capability's workflow, started by name (activities do not import
# workflows/).
NOTIFICATION_WORKFLOW = "NotificationWorkflow"


def zoom_failure(exc: ZoomApiError) -> ApplicationError:
    """Zoom's refusal as Temporal's failure: 4xx final with Zoom's message and code, 429
    and 5xx retried (Retry-After honoured). `status` in the details tells the ledger Zoom
    answered (so a transient failure did not act)."""
    headers = (
        {"retry-after": str(int(exc.retry_after.total_seconds()))}
        if exc.retry_after is not None
        else None
    )
    failure = error_for_status(PROVIDER, exc.status, headers=headers, reason=exc.message)
    details = {"provider": PROVIDER, "status": exc.status, "zoomCode": exc.code}
    if exc.field:
        details["field"] = exc.field
    return ApplicationError(
        failure.message,
        details,
        type=failure.type,
        non_retryable=failure.non_retryable,
        next_retry_delay=failure.next_retry_delay,
    )


def calendar_event_id(meeting_id: str) -> str:
    """The Google event's id, derived from the meeting's (base32hex: a-v, 0-9), so a retried
    insert finds the event instead of adding a second one."""
    return "mtg" + hashlib.sha256(meeting_id.encode()).hexdigest()[:40]


def _end(start_time: str, duration: int) -> str:
    from datetime import datetime

    start = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    return (start + timedelta(minutes=duration)).isoformat()


class CalendarActivities:
    """Zoom, Google Calendar, the meetings table, reminders and events for MeetingWorkflow."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        client: Client,
        ledger: Ledger,
        zoom: ZoomClient | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._keyring = keyring
        self._client = client
        self._ledger = ledger
        self._zoom = zoom if zoom is not None else from_settings(settings)
        self._google = GoogleAccess(
            engine=engine,
            keyring=keyring,
            catalog=catalog or load_catalog(settings.providers_file),
            refresh=self._refresh_connection,
            api_base=settings.google_api_base,
        )
        self._zoom_access = ZoomAccess(
            engine=self._google.engine,
            keyring=keyring,
            catalog=self._google.catalog,
            refresh=self._refresh_connection,
            api_base=settings.zoom_api_base,
        )

    @classmethod
    def from_context(cls, context: WorkerContext) -> CalendarActivities:
        made = cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            client=context.client,
            ledger=context.ledger,
        )
        context.closers.append(made.aclose)
        return made

    async def aclose(self) -> None:
        if self._zoom is not None:
            await self._zoom.aclose()

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.record_meeting,
            self.save_meeting,
            self.load_meeting,
            self.book_zoom_meeting,
            self.update_zoom_meeting,
            self.delete_zoom_meeting,
            self.book_calendar_event,
            self.update_calendar_event,
            self.delete_calendar_event,
            self.send_meeting_reminder,
            self.publish_meeting_recording,
        ]

    # --- plumbing ------------------------------------------------------------------------

    def _zoom_client(self) -> ZoomClient:
        if self._zoom is None:
            raise ApplicationError(
                "Zoom is not configured (ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET)",
                {"provider": PROVIDER},
                type=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
                non_retryable=True,
            )
        return self._zoom

    async def _zoom_call(
        self,
        call: Callable[[ZoomClient], Awaitable[T]],
        zoom_integration_id: str | None = None,
    ) -> T:
        """`call` with the user's `zoom` connection when one is named, else server-to-server."""
        try:
            if zoom_integration_id is None:
                return await call(self._zoom_client())
            key = _integration_key(zoom_integration_id)
            try:
                return await self._zoom_access.call(key, call)
            except RelayError as error:
                raise application_error(error) from None
        except ZoomApiError as exc:
            raise zoom_failure(exc) from None
        except ApplicationError:
            raise
        except Exception as exc:  # httpx's transport errors: transient
            raise translate(PROVIDER, exc) from None

    async def _db(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    async def _refresh_connection(self, integration: Integration, *, force: bool) -> object:
        """A refresh through the connection's workflow (by name: activities do not import
        workflows/); its refusal is REFRESH_FAILED, as the API's refresh says."""
        handle = self._client.get_workflow_handle(integration_workflow_id(integration.id))
        try:
            return await handle.execute_update(
                "refresh",
                RefreshRequest(force=force, reason="calendar"),
                result_type=RefreshOutcome,
            )
        except WorkflowUpdateFailedError:
            raise RelayError(
                ErrorCode.REFRESH_FAILED, "the connection's refresh was refused"
            ) from None

    async def _google_call(self, integration_id: str, action: Callable[[GoogleCalendar], T]) -> T:
        key = _integration_key(integration_id)
        try:
            return await self._google.call(key, action)
        except RelayError as error:
            raise application_error(error) from None

    # --- the read model --------------------------------------------------------------------

    @activity.defn
    async def record_meeting(self, params: RecordMeeting) -> None:
        """The meeting's row (idempotent: a retry finds it)."""
        await self._db(
            functools.partial(
                repository.insert_meeting, self._engine, params.meeting_id, params.request
            )
        )

    @activity.defn
    async def save_meeting(self, params: SaveMeeting) -> None:
        await self._db(functools.partial(repository.save_state, self._engine, params.state))

    @activity.defn
    async def load_meeting(self, params: LoadMeeting) -> MeetingState | None:
        """The meeting as last saved (a recovering run starts from it), or None."""
        row = await self._db(functools.partial(repository.find, self._engine, params.meeting_id))
        return repository.state_of(row) if row is not None else None

    # --- Zoom ------------------------------------------------------------------------------

    @activity.defn
    async def book_zoom_meeting(self, params: BookZoomMeeting) -> dict[str, Any]:
        """Creates the Zoom meeting once (ledger), seals its start URL and password into the
        meeting's row, and returns only {zoomMeetingId, joinUrl}."""
        request = params.request
        try:
            body = zoom_meeting_body(
                topic=request.topic,
                start_time=request.start_time,
                duration=request.duration,
                timezone=request.timezone,
                agenda=request.agenda,
                recurrence=request.recurrence,
                settings=request.settings,
            )
        except MeetingFieldError as exc:  # the API checked already; a bug if it happens
            raise ApplicationError(
                exc.message,
                {"field": exc.field},
                type=ErrorCode.VALIDATION_ERROR.value,
                non_retryable=True,
            ) from None

        async def create() -> dict[str, Any]:
            created = await self._zoom_call(
                lambda zoom: zoom.create_meeting(body), request.zoom_integration_id
            )
            return await save(created)

        async def save(created: dict[str, Any]) -> dict[str, Any]:
            zoom_id = str(created["id"])
            join_url = str(created.get("join_url") or "")
            await self._db(
                functools.partial(
                    repository.save_booking,
                    self._engine,
                    self._keyring,
                    params.meeting_id,
                    zoom_meeting_id=zoom_id,
                    join_url=join_url,
                    start_url=created.get("start_url"),
                    password=created.get("password"),
                )
            )
            return {"zoomMeetingId": zoom_id, "joinUrl": join_url}

        async def reconcile(since: datetime) -> dict[str, Any] | None:
            # An interrupted create (no answer came) may have booked the meeting: find it
            # in the host's list and keep it, rather than booking a second one.
            listed = await self._zoom_call(
                lambda zoom: zoom.list_meetings(), request.zoom_integration_id
            )
            try:
                match = created_by(listed, body, since)
            except AmbiguousMeeting as exc:
                raise ApplicationError(
                    str(exc),
                    {"step": "zoom"},
                    type=ErrorCode.UNKNOWN_OUTCOME.value,
                    non_retryable=True,
                ) from None
            if match is None:
                return None
            meeting = await self._zoom_call(
                lambda zoom: zoom.get_meeting(str(match["id"])), request.zoom_integration_id
            )
            return await save(meeting)

        result = await self._ledger.run(
            f"meeting-{params.meeting_id}:zoom-create",
            create,
            provider=PROVIDER,
            operation="create_meeting",
            reconcile=reconcile,
        )
        assert isinstance(result, dict)
        return result

    @activity.defn
    async def update_zoom_meeting(self, params: UpdateZoomMeeting) -> None:
        change = params.change
        body = zoom_meeting_body(
            topic=change.topic,
            start_time=change.start_time,
            duration=change.duration,
            timezone=change.timezone,
            agenda=change.agenda,
        )
        if body:
            await self._zoom_call(
                lambda zoom: zoom.update_meeting(params.zoom_meeting_id, body),
                params.zoom_integration_id,
            )

    @activity.defn
    async def delete_zoom_meeting(self, params: DeleteZoomMeeting) -> bool:
        """True when deleted now, False when Zoom no longer had it."""
        return await self._zoom_call(
            lambda zoom: zoom.delete_meeting(params.zoom_meeting_id), params.zoom_integration_id
        )

    # --- Google Calendar -------------------------------------------------------------------

    @activity.defn
    async def book_calendar_event(self, params: BookCalendarEvent) -> CalendarBooking:
        """The attendees' calendar event carrying the join URL, with an id derived from the
        meeting's: a retry after a lost answer finds the event it made."""
        request = params.request
        event_id = calendar_event_id(params.meeting_id)
        body = event_body(
            summary=request.topic,
            start=request.start_time,
            end=_end(request.start_time, request.duration),
            time_zone=request.timezone,
            description=request.agenda,
            attendees=request.attendees,
            recurrence=[request.recurrence] if request.recurrence else None,
            zoom_join_url=params.join_url,
        )
        body["id"] = event_id

        def insert(calendar: GoogleCalendar) -> dict[str, Any]:
            from relay.calendar.google import GoogleApiError

            try:
                return calendar.insert_event(params.calendar_id, body, send_updates="all")
            except GoogleApiError as error:
                if error.status != 409:
                    raise
                return calendar.get_event(params.calendar_id, event_id)

        event = await self._google_call(params.integration_id, insert)
        return CalendarBooking(
            event_id=str(event.get("id", event_id)), html_link=event.get("htmlLink")
        )

    @activity.defn
    async def update_calendar_event(self, params: UpdateCalendarEvent) -> None:
        body = event_body(
            summary=params.topic,
            start=params.start_time,
            end=_end(params.start_time, params.duration),
            time_zone=params.timezone,
            description=params.agenda,
        )
        await self._google_call(
            params.integration_id,
            lambda calendar: calendar.patch_event(
                params.calendar_id, params.event_id, body, send_updates="all"
            ),
        )

    @activity.defn
    async def delete_calendar_event(self, params: DeleteCalendarEvent) -> bool:
        return await self._google_call(
            params.integration_id,
            lambda calendar: calendar.delete_event(
                params.calendar_id, params.event_id, send_updates="all"
            ),
        )

    # --- reminders ---------------------------------------------------------------------------

    @activity.defn
    async def send_meeting_reminder(self, params: SendReminder) -> ReminderSent:
        """Creates the reminder's notifications the way POST /v1/notifications does (one
        row through the notifications repository, then the NotificationWorkflow): an
        email to each attendee, or a push to the user's devices. Keyed by meeting,
        reminder, start time and recipient, so a retry or a replay adds none."""
        messages = _reminder_messages(params)
        if not messages:
            return ReminderSent()
        queued = await self._db(
            functools.partial(notifications.enqueue, self._engine, self._keyring, messages)
        )
        sent: list[ReminderRequest] = []
        for message, entry in zip(messages, queued, strict=True):
            channels = list(message.channels or [])
            if entry.status not in {status.value for status in NOTIFICATION_FINAL}:
                await self._start_notification(entry.id, channels)
            sent.append(
                ReminderRequest(
                    notification_id=entry.id,
                    channels=channels,
                    created=not entry.duplicate,
                )
            )
        return ReminderSent(notifications=sent)

    async def _start_notification(self, notification_id: str, channels: list[str]) -> None:
        try:
            await self._client.start_workflow(
                NOTIFICATION_WORKFLOW,
                NotificationInput(
                    notification_id=notification_id,
                    channels=channels,
                    fallback_after_seconds=(
                        self._settings.notification_fallback_after.total_seconds()
                    ),
                ),
                id=notification_workflow_id(notification_id),
                task_queue=self._settings.temporal_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # it ran already: the notification was sent

    # --- recordings ----------------------------------------------------------------------------

    @activity.defn
    async def publish_meeting_recording(self, params: PublishRecording) -> RecordingLinks:
        """Re-reads the recording from Zoom (the webhook is only a trigger), keeps its links
        in the read model and publishes `meeting.recording_ready` once per recording."""
        recording = await self._zoom_call(
            lambda zoom: zoom.recordings(params.zoom_meeting_id), params.zoom_integration_id
        )
        if recording is None:
            return RecordingLinks(found=False)
        stored = recording_links(recording)
        await self._db(
            functools.partial(repository.save_recordings, self._engine, params.meeting_id, stored)
        )
        data = {
            "meetingId": params.meeting_id,
            "zoomMeetingId": params.zoom_meeting_id,
            "userId": params.user_id,
            "recording": stored,
        }
        key = f"meeting-{params.meeting_id}:recording:{recording.get('uuid') or 'first'}"
        await self._db(
            functools.partial(
                publish_event, self._engine, RECORDING_READY_EVENT, data, idempotency_key=key
            )
        )
        return RecordingLinks(found=True, files=len(stored["files"]))


def _integration_key(integration_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(integration_id)
    except ValueError:
        raise ApplicationError(
            "no such integration",
            {"integrationId": integration_id},
            type=ErrorCode.INTEGRATION_NOT_FOUND.value,
            non_retryable=True,
        ) from None


def _reminder_messages(params: SendReminder) -> list[NewMessage]:
    key = f"meeting-{params.meeting_id}:reminder-{params.reminder_index}:{params.start_time}"
    when = params.start_time
    lines = [f"{params.topic} starts in {params.minutes_before} minutes ({when})."]
    if params.join_url:
        lines.append(f"Join: {params.join_url}")
    text = "\n".join(lines)
    if params.channel == ReminderChannel.PUSH.value:
        if not params.user_id:
            return []
        content = {
            "push": {
                "title": f"Starting soon: {params.topic}"[:255],
                "body": text[:4096],
                "data": {"meetingId": params.meeting_id},
            }
        }
        return [
            NewMessage(
                channel=None,
                channels=["push"],
                content=content,
                user_id=params.user_id,
                idempotency_key=f"{key}:push",
            )
        ]
    return [
        NewMessage(
            channel=None,
            channels=["email"],
            content={
                "email": {
                    "to": attendee,
                    "subject": f"Reminder: {params.topic}"[:998],
                    "text": text,
                }
            },
            user_id=params.user_id,
            # Hashed: the key is stored and shown; the address need not be in it.
            idempotency_key=f"{key}:{hashlib.sha256(attendee.encode()).hexdigest()[:16]}",
        )
        for attendee in params.attendees
    ]


ACTIVITIES = CalendarActivities
