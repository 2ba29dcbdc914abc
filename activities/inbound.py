"""Forwarding recorded provider events to their workflows: the forwarder's pump.

The route that records an event forwards it at once; this pump forwards whatever is
still PENDING after that (Temporal was down, the API died between recording and
forwarding, an operator replayed it). Guarantees:
- every PENDING event whose lease ran out is claimed and signal-with-started, oldest
  first, until Temporal accepts it (at least once; workflows dedupe on the event id);
- a claim is a lease, so pumps on several workers, or a pump and a route, never
  forward one event at once; a dead pump's rows come back when its lease ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client

from relay.db import utcnow
from relay.inbound import repository
from relay.inbound.contracts import ForwardPumpInput, ForwardPumpResult
from relay.inbound.forward import forward
from relay.settings import Settings
from relay.worker_context import WorkerContext

# Events forwarded concurrently by one pump.
FORWARD_CONCURRENCY = 16


class InboundActivities:
    """The inbox pump, over the worker's database engine and Temporal client."""

    def __init__(self, *, settings: Settings, engine: Engine, client: Client) -> None:
        self._settings = settings
        self._engine = engine
        self._client = client

    @classmethod
    def from_context(cls, context: WorkerContext) -> InboundActivities:
        return cls(settings=context.settings, engine=context.engine, client=context.client)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.forward_pending]

    @activity.defn
    async def forward_pending(self, params: ForwardPumpInput) -> ForwardPumpResult:
        """Claim PENDING events and signal-with-start them, for `budget_seconds`
        (heartbeating); an event Temporal refuses is released and claimed again later."""
        result = ForwardPumpResult()
        deadline = time.monotonic() + params.budget_seconds
        lease = timedelta(seconds=params.lease_seconds)
        limit = asyncio.Semaphore(FORWARD_CONCURRENCY)
        task_queue = self._settings.temporal_task_queue

        async def one(claimed: repository.Claimed) -> bool:
            async with limit:
                return await forward(self._engine, self._client, task_queue, claimed)

        while time.monotonic() < deadline and not activity.is_worker_shutdown():
            activity.heartbeat()
            claimed = await asyncio.to_thread(
                repository.claim_pending,
                self._engine,
                now=utcnow(),
                lease=lease,
                limit=params.batch_size,
            )
            if not claimed:
                await asyncio.sleep(params.poll_seconds)
                continue
            outcomes = await asyncio.gather(*(one(c) for c in claimed))
            result.forwarded += sum(outcomes)
            failed = len(outcomes) - sum(outcomes)
            result.failed += failed
            if failed:
                # Temporal refused or is unreachable: wait before trying again.
                await asyncio.sleep(params.poll_seconds)
        return result


ACTIVITIES = InboundActivities
