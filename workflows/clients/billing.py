"""Talking to subscription workflows from the API, typed against the workflow class."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
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
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

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
from relay.settings import Settings
from workflows.billing import StripeReconcileWorkflow, SubscriptionWorkflow
from workflows.clients import Entity, await_update

T = TypeVar("T")

log = logging.getLogger("relay.billing")


def subscription_handle(
    client: Client, subscription_id: str
) -> WorkflowHandle[SubscriptionWorkflow, SubscriptionView]:
    return client.get_workflow_handle_for(
        SubscriptionWorkflow.run, subscription_workflow_id(subscription_id)
    )


async def subscription_state(client: Client, subscription_id: str) -> SubscriptionState:
    return await subscription_handle(client, subscription_id).query(SubscriptionWorkflow.state)


def _entity(subscription_id: str) -> Entity:
    return Entity(
        "the subscription",
        "subscriptionId",
        subscription_id,
        "Stripe",
        "the subscription has ended; nothing more can change",
    )


async def _wait(subscription_id: str, call: Awaitable[T]) -> T:
    return await await_update(_entity(subscription_id), call)


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
