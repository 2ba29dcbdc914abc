"""Starting the dispatcher workflows and talking to them (worker and API side)."""

from __future__ import annotations

import logging

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from relay.settings import Settings
from relay.webhooks.contracts import (
    PUMP_HEARTBEAT_SECONDS,
    WebhookDispatchInput,
    dispatcher_workflow_id,
)
from workflows.webhooks import WebhookDispatchWorkflow

log = logging.getLogger("relay.webhooks")


def dispatcher_input(settings: Settings, shard: int) -> WebhookDispatchInput:
    return WebhookDispatchInput(
        shard=shard,
        pump_poll_seconds=settings.webhook_poll_interval.total_seconds(),
        # Short, so a dead worker's pump is retried (and takes its leases back) within seconds.
        pump_heartbeat_seconds=min(PUMP_HEARTBEAT_SECONDS, settings.webhook_lease.total_seconds()),
        attempt_timeout_seconds=settings.webhook_timeout.total_seconds(),
    )


def dispatcher_ids(settings: Settings) -> list[str]:
    """The workflow id of every dispatcher shard of this task queue, by shard."""
    shards = settings.webhook_dispatch_shards
    return [
        dispatcher_workflow_id(settings.temporal_task_queue, shard, shards)
        for shard in range(shards)
    ]


async def start_dispatchers(client: Client, settings: Settings) -> None:
    """Start every dispatcher shard unless it runs already (USE_EXISTING)."""
    for shard, workflow_id in enumerate(dispatcher_ids(settings)):
        await client.start_workflow(
            WebhookDispatchWorkflow.run,
            dispatcher_input(settings, shard),
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        log.info("webhook dispatcher %s running", workflow_id)


def dispatcher_handle(client: Client, settings: Settings) -> WorkflowHandle:
    """The dispatcher that runs manual retries (shard 0)."""
    return client.get_workflow_handle_for(
        WebhookDispatchWorkflow.run,
        dispatcher_workflow_id(settings.temporal_task_queue, 0, settings.webhook_dispatch_shards),
    )


async def start_long_lived(client: Client, settings: Settings) -> None:
    """The worker's hook: the dispatchers must always run (idempotent)."""
    await start_dispatchers(client, settings)


def long_lived_workflow_ids(settings: Settings) -> set[str]:
    """The workflows `start_long_lived` keeps running: the API refuses to cancel them, and
    the worker starts any that ends (an operator's cancel or terminate) again."""
    return set(dispatcher_ids(settings))
