"""Inbound provider webhooks: the inbox of every event a provider sent and Relay accepted.

One row per (provider, event id), written before the provider gets its 2xx; the
payload is sealed with the keyring. The row is the durable half of at-least-once
forwarding: it stays PENDING until Temporal accepted its signal (see docs/inbound.md).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.inbound.contracts import InboundStatus
from relay.models.types import JSONType, UTCDateTime


class InboundEvent(SQLModel, table=True):
    """One provider event. `target` is where its capability forwards it (None: nowhere);
    `claimed_until` is the lease of whoever is forwarding it (the route that recorded it,
    or the forwarder's pump), so two forwarders never race on one row."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_inbound_events_provider_event"),
        Index("ix_inbound_events_status_claimed", "status", "claimed_until"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    provider: str = Field(max_length=32, index=True)
    event_id: str = Field(max_length=255)
    type: str = Field(max_length=200, index=True)
    object_id: str | None = Field(default=None, max_length=255)
    status: InboundStatus = Field(default=InboundStatus.PENDING, sa_type=String(16))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    target: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    attempts: int = 0
    replays: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    forwarded_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class InboundCursor(SQLModel, table=True):
    """How far reconciliation has read a provider's own list of events: the `created`
    (epoch seconds) of the newest event it has seen. Each run re-reads an overlap before
    it, since whole-second watermarks tie (stripe/sync-engine #268); ids dedupe."""

    __tablename__ = "inbound_cursors"

    provider: str = Field(primary_key=True, max_length=32)
    watermark: int = Field(sa_type=BigInteger)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
