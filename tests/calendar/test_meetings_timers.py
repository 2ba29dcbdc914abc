"""A meeting's durable timers on the time-skipping server, with the real activities against
the Zoom sandbox and the real database: reminders sent through the notifications
repository at their times, re-timed by a reschedule, canceled with the meeting; and the
bounded wait for a recording after the meeting ended.

The notifications capability's own workflow is stood in for by a workflow registered under
its name (`NotificationWorkflow`): the reminders' notification rows are the real ones.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.calendar import CalendarActivities
from relay.calendar.contracts import (
    ZOOM_EVENT_SIGNAL,
    CancelMeeting,
    CreateMeeting,
    MeetingInput,
    MeetingState,
    MeetingStatus,
    ReminderSpec,
    RescheduleMeeting,
    meeting_workflow_id,
)
from relay.crypto import Keyring
from relay.inbound.contracts import InboundEventSignal
from relay.ledger import Ledger
from relay.notifications import repository as notifications
from relay.notifications.repository import open_content
from relay.sandbox.zoom import ZoomSandbox, ZoomServer
from relay.settings import Settings
from tests.conftest import task_queue
from workflows.calendar import MeetingWorkflow

DAY = timedelta(days=1)


# Not sandboxed: it does nothing, and this test module is not sandbox-importable.
@workflow.defn(name="NotificationWorkflow", sandboxed=False)
class NotificationWorkflowStandIn:
    """Takes the reminders' notifications as the real workflow would be started with them."""

    @workflow.run
    async def run(self, params: dict[str, Any]) -> None:
        return None


@dataclass
class Timers:
    env: WorkflowEnvironment
    queue: str
    zoom: ZoomServer
    engine: Engine
    keyring: Keyring

    async def book(self, **fields: Any) -> tuple[WorkflowHandle[Any, Any], MeetingState]:
        meeting_id = str(uuid.uuid4())
        handle = await self.env.client.start_workflow(
            MeetingWorkflow.run,
            MeetingInput(meeting_id=meeting_id, recording_wait_seconds=DAY.total_seconds()),
            id=meeting_workflow_id(meeting_id),
            task_queue=self.queue,
        )
        request = CreateMeeting(
            topic="Launch review",
            start_time=(await self.now() + timedelta(days=3)).isoformat(),
            duration=30,
            **fields,
        )
        state = await handle.execute_update(MeetingWorkflow.create, request)
        return handle, state

    async def now(self) -> datetime:
        return (await self.env.get_current_time()).astimezone(UTC)

    def notification(self, notification_id: str) -> tuple[Any, dict[str, Any]]:
        row = notifications.load(self.engine, notification_id)
        return row, open_content(self.keyring, notification_id, row.content)


@pytest_asyncio.fixture(loop_scope="session")
async def timers(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Timers]:
    queue = task_queue()
    with ZoomSandbox(port=0).run_in_thread() as zoom:
        environment = {k.lower(): v for k, v in zoom.sandbox.environment().items()}
        settings = make_settings(temporal_task_queue=queue, **environment)
        activities = CalendarActivities(
            settings=settings,
            engine=engine,
            keyring=keyring,
            client=time_skipping_env.client,
            ledger=Ledger(engine),
        )
        async with Worker(
            time_skipping_env.client,
            task_queue=queue,
            workflows=[MeetingWorkflow, NotificationWorkflowStandIn],
            activities=activities.activities(),
        ):
            yield Timers(time_skipping_env, queue, zoom, engine, keyring)
        await activities.aclose()


async def test_reminders_fire_move_with_a_reschedule_and_stop_with_a_cancel(
    timers: Timers,
) -> None:
    handle, state = await timers.book(
        attendees=["bo@example.com", "cy@example.com"],
        user_id="host-1",
        reminders=[ReminderSpec(60, "email"), ReminderSpec(10, "push")],
    )
    assert state.status == MeetingStatus.SCHEDULED
    assert [r.status for r in state.reminders] == ["PENDING", "PENDING"]

    # Three days less 59 minutes later (skipped): the email reminder has gone out.
    await timers.env.sleep(timedelta(days=3) - timedelta(minutes=59))
    state = await handle.query(MeetingWorkflow.state)
    email, push = state.reminders
    assert email.status == "SENT" and push.status == "PENDING"
    assert len(email.notification_ids) == 2
    recipients = set()
    for notification_id in email.notification_ids:
        row, content = timers.notification(notification_id)
        assert row.channels == ["email"] and row.user_id == "host-1"
        assert content["email"]["subject"] == "Reminder: Launch review"
        assert state.join_url and state.join_url in content["email"]["text"]
        recipients.add(content["email"]["to"])
    assert recipients == {"bo@example.com", "cy@example.com"}

    # Moved a day later: the reminders follow, the one already sent goes again then.
    new_start = _time(state.start_time) + DAY
    moved = await handle.execute_update(
        MeetingWorkflow.reschedule, RescheduleMeeting(start_time=new_start.isoformat())
    )
    assert [r.status for r in moved.reminders] == ["PENDING", "PENDING"]
    assert _time(moved.reminders[0].due_at) == new_start - timedelta(minutes=60)
    zoom = timers.zoom.state.get(str(moved.zoom_meeting_id))
    assert zoom["start_time"] == new_start.strftime("%Y-%m-%dT%H:%M:%SZ")

    await timers.env.sleep(DAY)  # past the new email reminder, before the push one
    state = await handle.query(MeetingWorkflow.state)
    email, push = state.reminders
    assert email.status == "SENT" and len(email.notification_ids) == 4
    assert push.status == "PENDING"

    canceled = await handle.execute_update(MeetingWorkflow.cancel, CancelMeeting())
    assert canceled.status == MeetingStatus.CANCELED
    assert canceled.reminders[1].status == "CANCELED"
    assert all(m["id"] != int(str(canceled.zoom_meeting_id)) for m in timers.zoom.state.meetings())
    result = await handle.result()
    assert result.status == MeetingStatus.CANCELED
    assert len(result.reminders[1].notification_ids) == 0


async def test_a_push_reminder_goes_to_the_users_devices(timers: Timers) -> None:
    handle, _ = await timers.book(user_id="host-2", reminders=[ReminderSpec(15, "push")])
    await timers.env.sleep(timedelta(days=3) - timedelta(minutes=14))
    (push,) = (await handle.query(MeetingWorkflow.state)).reminders
    assert push.status == "SENT"
    (notification_id,) = push.notification_ids
    row, content = timers.notification(notification_id)
    assert row.channels == ["push"] and row.user_id == "host-2"
    assert content["push"]["title"] == "Starting soon: Launch review"
    await handle.execute_update(MeetingWorkflow.cancel, CancelMeeting())


async def test_the_run_ends_a_bounded_wait_after_the_meeting_ended(timers: Timers) -> None:
    handle, state = await timers.book(reminders=[ReminderSpec(5, "email")])
    event = InboundEventSignal(
        inbox_id="i1", provider="zoom", event_id="e1", type="meeting.ended", object_id=None
    )
    await handle.signal(ZOOM_EVENT_SIGNAL, event)
    await handle.signal(ZOOM_EVENT_SIGNAL, event)  # delivered twice: applied once
    result: MeetingState = await handle.result()  # RECORDING_WAIT (a day) skipped
    assert result.status == MeetingStatus.ENDED and not result.recording_published
    assert result.events_applied == 1 and result.duplicates_dropped == 1
    assert result.reminders[0].status == "SKIPPED"  # no reminder for a meeting that is over


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
