"""Group commit for POST /v1/events: concurrent publishes share one transaction
(relay.group_commit). Each request still returns only after its event and deliveries
are committed."""

from __future__ import annotations

from functools import partial

from sqlalchemy.engine import Engine

from relay.group_commit import GroupCommit
from relay.webhooks.publish import EventRequest, PublishResult, publish_many

MAX_BATCH = 256


class GroupPublisher(GroupCommit[EventRequest, PublishResult]):
    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(partial(publish_many, engine), max_batch=max_batch)

    async def publish(self, request: EventRequest) -> PublishResult:
        return await self.submit(request)
