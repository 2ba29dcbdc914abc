"""Talking to notifications' workflows (worker and API side): the send pump's dispatcher,
which must always run, a multi-channel notification's workflow, and a destination's
verification workflow (its `send` and `check` updates)."""

from __future__ import annotations

import logging

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from relay.notifications.contracts import (
    Channel,
    NotificationDispatchInput,
    NotificationInput,
    VerificationStatus,
    dispatcher_workflow_id,
    notification_workflow_id,
    verification_workflow_id,
)
from relay.notifications.verification import (
    CheckCodeRequest,
    CheckResult,
    SendCodeRequest,
    VerificationInput,
    VerificationView,
)
from relay.settings import Settings
from workflows.clients import Entity, WorkflowClosed, await_update
from workflows.notifications import NotificationWorkflow
from workflows.notifications_dispatch import NotificationDispatchWorkflow
from workflows.notifications_verification import VerificationWorkflow

log = logging.getLogger("relay.notifications")


def dispatcher_input(settings: Settings) -> NotificationDispatchInput:
    return NotificationDispatchInput(
        pump_poll_seconds=settings.notification_poll_interval.total_seconds()
    )


async def start_long_lived(client: Client, settings: Settings) -> None:
    """The worker's hook: the dispatcher must always run (idempotent)."""
    workflow_id = dispatcher_workflow_id(settings.temporal_task_queue)
    await client.start_workflow(
        NotificationDispatchWorkflow.run,
        dispatcher_input(settings),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    log.info("notification dispatcher %s running", workflow_id)


def long_lived_workflow_ids(settings: Settings) -> set[str]:
    return {dispatcher_workflow_id(settings.temporal_task_queue)}


async def start_notification(
    client: Client, settings: Settings, notification_id: str, channels: list[str]
) -> None:
    """A multi-channel notification's workflow; a repeated start (the same idempotency
    key landing here again) finds the one running."""
    await client.start_workflow(
        NotificationWorkflow.run,
        NotificationInput(
            notification_id=notification_id,
            channels=channels,
            fallback_after_seconds=settings.notification_fallback_after.total_seconds(),
        ),
        id=notification_workflow_id(notification_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


def _entity(verification_id: str) -> Entity:
    return Entity(
        "the verification",
        "verificationId",
        verification_id,
        "the notification queue",
        "the verification has ended",
    )


async def send_verification(
    client: Client, settings: Settings, verification_id: str, channel: Channel
) -> VerificationView:
    """Update-with-start of `send`: the running workflow takes it, or a new run starts."""
    start = WithStartWorkflowOperation(
        VerificationWorkflow.run,
        VerificationInput(verification_id),
        id=verification_workflow_id(verification_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A run ends once nothing is live; the destination's next code starts another.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    return await await_update(
        _entity(verification_id),
        client.execute_update_with_start_workflow(
            VerificationWorkflow.send,
            SendCodeRequest(channel=channel.value),
            start_workflow_operation=start,
        ),
    )


async def check_verification(client: Client, verification_id: str, digest: str) -> CheckResult:
    """The `check` update; with no open run there is no live code to match."""
    handle = client.get_workflow_handle_for(
        VerificationWorkflow.run, verification_workflow_id(verification_id)
    )
    try:
        return await await_update(
            _entity(verification_id),
            handle.execute_update(VerificationWorkflow.check, CheckCodeRequest(digest)),
        )
    except WorkflowClosed:
        return CheckResult(valid=False, status=VerificationStatus.EXPIRED.value, checks_left=0)
