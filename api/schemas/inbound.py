"""Inbound provider events on the wire (GET /v1/inbound-events, replay)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from api.envelope import ApiModel
from relay.db import as_utc
from relay.inbound.contracts import InboundStatus


class InboundEvent(ApiModel):
    id: uuid.UUID
    provider: str
    event_id: str
    type: str
    object_id: str | None = None
    status: InboundStatus
    workflow_id: str | None = None
    attempts: int
    replays: int
    last_error: str | None = None
    created_at: datetime
    forwarded_at: datetime | None = None


class InboundAccepted(ApiModel):
    """What a provider's webhook route answers for an accepted event."""

    id: uuid.UUID
    event_id: str
    duplicate: bool
    status: InboundStatus


def inbound_fields(row: Any) -> dict[str, Any]:
    target = row.target or {}
    return {
        "id": row.id,
        "provider": row.provider,
        "event_id": row.event_id,
        "type": row.type,
        "object_id": row.object_id,
        "status": row.status,
        "workflow_id": target.get("workflow_id"),
        "attempts": row.attempts,
        "replays": row.replays,
        "last_error": row.last_error,
        "created_at": as_utc(row.created_at),
        "forwarded_at": as_utc(row.forwarded_at),
    }
