"""Database helpers shared by the OAuth activities and routes (synchronous; call them
with `asyncio.to_thread` from async code)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from relay.db import utcnow
from relay.models.oauth import (
    Integration,
    IntegrationStatus,
    IntegrationSyncLog,
    SyncAction,
    SyncStatus,
)
from relay.webhooks.publish import PublishResult, publish_event

EVENT_CONNECTED = "integration.connected"
EVENT_DISCONNECTED = "integration.disconnected"
EVENT_ERROR = "integration.error"
ERROR_LIMIT = 1000


def write_sync_log(
    session: Session,
    integration_id: uuid.UUID,
    action: SyncAction,
    status: SyncStatus,
    *,
    error: str | None = None,
    meta: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> IntegrationSyncLog:
    now = utcnow()
    row = IntegrationSyncLog(
        integration_id=integration_id,
        action=action.value,
        resource_type="account" if action == SyncAction.ACCOUNT_LOOKUP else "oauth_token",
        status=status,
        items_processed=1 if status == SyncStatus.COMPLETED else 0,
        items_failed=1 if status == SyncStatus.FAILED else 0,
        error=error[:ERROR_LIMIT] if error else None,
        meta=meta or {},
        started_at=started_at or now,
        completed_at=now,
    )
    session.add(row)
    return row


def log_sync(
    engine: Engine,
    integration_id: uuid.UUID,
    action: SyncAction,
    status: SyncStatus,
    **kwargs: Any,
) -> None:
    with Session(engine) as session:
        write_sync_log(session, integration_id, action, status, **kwargs)
        session.commit()


def event_data(integration: Integration) -> dict[str, Any]:
    """What integration.* events carry: ids and status, never a token."""
    return {
        "integrationId": str(integration.id),
        "userId": integration.user_id,
        "organizationId": integration.organization_id,
        "provider": integration.provider,
        "name": integration.name,
        "status": integration.status.value
        if isinstance(integration.status, IntegrationStatus)
        else str(integration.status),
        "scope": list(integration.scope or []),
        "lastError": integration.last_error,
    }


def publish(
    engine: Engine, event_type: str, integration: Integration, *, key: str
) -> PublishResult:
    return publish_event(engine, event_type, event_data(integration), idempotency_key=key)
