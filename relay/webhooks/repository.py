"""The webhook routes' database reads and writes: endpoints, their deliveries and attempts.

Synchronous (the API runs them with `asyncio.to_thread`). The outbox (claims, outcomes,
disabling, recovery) and publishing stay in `outbox` and `publish`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select, update
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import WebhookAttempt, WebhookEndpoint
from relay.webhooks import outbox
from relay.webhooks.contracts import DeliveryStatus
from relay.webhooks.publish import deliveries_table, endpoints_table
from relay.webhooks.signing import Rotation, rotate

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


# A rotation that keeps losing the compare-and-set to other rotations of the same endpoint
# gives up (409 CONFLICT) after this many reads. Each lost round means another rotation was
# applied, so only that many truly simultaneous rotations of one endpoint can exhaust it.
ROTATION_ATTEMPTS = 32


@dataclass(frozen=True)
class AppliedRotation:
    rotation: Rotation
    version: int  # the endpoint's `secret_version` this rotation wrote


def rotate_secret(
    engine: Engine,
    keyring: Keyring,
    endpoint_id: uuid.UUID,
    *,
    expire_previous: bool,
    now: datetime,
) -> AppliedRotation:
    """A new secret for an endpoint that is not deleted, or WEBHOOK_NOT_FOUND.

    Read the secrets and their version, build the rotation on them, and write it only
    where the version is still the one read (compare-and-set); when another rotation got
    there first, read again and rebuild on top of it. On PostgreSQL the read also takes
    the row lock (`FOR UPDATE`), so concurrent rotations queue instead of retrying; SQLite
    has no row locks (the clause is left out) and relies on the compare-and-set alone.
    Either way concurrent rotations apply one after another: none loses another's secret,
    and an `expire_previous` rotation cannot be undone by one that read the row before it.
    """
    for _ in range(ROTATION_ATTEMPTS):
        with engine.begin() as connection:
            row = connection.execute(
                select(E.c.secret, E.c.old_secrets, E.c.secret_version)
                .where(E.c.id == endpoint_id, E.c.deleted_at.is_(None))
                .with_for_update()
            ).first()
            if row is None:
                raise RelayError(ErrorCode.WEBHOOK_NOT_FOUND, "no webhook endpoint with that id")
            rotation = rotate(
                keyring,
                endpoint_id,
                row.secret,
                list(row.old_secrets or []),
                now,
                expire_previous=expire_previous,
            )
            version = row.secret_version + 1
            written = connection.execute(
                update(E)
                .where(
                    E.c.id == endpoint_id,
                    E.c.deleted_at.is_(None),
                    E.c.secret_version == row.secret_version,
                )
                .values(
                    secret=rotation.sealed,
                    old_secrets=rotation.old_secrets,
                    secret_version=version,
                    updated_at=now,
                )
            )
            if written.rowcount == 1:
                return AppliedRotation(rotation, version)
    raise RelayError(ErrorCode.CONFLICT, "the secret is being rotated concurrently; try again")


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
