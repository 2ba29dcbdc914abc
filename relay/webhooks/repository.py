"""The webhook routes' database reads and writes: endpoints, their deliveries and attempts.

Synchronous (the API runs them with `asyncio.to_thread`). The outbox (claims, outcomes,
disabling, recovery) and publishing stay in `outbox` and `publish`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select, update
from sqlalchemy.engine import Engine

from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import WebhookAttempt, WebhookEndpoint
from relay.webhooks import outbox
from relay.webhooks.contracts import DeliveryStatus
from relay.webhooks.publish import deliveries_table, endpoints_table

E = endpoints_table
D = deliveries_table
A = WebhookAttempt.__table__  # type: ignore[attr-defined]


# --- endpoints ------------------------------------------------------------------------------


def load_endpoint(engine: Engine, endpoint_id: uuid.UUID) -> Row[Any]:
    """An endpoint that is not deleted, or WEBHOOK_NOT_FOUND."""
    with engine.connect() as connection:
        row = connection.execute(
            select(E).where(E.c.id == endpoint_id, E.c.deleted_at.is_(None))
        ).first()
    if row is None:
        raise RelayError(ErrorCode.WEBHOOK_NOT_FOUND, "no webhook endpoint with that id")
    return row


def endpoint_deleted(engine: Engine, endpoint_id: uuid.UUID) -> bool:
    with engine.connect() as connection:
        deleted = connection.execute(
            select(E.c.deleted_at).where(E.c.id == endpoint_id)
        ).scalar_one_or_none()
    return deleted is not None


def endpoints_query(
    *, is_active: bool | None = None, integration_id: uuid.UUID | None = None
) -> Select[Any]:
    """Endpoints that are not deleted, filtered (a select over `endpoints_table` to page)."""
    query = select(E).where(E.c.deleted_at.is_(None))
    if is_active is not None:
        query = query.where(E.c.is_active.is_(is_active))
    if integration_id is not None:
        query = query.where(E.c.integration_id == integration_id)
    return query


def insert_endpoint(engine: Engine, endpoint: WebhookEndpoint) -> None:
    values = endpoint.model_dump()
    values["metadata"] = values.pop("meta")
    with engine.begin() as connection:
        connection.execute(E.insert().values(**values))


def update_endpoint(
    engine: Engine,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    is_active: bool | None,
    now: datetime,
) -> Row[Any]:
    """Apply `changes` (column values); `is_active` True re-enables the endpoint and clears
    its failure clock, False disables it and ends its waiting deliveries as FAILED. Returns
    the endpoint as it now is."""
    changes = dict(changes)
    with engine.begin() as connection:
        if is_active is True:
            changes.update(
                is_active=True, failing_since=None, disabled_at=None, disabled_reason=None
            )
        if changes:
            connection.execute(
                update(E).where(E.c.id == endpoint_id).values(**changes, updated_at=now)
            )
        if is_active is False:
            outbox.disable_endpoint(
                connection, endpoint_id, "disabled through the API", now=now, publish=False
            )
        return connection.execute(select(E).where(E.c.id == endpoint_id)).one()


def delete_endpoint(engine: Engine, endpoint_id: uuid.UUID, *, now: datetime) -> None:
    """Soft-delete: waiting deliveries end as FAILED, the secrets and headers are dropped,
    the delivery history stays."""
    with engine.begin() as connection:
        outbox.disable_endpoint(connection, endpoint_id, "deleted", now=now, publish=False)
        connection.execute(
            update(E)
            .where(E.c.id == endpoint_id)
            .values(
                deleted_at=now,
                updated_at=now,
                is_active=False,
                secret="",
                old_secrets=[],
                headers={},
            )
        )


def store_secrets(
    engine: Engine,
    endpoint_id: uuid.UUID,
    *,
    secret: str,
    old_secrets: list[dict[str, str]],
    now: datetime,
) -> None:
    """A rotation's result: the new sealed secret and the ones that keep signing."""
    with engine.begin() as connection:
        connection.execute(
            update(E)
            .where(E.c.id == endpoint_id)
            .values(secret=secret, old_secrets=old_secrets, updated_at=now)
        )


# --- deliveries -----------------------------------------------------------------------------


def deliveries_query(
    endpoint_id: uuid.UUID,
    *,
    status: DeliveryStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """An endpoint's deliveries, filtered (a select over `deliveries_table` to page)."""
    query = select(D).where(D.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(D.c.status == status.value)
    if since is not None:
        query = query.where(D.c.created_at >= since)
    if until is not None:
        query = query.where(D.c.created_at < until)
    return query


def find_delivery(engine: Engine, delivery_id: uuid.UUID) -> tuple[Row[Any], list[Row[Any]]]:
    """A delivery and its attempts in order, or DELIVERY_NOT_FOUND."""
    with engine.connect() as connection:
        row = connection.execute(select(D).where(D.c.id == delivery_id)).first()
        if row is None:
            raise RelayError(ErrorCode.DELIVERY_NOT_FOUND, "no delivery with that id")
        attempts = list(
            connection.execute(
                select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt)
            )
        )
    return row, attempts
