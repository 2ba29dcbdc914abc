"""Talking to meeting workflows from the API, typed against the workflow class."""

from __future__ import annotations

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from relay import search_attributes
from relay.calendar.contracts import (
    PROVIDER,
    CancelMeeting,
    CreateMeeting,
    MeetingInput,
    MeetingState,
    RescheduleMeeting,
    meeting_workflow_id,
)
from relay.settings import Settings
from workflows.calendar import MeetingWorkflow
from workflows.clients import Entity, await_update


def meeting_handle(
    client: Client, meeting_id: str
) -> WorkflowHandle[MeetingWorkflow, MeetingState]:
    return client.get_workflow_handle_for(MeetingWorkflow.run, meeting_workflow_id(meeting_id))


def _entity(meeting_id: str) -> Entity:
    return Entity(
        "the meeting",
        "meetingId",
        meeting_id,
        "Zoom or Google Calendar",
        "the meeting's workflow has ended; nothing more can change",
    )


async def create_meeting(
    client: Client, settings: Settings, meeting_id: str, request: CreateMeeting
) -> MeetingState:
    """Update-with-start: a retried request (same idempotencyKey, so the same id) lands on
    the same workflow and gets the meeting booked the first time."""
    attributes = [
        SearchAttributePair(search_attributes.ENTITY_ID, meeting_id),
        SearchAttributePair(search_attributes.PROVIDER, PROVIDER),
    ]
    if request.user_id:
        attributes.append(SearchAttributePair(search_attributes.USER_ID, request.user_id))
    if request.integration_id:
        attributes.append(
            SearchAttributePair(search_attributes.INTEGRATION_ID, request.integration_id)
        )
    start = WithStartWorkflowOperation(
        MeetingWorkflow.run,
        MeetingInput(meeting_id=meeting_id, user_id=request.user_id),
        id=meeting_workflow_id(meeting_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A meeting that exists is answered from the database first; a run that ended
        # with nothing booked may be tried again.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        # Ids only: search attributes are stored in the clear.
        search_attributes=TypedSearchAttributes(attributes),
    )
    return await await_update(
        _entity(meeting_id),
        client.execute_update_with_start_workflow(
            MeetingWorkflow.create, request, start_workflow_operation=start
        ),
    )


async def reschedule_meeting(
    client: Client, meeting_id: str, change: RescheduleMeeting
) -> MeetingState:
    handle = meeting_handle(client, meeting_id)
    return await await_update(
        _entity(meeting_id), handle.execute_update(MeetingWorkflow.reschedule, change)
    )


async def cancel_meeting(client: Client, meeting_id: str, request: CancelMeeting) -> MeetingState:
    handle = meeting_handle(client, meeting_id)
    return await await_update(
        _entity(meeting_id), handle.execute_update(MeetingWorkflow.cancel, request)
    )
