"""The scheduled meeting's workflow, `meeting-{id}`: the single writer of one meeting.

    create (update-with-start) ──► record the row ──► book Zoom ──► book the calendar event
        (integrationId given)          │ Zoom refused: FAILED        │ failed for good: the Zoom
                                       ▼                             ▼ meeting is deleted, FAILED
                                   SCHEDULED ── reminders on durable timers ──► STARTED ──► ENDED
        reschedule (update): Zoom PATCH, calendar PATCH, reminders re-timed
        cancel (update): Zoom meeting and calendar event deleted, reminders canceled ──► CANCELED
        zoom_event (signal, from the inbound inbox): meeting.started / meeting.ended /
        recording.completed (→ the recording is re-read and meeting.recording_ready published)

The run ends when the meeting is CANCELED or FAILED, or once ENDED when its recording was
published or RECORDING_WAIT has passed without one; a meeting Zoom never reports ended is
closed END_GRACE after its scheduled end. A Zoom event for a meeting whose run has ended
starts a recovering run (`MeetingInput.recover`) that loads the meeting from the database,
applies the event and ends the same way. History stays small (a handful of activities per
meeting), so the workflow never continues as new.

Zoom is called with the server-to-server app, or with the user's `zoom` connection when the
create named one (`zoom_integration_id`, carried into every Zoom activity's input: an id,
never a token). Carrying it changes no command, so no `workflow.patched` is needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.calendar import CalendarActivities
    from relay.calendar.contracts import (
        FINAL,
        MAX_SEEN_EVENTS,
        MEETING_ENDED,
        MEETING_STARTED,
        MEETING_WORKFLOW,
        RECORDING_COMPLETED,
        RESCHEDULABLE,
        ZOOM_EVENT_SIGNAL,
        BookCalendarEvent,
        BookZoomMeeting,
        CancelMeeting,
        CreateMeeting,
        DeleteCalendarEvent,
        DeleteZoomMeeting,
        LoadMeeting,
        MeetingInput,
        MeetingState,
        MeetingStatus,
        PartStatus,
        PublishRecording,
        RecordMeeting,
        ReminderState,
        ReminderStatus,
        RescheduleMeeting,
        SaveMeeting,
        SendReminder,
        UpdateCalendarEvent,
        UpdateZoomMeeting,
    )
    from relay.errors import ErrorCode
    from relay.inbound.contracts import InboundEventSignal

# Provider steps: a few attempts, then the step has failed for good (the saga undoes).
PROVIDER_TIMEOUT = timedelta(seconds=30)
BOOKING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# Undoing (deleting the Zoom meeting) must happen: retried until it does.
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
DATABASE_TIMEOUT = timedelta(seconds=15)
DATABASE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# A run whose create update never came (the request died before it) waits this long.
CREATE_WAIT = timedelta(minutes=10)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _utc(value: str) -> str:
    return _time(value).astimezone(UTC).isoformat()


def _failure(exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause
    return ApplicationError("the provider call did not finish", type=ErrorCode.PROVIDER_ERROR.value)


@workflow.defn(name=MEETING_WORKFLOW)
class MeetingWorkflow:
    """One scheduled meeting across Zoom and Google Calendar (see the module docstring).
    Guarantees: no Zoom meeting outlives a booking that failed; every change goes through
    this run; reminders are sent at most once per reminder and start time; a Zoom event
    is applied once (bounded seen-set) unless replayed by an operator."""

    @workflow.init
    def __init__(self, params: MeetingInput) -> None:
        self._input = params
        self._state = MeetingState(meeting_id=params.meeting_id, user_id=params.user_id)
        self._request: CreateMeeting | None = None
        self._created = False
        self._failure: ApplicationError | None = None
        self._lock = asyncio.Lock()
        self._seen: deque[str] = deque(maxlen=MAX_SEEN_EVENTS)
        self._pending: list[InboundEventSignal] = []
        # Bumped by every change: the loop recomputes its next timer.
        self._version = 0
        self._waiting_for = 0
        self._ended_at: datetime | None = None
        self._closing = False

    # --- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, params: MeetingInput) -> MeetingState:
        if params.recover:
            loaded = await workflow.execute_activity_method(
                CalendarActivities.load_meeting,
                LoadMeeting(params.meeting_id),
                start_to_close_timeout=DATABASE_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
            if loaded is None or loaded.status == MeetingStatus.SCHEDULING:
                # Not one of Relay's meetings, or a booking that never finished: nothing
                # to apply the event to.
                return self._state
            loaded.events_applied, loaded.duplicates_dropped = (
                self._state.events_applied,
                self._state.duplicates_dropped,
            )
            self._state = loaded
            self._created = True
        else:
            try:
                await workflow.wait_condition(
                    lambda: self._created or self._state.status in FINAL,
                    timeout=CREATE_WAIT,
                )
            except TimeoutError:
                return self._state
        await self._lifecycle()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    def _done(self) -> bool:
        status = self._state.status
        if status in FINAL:
            return True
        return status == MeetingStatus.ENDED and (self._state.recording_published or self._closing)

    async def _lifecycle(self) -> None:
        while True:
            await self._apply_pending()
            if self._done():
                return
            deadline = self._next_deadline()
            self._waiting_for = self._version
            timeout = max(timedelta(0), deadline - workflow.now()) if deadline is not None else None
            try:
                await workflow.wait_condition(self._woken, timeout=timeout)
            except TimeoutError:
                await self._on_deadline()

    def _woken(self) -> bool:
        return self._version != self._waiting_for or bool(self._pending)

    def _scheduled_end(self) -> datetime:
        return _time(self._state.start_time) + timedelta(minutes=self._state.duration)

    def _next_deadline(self) -> datetime | None:
        state = self._state
        if state.status == MeetingStatus.ENDED:
            ended = self._ended_at or workflow.now()
            self._ended_at = ended
            return ended + timedelta(seconds=self._input.recording_wait_seconds)
        deadlines = [self._scheduled_end() + timedelta(seconds=self._input.end_grace_seconds)]
        if state.status == MeetingStatus.SCHEDULED:
            deadlines += [
                _time(reminder.due_at)
                for reminder in state.reminders
                if reminder.status == ReminderStatus.PENDING
            ]
        return min(deadlines)

    async def _on_deadline(self) -> None:
        async with self._lock:
            now = workflow.now()
            state = self._state
            if state.status == MeetingStatus.ENDED:
                if self._ended_at is not None and now >= self._ended_at + timedelta(
                    seconds=self._input.recording_wait_seconds
                ):
                    self._closing = True
                return
            if state.status == MeetingStatus.SCHEDULED:
                await self._send_due_reminders(now)
            grace = timedelta(seconds=self._input.end_grace_seconds)
            if state.status in (MeetingStatus.SCHEDULED, MeetingStatus.STARTED) and (
                now >= self._scheduled_end() + grace
            ):
                # Zoom never said it ended: close it rather than wait forever.
                state.status = MeetingStatus.ENDED
                self._ended_at = now
                self._closing = True
                self._skip_pending_reminders()
                await self._save()

    # --- reminders -----------------------------------------------------------------------------

    def _retime(self) -> None:
        """Each reminder's time for the current start; one whose time has passed is skipped."""
        now = workflow.now()
        start = _time(self._state.start_time)
        for reminder in self._state.reminders:
            if reminder.status == ReminderStatus.CANCELED:
                continue
            due = start - timedelta(minutes=reminder.minutes_before)
            reminder.due_at = due.astimezone(UTC).isoformat()
            if due > now:
                reminder.status = ReminderStatus.PENDING.value
            elif reminder.status == ReminderStatus.PENDING:
                reminder.status = ReminderStatus.SKIPPED.value

    def _skip_pending_reminders(self, status: ReminderStatus = ReminderStatus.SKIPPED) -> None:
        for reminder in self._state.reminders:
            if reminder.status == ReminderStatus.PENDING:
                reminder.status = status.value

    async def _send_due_reminders(self, now: datetime) -> None:
        state = self._state
        sent_any = False
        for index, reminder in enumerate(state.reminders):
            if reminder.status != ReminderStatus.PENDING or _time(reminder.due_at) > now:
                continue
            result = await workflow.execute_activity_method(
                CalendarActivities.send_meeting_reminder,
                SendReminder(
                    meeting_id=state.meeting_id,
                    reminder_index=index,
                    minutes_before=reminder.minutes_before,
                    channel=reminder.channel,
                    start_time=state.start_time,
                    topic=state.topic,
                    join_url=state.join_url,
                    attendees=list(state.attendees),
                    user_id=state.user_id,
                ),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
            created = [item.notification_id for item in result.notifications]
            reminder.notification_ids = [*reminder.notification_ids, *created]
            reminder.status = ReminderStatus.SENT.value if created else ReminderStatus.SKIPPED.value
            sent_any = True
        if sent_any:
            await self._save()

    # --- Zoom's events ---------------------------------------------------------------------------

    @workflow.signal(name=ZOOM_EVENT_SIGNAL)
    def zoom_event(self, event: InboundEventSignal) -> None:
        """A Zoom event about this meeting (its id and type only; never the payload)."""
        if event.event_id in self._seen and not event.replay:
            self._state.duplicates_dropped += 1
            return
        if event.event_id not in self._seen:
            self._seen.append(event.event_id)
        self._pending.append(event)

    async def _apply_pending(self) -> None:
        while self._pending:
            async with self._lock:
                event = self._pending.pop(0)
                await self._apply(event)

    async def _apply(self, event: InboundEventSignal) -> None:
        state = self._state
        if state.status in FINAL:
            return
        state.events_applied += 1
        if event.type == MEETING_STARTED and state.status in (
            MeetingStatus.SCHEDULED,
            MeetingStatus.ENDED,  # a recurring meeting's next occurrence
        ):
            state.status = MeetingStatus.STARTED.value
            self._ended_at = None
            self._skip_pending_reminders()
        elif event.type == MEETING_ENDED and state.status in (
            MeetingStatus.SCHEDULED,
            MeetingStatus.STARTED,
        ):
            state.status = MeetingStatus.ENDED.value
            self._ended_at = workflow.now()
            self._skip_pending_reminders()
        elif event.type == RECORDING_COMPLETED and state.zoom_meeting_id:
            links = await workflow.execute_activity_method(
                CalendarActivities.publish_meeting_recording,
                PublishRecording(
                    meeting_id=state.meeting_id,
                    zoom_meeting_id=state.zoom_meeting_id,
                    user_id=state.user_id,
                    zoom_integration_id=state.zoom_integration_id,
                ),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=BOOKING_RETRY,
            )
            state.recording_published = state.recording_published or links.found
        else:
            return
        self._version += 1
        await self._save()

    # --- updates -----------------------------------------------------------------------------------

    @workflow.update
    async def create(self, request: CreateMeeting) -> MeetingState:
        """Book Zoom, then the calendar event; undo Zoom if the calendar step fails for good.
        A repeated create on this run answers what the first one did."""
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._created:
                return self._view()
            self._request = request
            state = self._state
            state.topic = request.topic
            state.start_time = _utc(request.start_time)
            state.duration = request.duration
            state.timezone = request.timezone
            state.user_id = request.user_id
            state.attendees = list(request.attendees)
            state.integration_id = request.integration_id
            state.zoom_integration_id = request.zoom_integration_id
            state.calendar_id = request.calendar_id
            state.calendar_status = (
                PartStatus.PENDING.value if request.integration_id else PartStatus.NONE.value
            )
            await workflow.execute_activity_method(
                CalendarActivities.record_meeting,
                RecordMeeting(meeting_id=state.meeting_id, request=request),
                start_to_close_timeout=DATABASE_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
            try:
                booking = await workflow.execute_activity_method(
                    CalendarActivities.book_zoom_meeting,
                    BookZoomMeeting(meeting_id=state.meeting_id, request=request),
                    start_to_close_timeout=PROVIDER_TIMEOUT,
                    retry_policy=BOOKING_RETRY,
                )
            except ActivityError as exc:
                state.zoom_status = PartStatus.FAILED.value
                if state.integration_id:
                    state.calendar_status = PartStatus.NONE.value
                await self._fail(_failure(exc), "zoom")
            state.zoom_meeting_id = str(booking["zoomMeetingId"])
            state.join_url = str(booking["joinUrl"])
            state.zoom_status = PartStatus.CREATED.value
            if request.integration_id:
                try:
                    event = await workflow.execute_activity_method(
                        CalendarActivities.book_calendar_event,
                        BookCalendarEvent(
                            meeting_id=state.meeting_id,
                            integration_id=request.integration_id,
                            calendar_id=request.calendar_id,
                            request=request,
                            join_url=state.join_url,
                        ),
                        start_to_close_timeout=PROVIDER_TIMEOUT,
                        retry_policy=BOOKING_RETRY,
                    )
                except ActivityError as exc:
                    state.calendar_status = PartStatus.FAILED.value
                    await self._delete_zoom()
                    await self._fail(_failure(exc), "calendar")
                state.calendar_event_id = event.event_id
                state.calendar_status = PartStatus.CREATED.value
            state.reminders = [
                ReminderState(minutes_before=spec.minutes_before, channel=spec.channel, due_at="")
                for spec in request.reminders
            ]
            self._retime()
            state.status = MeetingStatus.SCHEDULED.value
            await self._save()
            self._created = True
            self._version += 1
            return self._view()

    async def _delete_zoom(self) -> None:
        state = self._state
        if state.zoom_meeting_id and state.zoom_status == PartStatus.CREATED:
            await workflow.execute_activity_method(
                CalendarActivities.delete_zoom_meeting,
                DeleteZoomMeeting(
                    meeting_id=state.meeting_id,
                    zoom_meeting_id=state.zoom_meeting_id,
                    zoom_integration_id=state.zoom_integration_id,
                ),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=UNDO_RETRY,
            )
            state.zoom_status = PartStatus.DELETED.value

    async def _fail(self, cause: ApplicationError, step: str) -> NoReturn:
        """The booking failed for good: FAILED with the reason, and the update refused."""
        state = self._state
        state.status = MeetingStatus.FAILED.value
        state.failure_code = cause.type or ErrorCode.PROVIDER_ERROR.value
        state.failure_reason = cause.message
        await self._save()
        details: dict[str, Any] = {"meetingId": state.meeting_id, "step": step}
        if cause.details and isinstance(cause.details[0], dict):
            details |= cause.details[0]
        self._failure = ApplicationError(
            cause.message, details, type=state.failure_code, non_retryable=True
        )
        self._version += 1
        raise self._failure

    @workflow.update
    async def reschedule(self, change: RescheduleMeeting) -> MeetingState:
        """Move the Zoom meeting, then the calendar event; reminders are re-timed."""
        async with self._lock:
            state = self._state
            if state.status not in RESCHEDULABLE:
                raise ApplicationError(
                    f"the meeting is {state.status}; only a SCHEDULED meeting can be changed",
                    {"meetingId": state.meeting_id, "status": state.status},
                    type=ErrorCode.CONFLICT.value,
                    non_retryable=True,
                )
            assert state.zoom_meeting_id is not None
            try:
                await workflow.execute_activity_method(
                    CalendarActivities.update_zoom_meeting,
                    UpdateZoomMeeting(
                        meeting_id=state.meeting_id,
                        zoom_meeting_id=state.zoom_meeting_id,
                        change=change,
                        zoom_integration_id=state.zoom_integration_id,
                    ),
                    start_to_close_timeout=PROVIDER_TIMEOUT,
                    retry_policy=BOOKING_RETRY,
                )
            except ActivityError as exc:
                raise _failure(exc) from None
            if change.start_time is not None:
                state.start_time = _utc(change.start_time)
            if change.duration is not None:
                state.duration = change.duration
            if change.timezone is not None:
                state.timezone = change.timezone
            if change.topic is not None:
                state.topic = change.topic
            self._retime()
            self._version += 1
            calendar_failure: ApplicationError | None = None
            if state.calendar_event_id and state.integration_id:
                try:
                    await workflow.execute_activity_method(
                        CalendarActivities.update_calendar_event,
                        UpdateCalendarEvent(
                            meeting_id=state.meeting_id,
                            integration_id=state.integration_id,
                            calendar_id=state.calendar_id,
                            event_id=state.calendar_event_id,
                            start_time=state.start_time,
                            duration=state.duration,
                            timezone=state.timezone,
                            topic=change.topic,
                            agenda=change.agenda,
                        ),
                        start_to_close_timeout=PROVIDER_TIMEOUT,
                        retry_policy=BOOKING_RETRY,
                    )
                except ActivityError as exc:
                    # Zoom moved (it is where attendees join); the calendar lags: say so.
                    calendar_failure = _failure(exc)
                    state.calendar_status = PartStatus.FAILED.value
                    state.failure_reason = f"calendar event not moved: {calendar_failure.message}"
            await self._save()
            if calendar_failure is not None:
                raise ApplicationError(
                    state.failure_reason or calendar_failure.message,
                    {"meetingId": state.meeting_id, "step": "calendar"},
                    type=calendar_failure.type or ErrorCode.PROVIDER_ERROR.value,
                    non_retryable=True,
                )
            return self._view()

    @workflow.update
    async def cancel(self, request: CancelMeeting) -> MeetingState:
        """Delete the Zoom meeting and the calendar event, cancel pending reminders."""
        async with self._lock:
            state = self._state
            if state.status in FINAL or state.status == MeetingStatus.ENDED:
                raise ApplicationError(
                    f"the meeting is {state.status}; it cannot be canceled",
                    {"meetingId": state.meeting_id, "status": state.status},
                    type=ErrorCode.CONFLICT.value,
                    non_retryable=True,
                )
            await self._delete_zoom()
            if (
                state.calendar_event_id
                and state.integration_id
                and state.calendar_status == PartStatus.CREATED
            ):
                try:
                    await workflow.execute_activity_method(
                        CalendarActivities.delete_calendar_event,
                        DeleteCalendarEvent(
                            meeting_id=state.meeting_id,
                            integration_id=state.integration_id,
                            calendar_id=state.calendar_id,
                            event_id=state.calendar_event_id,
                        ),
                        start_to_close_timeout=PROVIDER_TIMEOUT,
                        retry_policy=BOOKING_RETRY,
                    )
                    state.calendar_status = PartStatus.DELETED.value
                except ActivityError as exc:
                    # The user's connection may be gone: the meeting is canceled all the same.
                    state.calendar_status = PartStatus.FAILED.value
                    state.failure_reason = f"calendar event not deleted: {_failure(exc).message}"
            self._skip_pending_reminders(ReminderStatus.CANCELED)
            state.status = MeetingStatus.CANCELED.value
            await self._save()
            self._version += 1
            return self._view()

    # --- queries and helpers --------------------------------------------------------------------------

    @workflow.query
    def state(self) -> MeetingState:
        return self._view()

    @workflow.query
    def seen_events(self) -> list[str]:
        return list(self._seen)

    def _view(self) -> MeetingState:
        return dataclasses.replace(
            self._state,
            attendees=list(self._state.attendees),
            reminders=[dataclasses.replace(r) for r in self._state.reminders],
        )

    async def _save(self) -> None:
        await workflow.execute_activity_method(
            CalendarActivities.save_meeting,
            SaveMeeting(self._view()),
            start_to_close_timeout=DATABASE_TIMEOUT,
            retry_policy=DATABASE_RETRY,
        )


WORKFLOWS = (MeetingWorkflow,)
