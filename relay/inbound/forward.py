"""Forwarding one recorded event to its workflow: signal-with-start, by name.

The target was declared by the event's capability when the event was recorded
(`ForwardTarget`), so this module needs no capability code: it starts
`target.workflow_type` as `target.workflow_id` unless a run is open
(USE_EXISTING), and delivers `target.signal` with an `InboundEventSignal`. Temporal
applies the start and the signal atomically, so an event is never lost between them.
Forwarding is at least once (a route and a pump may both succeed after a timeout);
receiving workflows dedupe on the event id.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from relay.db import utcnow
from relay.inbound import repository
from relay.inbound.repository import Claimed

if TYPE_CHECKING:
    from relay.inbound.marks import ForwardedMarks

# A request from a provider must not hang on a Temporal that is down: after this the
# event stays PENDING for the forwarder.
FORWARD_RPC_TIMEOUT = timedelta(seconds=3)


async def signal_with_start(
    client: Client, task_queue: str, claimed: Claimed, *, rpc_timeout: timedelta | None = None
) -> None:
    target = claimed.target
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in sorted(target.search_attributes.items())
        ]
    )
    await client.start_workflow(
        target.workflow_type,
        target.start_arg,
        id=target.workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=target.signal,
        start_signal_args=[asdict(claimed.signal())],
        search_attributes=attributes,
        rpc_timeout=rpc_timeout or FORWARD_RPC_TIMEOUT,
    )


async def forward(
    engine: Engine,
    client: Client | None,
    task_queue: str,
    claimed: Claimed,
    *,
    rpc_timeout: timedelta | None = None,
    marks: ForwardedMarks | None = None,
) -> bool:
    """Forward one leased event and record the outcome; False leaves it PENDING (released)
    for the forwarder's pump. Never raises for an unreachable Temporal.

    With `marks` (the API's group commit) and the lease known, the FORWARDED mark is
    queued rather than written before returning: a mark that is lost leaves the row
    PENDING, and the forwarder signals it again when the lease runs out."""
    try:
        if client is None:
            raise RuntimeError("Temporal is not reachable")
        await signal_with_start(client, task_queue, claimed, rpc_timeout=rpc_timeout)
    except Exception as exc:
        await asyncio.to_thread(
            repository.release, engine, claimed.id, f"{type(exc).__name__}: {exc}", now=utcnow()
        )
        return False
    if marks is not None and claimed.lease_until is not None:
        marks.add(claimed.id, claimed.lease_until)
        return True
    await asyncio.to_thread(repository.mark_forwarded, engine, [claimed.id], now=utcnow())
    return True
