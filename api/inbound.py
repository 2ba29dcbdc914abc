"""What every provider's webhook route does once the event is verified: record it once in
the inbound inbox (group-committed, before the answer) and forward it at once to the
workflow its capability named; docs/inbound.md. Shared by the routes of each provider
(a route module may not import another)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine

from api.deps import forwarded_marks, group_recorder
from api.envelope import ok
from api.schemas.inbound import InboundAccepted
from relay.errors import RelayError
from relay.inbound import repository as inbox
from relay.inbound.contracts import ForwardTarget, InboundStatus
from relay.inbound.forward import forward
from relay.inbound.repository import Claimed
from relay.settings import Settings


async def accept_event(
    request: Request,
    engine: Engine,
    settings: Settings,
    *,
    provider: str,
    event_id: str,
    kind: str,
    payload: bytes,
    target: ForwardTarget | None,
    object_id: str | None,
) -> dict[str, Any]:
    """The route's answer for a verified event: FORWARDED when Temporal took its signal,
    PENDING when the forwarder will (Temporal down), IGNORED when no workflow takes it;
    a duplicate does nothing else. A database that cannot record it raises (503)."""
    recorded = await group_recorder(request).record(
        inbox.Incoming(
            provider=provider,
            event_id=event_id,
            type=kind,
            payload=payload,
            target=target,
            object_id=object_id,
        )
    )
    status = recorded.status
    if not recorded.duplicate and recorded.target is not None:
        claimed = Claimed(
            recorded.id,
            provider,
            event_id,
            kind,
            recorded.object_id,
            recorded.target,
            lease_until=recorded.lease_until,
        )
        try:
            client = await request.app.state.temporal.client()
        except RelayError:
            client = None
        marks = forwarded_marks(request)
        if await forward(engine, client, settings.temporal_task_queue, claimed, marks=marks):
            status = InboundStatus.FORWARDED
    data = {
        "id": recorded.id,
        "event_id": event_id,
        "duplicate": recorded.duplicate,
        "status": status,
    }
    return ok(InboundAccepted.model_validate(data))
