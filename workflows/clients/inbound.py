"""Starting the inbound forwarder (worker side) and forwarding events (API side)."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from relay.inbound.contracts import InboundForwarderInput, forwarder_workflow_id
from relay.settings import Settings
from workflows.inbound import InboundForwarderWorkflow

log = logging.getLogger("relay.inbound")


def forwarder_input(settings: Settings) -> InboundForwarderInput:
    return InboundForwarderInput(pump_poll_seconds=settings.inbound_poll_interval.total_seconds())


async def start_long_lived(client: Client, settings: Settings) -> None:
    """The worker's hook: the forwarder must always run (idempotent: USE_EXISTING)."""
    workflow_id = forwarder_workflow_id(settings.temporal_task_queue)
    await client.start_workflow(
        InboundForwarderWorkflow.run,
        forwarder_input(settings),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    log.info("inbound forwarder %s running", workflow_id)


def long_lived_workflow_ids(settings: Settings) -> set[str]:
    return {forwarder_workflow_id(settings.temporal_task_queue)}
