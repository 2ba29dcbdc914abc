"""Marking forwarded events FORWARDED off the request path: group commit in the API.

The route that recorded an event (committed before its 2xx) and whose signal Temporal
accepted does not wait for a second commit: it hands the row to `ForwardedMarks`, whose
background task writes the marks of every request that arrived meanwhile in one
transaction, a few milliseconds later. Nothing is weakened:

- the event itself is committed before the 2xx, as before;
- a mark that is never written (the API died first, the database refused the batch)
  leaves the row PENDING under the route's lease; when the lease runs out the forwarder
  claims it and signals it again, which the receiving workflow dedupes by event id;
- a mark applies only while the row still holds the lease the route took (`claimed_until`
  unchanged), so a late mark never overrides a replay, a release or a pump's claim.

Readers in the same process (`GET /v1/inbound-events`) call `flush()` first, so what the
API answered is what it lists.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime

from sqlalchemy.engine import Engine

from relay.db import utcnow
from relay.inbound import repository

log = logging.getLogger("relay.inbound")

# How long the writer waits for more marks before a write: marks are off the request
# path, so a few milliseconds buy larger batches (fewer commits) at no cost to a caller.
FLUSH_INTERVAL_SECONDS = 0.005
MAX_BATCH = 500


class ForwardedMarks:
    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = FLUSH_INTERVAL_SECONDS,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._max_batch = max_batch
        self._pending: list[tuple[uuid.UUID, datetime]] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, row_id: uuid.UUID, lease_until: datetime) -> None:
        """Queue the mark of a row whose signal Temporal accepted under this lease."""
        self._pending.append((row_id, lease_until))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Return once every mark queued before the call was written (or failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def _write(self) -> None:
        await asyncio.sleep(self._interval)
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await asyncio.to_thread(
                    repository.mark_forwarded_leased, self._engine, batch, now=utcnow()
                )
            except Exception:
                # The rows stay PENDING: the forwarder signals them again once the
                # route's lease runs out (workflows dedupe by event id).
                log.exception("could not mark %d inbound events FORWARDED", len(batch))
