"""Publishing: each publication, its targets (one per connection it goes to), and the
client-side rate-limit windows every worker shares.

`publications` and `publication_targets` are the read model the routes answer from; the
publication's workflow (`publication-{id}`, the single writer once the route has inserted
them) updates them through its activities. A target names its integration by id, so a
disconnected connection's history stays readable. `publish_rate_windows` holds one fixed
window per provider and connection (relay.publishing.limits), updated atomically.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime
from relay.publishing.contracts import PublicationStatus, TargetStatus


class Publication(SQLModel, table=True):
    """One piece of content published to one or more platforms."""

    __tablename__ = "publications"
    __table_args__ = (
        UniqueConstraint("content_id", "idempotency_key", name="uq_publications_content_key"),
    )

    id: uuid.UUID = Field(primary_key=True)
    content_id: str = Field(max_length=255, index=True)
    user_id: str = Field(max_length=255, index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    link: str | None = Field(default=None, max_length=2000)
    media_file_ids: list[str] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    status: PublicationStatus = Field(
        default=PublicationStatus.SCHEDULED, sa_type=String(16), index=True
    )
    scheduled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class PublicationTarget(SQLModel, table=True):
    """One platform connection a publication goes to, and what became of it there."""

    __tablename__ = "publication_targets"
    __table_args__ = (
        UniqueConstraint(
            "publication_id", "integration_id", name="uq_publication_targets_integration"
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    publication_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("publications.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    integration_id: str = Field(max_length=64, index=True)
    provider: str = Field(max_length=64)
    position: int = 0
    status: TargetStatus = Field(default=TargetStatus.PENDING, sa_type=String(16))
    remote_id: str | None = Field(default=None, max_length=255)
    url: str | None = Field(default=None, max_length=2000)
    # What `status` polling needs (processing id, account handle): ids, never a token.
    remote: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    attempts: int = 0
    error_code: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=1000)
    skip_reason: str | None = Field(default=None, max_length=64)
    # Why the post is still up after an unpublish (the platform cannot delete, say).
    delete_error: str | None = Field(default=None, max_length=1000)
    published_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class PublishRateWindow(SQLModel, table=True):
    """A fixed window of publishes for one `provider:integration` key."""

    __tablename__ = "publish_rate_windows"

    key: str = Field(primary_key=True, max_length=200)
    # Epoch milliseconds: compared in SQL on SQLite and PostgreSQL alike.
    window_start_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    count: int = 0
