"""Group commit for the inbox: concurrent provider deliveries share one insert transaction.

Each request still answers only after its event is committed (`record_many` returns
after the commit). While one batch is written, the deliveries that arrive queue up and
are written together next, so under load the API makes one write transaction per batch
instead of one per event (far less write-lock contention on SQLite, fewer fsyncs on
PostgreSQL); when idle an event is written at once, alone. A database that fails the
batch fails every request of it (503: the provider retries); a value the database
refuses in one event (a NUL character on PostgreSQL) fails that event's request alone.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.inbound.repository import Incoming, Recorded, record_many

MAX_BATCH = 128


class GroupRecorder:
    def __init__(self, engine: Engine, keyring: Keyring, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._keyring = keyring
        self._max_batch = max_batch
        self._pending: list[tuple[Incoming, asyncio.Future[Recorded]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, incoming: Incoming) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((incoming, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await asyncio.to_thread(
                    record_many, self._engine, self._keyring, [incoming for incoming, _ in batch]
                )
            except Exception as exc:  # every waiting request gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):  # this event alone was refused
                    future.set_exception(result)
                else:
                    future.set_result(result)
