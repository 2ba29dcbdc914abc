"""Talking to subscription workflows from the API, typed against the workflow class."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from relay import search_attributes
from relay.billing.contracts import (
    CancelSubscription,
    ChangeSubscription,
    CreateSubscription,
    PauseSubscription,
    ReconcileInput,
    SubscriptionInput,
    SubscriptionState,
    SubscriptionView,
    reconcile_schedule_id,
    subscription_workflow_id,
)
from relay.errors import ErrorCode, RelayError
from relay.settings import Settings
from workflows.billing import StripeReconcileWorkflow, SubscriptionWorkflow
from workflows.clients import application_failure

T = TypeVar("T")

log = logging.getLogger("relay.billing")

# How long a request waits for Stripe through the workflow. Past it the answer is 502
# PROVIDER_ERROR (retryable): the workflow keeps retrying on its own, and the same
# request again (same idempotencyKey) lands on it.
UPDATE_WAIT = timedelta(seconds=25)


def subscription_handle(
    client: Client, subscription_id: str
) -> WorkflowHandle[SubscriptionWorkflow, SubscriptionView]:
    return client.get_workflow_handle_for(
        SubscriptionWorkflow.run, subscription_workflow_id(subscription_id)
    )


async def subscription_state(client: Client, subscription_id: str) -> SubscriptionState:
    return await subscription_handle(client, subscription_id).query(SubscriptionWorkflow.state)


def _error(exc: WorkflowUpdateFailedError) -> RelayError:
    cause = application_failure(exc)
    if cause is None:
        return RelayError(ErrorCode.INTERNAL_ERROR, "the subscription's workflow failed")
    try:
        code = ErrorCode(cause.type or "")
    except ValueError:
        code = ErrorCode.CONFLICT
    details = cause.details[0] if cause.details else None
    # Stripe refusing what the client asked (an unknown price) is a 400 (ARCHITECTURE.md).
    status = 400 if code == ErrorCode.VALIDATION_ERROR else None
    return RelayError(code, cause.message, details, status=status)


async def _wait(subscription_id: str, call: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(UPDATE_WAIT.total_seconds()):
            return await call
    except WorkflowUpdateFailedError as exc:
        raise _error(exc) from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise RelayError(
            ErrorCode.PROVIDER_ERROR,
            "Stripe did not answer in time; the subscription's workflow keeps retrying",
            {"subscriptionId": subscription_id, "retryable": True},
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RelayError(
                ErrorCode.CONFLICT, "the subscription has ended; nothing more can change"
            ) from None
        raise


async def create_subscription(
    client: Client, settings: Settings, subscription_id: str, request: CreateSubscription
) -> SubscriptionView:
    """Update-with-start: a retried request lands on the same workflow and gets its result."""
    start = WithStartWorkflowOperation(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A creation Stripe refused ended its run; the same request may try again.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        # Ids only: search attributes are stored in the clear.
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.ENTITY_ID, subscription_id),
                SearchAttributePair(search_attributes.PROVIDER, "stripe"),
                SearchAttributePair(search_attributes.USER_ID, request.user_id),
            ]
        ),
    )
    return await _wait(
        subscription_id,
        client.execute_update_with_start_workflow(
            SubscriptionWorkflow.create, request, start_workflow_operation=start
        ),
    )


async def cancel_subscription(
    client: Client, subscription_id: str, request: CancelSubscription
) -> SubscriptionView:
    handle = subscription_handle(client, subscription_id)
    return await _wait(subscription_id, handle.execute_update(SubscriptionWorkflow.cancel, request))


async def change_subscription(
    client: Client, subscription_id: str, request: ChangeSubscription
) -> SubscriptionView:
    handle = subscription_handle(client, subscription_id)
    return await _wait(subscription_id, handle.execute_update(SubscriptionWorkflow.change, request))


async def pause_subscription(
    client: Client, subscription_id: str, request: PauseSubscription
) -> SubscriptionView:
    handle = subscription_handle(client, subscription_id)
    return await _wait(subscription_id, handle.execute_update(SubscriptionWorkflow.pause, request))


async def resume_subscription(client: Client, subscription_id: str) -> SubscriptionView:
    handle = subscription_handle(client, subscription_id)
    return await _wait(subscription_id, handle.execute_update(SubscriptionWorkflow.resume))


# --- reconciliation --------------------------------------------------------------------------


def reconcile_schedule(settings: Settings) -> Schedule:
    queue = settings.temporal_task_queue
    return Schedule(
        action=ScheduleActionStartWorkflow(
            StripeReconcileWorkflow.run,
            ReconcileInput(),
            id=f"{reconcile_schedule_id(queue)}-run",
            task_queue=queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=settings.stripe_reconcile_interval)]
        ),
        # A pass still running when the next is due: skip, do not pile up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def start_long_lived(client: Client, settings: Settings) -> None:
    """The worker's hook: the reconciliation Schedule exists (with the configured
    interval) whenever Stripe is configured. Idempotent."""
    if settings.stripe_secret_key is None:
        return
    schedule_id = reconcile_schedule_id(settings.temporal_task_queue)
    schedule = reconcile_schedule(settings)
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("stripe reconciliation scheduled every %s", settings.stripe_reconcile_interval)
    except ScheduleAlreadyRunningError:

        def same_action_new_spec(update: ScheduleUpdateInput) -> ScheduleUpdate:
            current = update.description.schedule
            current.spec = schedule.spec
            current.action = schedule.action
            return ScheduleUpdate(schedule=current)

        await client.get_schedule_handle(schedule_id).update(same_action_new_spec)


def long_lived_workflow_ids(settings: Settings) -> set[str]:
    """A Schedule, not a running workflow: nothing for the worker to watch and restart."""
    return set()
