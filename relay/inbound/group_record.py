"""Group commit for the inbox: concurrent provider deliveries share one insert transaction
(relay.group_commit).

Each request still answers only after its event is committed (`record_many` returns after
the commit). A database that fails the batch fails every request of it (503: the provider
retries); a value the database refuses in one event (a NUL character on PostgreSQL) fails
that event's request alone.
"""

from __future__ import annotations

from functools import partial

from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.group_commit import GroupCommit
from relay.inbound.repository import Incoming, Recorded, record_many

MAX_BATCH = 128


class GroupRecorder(GroupCommit[Incoming, Recorded]):
    def __init__(self, engine: Engine, keyring: Keyring, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(partial(record_many, engine, keyring), max_batch=max_batch)

    async def record(self, incoming: Incoming) -> Recorded:
        return await self.submit(incoming)
