"""Platform tables: API keys, codec sessions and the provider-call idempotency ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, String, Uuid
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 hash is stored; `prefix` helps an operator spot it.

    `scopes` is what the key may do, space-separated (`relay.api_keys.Scope`): keys
    created before scopes existed were given `admin` by migration 0004.
    """

    __tablename__ = "api_keys"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=100)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    scopes: str = Field(default="app", sa_type=String(200))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class CodecSession(SQLModel, table=True):
    """A browser's codec session (`/codec/session`): the cookie holds a random token and
    only its SHA-256 hash is stored. Usable on /codec only, until `expires_at`, while
    neither it nor the API key that opened it is revoked."""

    __tablename__ = "codec_sessions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: str = Field(unique=True, max_length=64)
    api_key_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class ProviderCallStatus(StrEnum):
    RESERVED = "RESERVED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


class ProviderCall(SQLModel, table=True):
    """One side effect at a provider, keyed by a business idempotency key.

    See `relay.ledger` for the protocol (reserve, call, record).
    """

    __tablename__ = "provider_calls"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=255)
    provider: str = Field(max_length=64, index=True)
    operation: str = Field(max_length=100)
    # Stored as plain strings, not database enums: adding a status needs no migration.
    status: ProviderCallStatus = Field(default=ProviderCallStatus.RESERVED, sa_type=String(16))
    attempts: int = 1
    result: Any = Field(default=None, sa_column=Column(JSONType))
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    reserved_until: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
