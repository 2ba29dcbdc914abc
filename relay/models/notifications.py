"""Notifications: every message and its fate, the provider events that decided it, the devices
push goes to, and the suppression list.

`notifications` is also the send queue (an outbox, as the outgoing webhooks' deliveries):
a route writes a PENDING row and makes no Temporal call; the send pump claims due rows
under a lease, sends them and records the result. A row's content (subject, body,
template data, attachments) is sealed with the keyring; its recipient is kept readable,
because suppressions and the provider-id lookup match on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime
from relay.notifications.contracts import Channel, NotificationStatus


class Notification(SQLModel, table=True):
    """One message on one channel, or (channel None, `channels` set) a multi-channel
    notification whose workflow sends one message per channel in turn (`parent_id`)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_batch", "batch_id", "batch_chunk"),
        Index("ix_notifications_user_created", "user_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    channel: Channel | None = Field(default=None, sa_type=String(16))
    # A multi-channel notification's channels, in order (its own row is never sent).
    channels: list[str] | None = Field(default=None, sa_column=Column(JSONType))
    parent_id: str | None = Field(default=None, max_length=64, index=True)
    status: NotificationStatus = Field(default=NotificationStatus.PENDING, sa_type=String(16))
    provider: str | None = Field(default=None, max_length=16)
    provider_message_id: str | None = Field(default=None, max_length=255, index=True)
    user_id: str | None = Field(default=None, max_length=255)
    to_address: str | None = Field(default=None, max_length=320, index=True)
    content: str = Field(sa_column=Column(Text, nullable=False))  # sealed JSON
    critical: bool = False
    idempotency_key: str | None = Field(default=None, max_length=255, unique=True)
    # sha256 of what the request asked for: a key reused for another request is a 409.
    request_hash: str | None = Field(default=None, max_length=64)
    # Bulk email: recipients of one SendGrid request share (batch_id, batch_chunk).
    batch_id: str | None = Field(default=None, max_length=64)
    batch_chunk: int | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    # Push: per-token results and the tokens removed; bulk: nothing extra.
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    final_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class NotificationEvent(SQLModel, table=True):
    """Everything that happened to a notification, in the order Relay learned it: its
    sends and every provider callback (kept even when it did not move the status)."""

    __tablename__ = "notification_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_notification_events_provider_event"),
    )

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(max_length=64, index=True)
    provider: str = Field(max_length=16)
    event_id: str = Field(max_length=255)
    event: str = Field(max_length=64)
    status: str | None = Field(default=None, max_length=16)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    occurred_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class Device(SQLModel, table=True):
    """A push token of a user's device (POST /v1/devices); removed when FCM reports it dead."""

    __tablename__ = "devices"

    token: str = Field(primary_key=True, max_length=2048)
    user_id: str = Field(max_length=255, index=True)
    platform: str = Field(max_length=16)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class Suppression(SQLModel, table=True):
    """An address or number Relay does not send to (bounces, spam reports, unsubscribes,
    STOP replies), unless a send is marked critical."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("channel", "address", name="uq_suppressions_channel_address"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=320)
    reason: str = Field(max_length=32)
    source: str | None = Field(default=None, max_length=64)  # provider, or "api"
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )


class Verification(SQLModel, table=True):
    """Where a verification's codes go. The id is a keyed hash of the destination, so one
    destination has one verification workflow (its limits count per destination); the
    destination itself is sealed, so it never crosses Temporal."""

    __tablename__ = "verifications"

    id: str = Field(primary_key=True, max_length=64)
    channel: Channel = Field(sa_type=String(16))
    destination: str = Field(sa_column=Column(Text, nullable=False))  # sealed
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
