"""Outgoing webhooks: endpoints, events, deliveries and every delivery attempt.

The deliveries table is the durable outbox: an event and one PENDING delivery per
subscribed endpoint are written in one transaction, and the dispatcher claims
due deliveries from here (see docs/webhooks.md).

    PENDING ──2xx──► DELIVERED
       │
       └─fail─► RETRYING ──2xx──► DELIVERED
                   │
                   └─retries exhausted / endpoint disabled─► FAILED
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime
from relay.webhooks.contracts import AttemptTrigger, DeliveryStatus


class WebhookEndpoint(SQLModel, table=True):
    """A customer URL subscribed to event types, with its signing secret (sealed).

    `secret` is the current `whsec_…` secret sealed with the keyring; `old_secrets`
    holds rotated-out secrets that keep signing until their `expiresAt`.
    `secret_version` counts rotations (1 for the first secret): a rotation writes only
    if it is still the version it read (compare-and-set), so concurrent rotations apply
    one after another and none loses another's secret.
    `failing_since` starts the disable clock at the first failed attempt after a
    success and is cleared by any success. `rate_window`/`rate_count` are the
    per-second attempt counter that enforces `rate_limit` across workers.
    """

    __tablename__ = "webhook_endpoints"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    headers: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    rate_limit: int | None = None
    integration_id: uuid.UUID | None = Field(default=None, index=True)
    meta: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSONType))
    secret: str = Field(max_length=500)
    old_secrets: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    secret_version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    is_active: bool = Field(default=True, index=True)
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    disabled_reason: str | None = Field(default=None, max_length=200)
    failing_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_triggered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Epoch seconds: BIGINT, since a 32-bit INTEGER overflows in 2038.
    rate_window: int | None = Field(default=None, sa_type=BigInteger)
    rate_count: int = 0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    deleted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class WebhookEvent(SQLModel, table=True):
    """One published event; `idempotency_key` is unique while it is fresh (24 h)."""

    __tablename__ = "webhook_events"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    type: str = Field(max_length=200, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=255, unique=True)
    endpoints: int = 0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the unit that is claimed, attempted and retried.

    `attempts` numbers every attempt (scheduled or manual); `scheduled_attempts`
    counts the scheduled ones, which is what the retry schedule is indexed by.
    `claimed_until` is the lease of the worker delivering it; `lease_owner` and
    `lease_attempt` name the activity attempt that holds it (a dispatcher shard's pump,
    `{workflow id}/{run id}/{activity id}`, and its Temporal attempt), so that the next
    attempt of the same activity takes back a lost attempt's leases at once instead of
    waiting for them to run out. `timer_held` says a
    dispatcher holds a Temporal timer for `next_attempt_at`, so the database sweep
    only takes it when well overdue.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    endpoint_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_endpoints.id"), nullable=False)
    )
    event_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_events.id"), nullable=False, index=True)
    )
    event_type: str = Field(max_length=200)
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=String(16))
    attempts: int = 0
    scheduled_attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    timer_held: bool = False
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    lease_owner: str | None = Field(default=None, max_length=300, index=True)
    lease_attempt: int | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class WebhookAttempt(SQLModel, table=True):
    """One HTTP attempt of a delivery, recorded before the next one is scheduled."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    delivery_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_deliveries.id"), nullable=False, index=True)
    )
    attempt: int
    trigger: AttemptTrigger = Field(sa_type=String(16))
    url: str = Field(max_length=2048)
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    duration_ms: int = 0
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, max_length=1000)
