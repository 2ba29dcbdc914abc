"""OAuth connection tables.

integrations                    one connection of an application's user to a provider;
                                never a token (the API can serialise it without risk)
integration_credentials         the tokens and the token response's other fields, sealed
                                with the Keyring (AES-256-GCM), one row per integration,
                                with the key id for rotation
oauth_states                    one authorization attempt: the state only as a SHA-256
                                hash, single use, 10 minutes; the PKCE verifier and the
                                code (between callback and exchange) sealed; with
                                requireConfirmation, the confirmation code's SHA-256
integration_sync_logs           every token exchange, refresh, revocation and lookup
integration_credential_access   every time an application read a token
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, String, Text, Uuid
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime
from relay.oauth.contracts import IntegrationStatus


class SyncStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SyncAction(StrEnum):
    TOKEN_EXCHANGE = "token_exchange"  # noqa: S105 (a name, not a secret)
    TOKEN_REFRESH = "token_refresh"  # noqa: S105 (a name, not a secret)
    TOKEN_REVOCATION = "token_revocation"  # noqa: S105 (a name, not a secret)
    ACCOUNT_LOOKUP = "account_lookup"


def _integration_fk(*, index: bool = False) -> Any:
    return Column(
        Uuid, ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False, index=index
    )


class Integration(SQLModel, table=True):
    __tablename__ = "integrations"
    __table_args__ = (Index("ix_integrations_user_provider", "user_id", "provider"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(max_length=255, index=True)
    organization_id: str | None = Field(default=None, max_length=255, index=True)
    provider: str = Field(max_length=64, index=True)
    name: str | None = Field(default=None, max_length=255)
    is_active: bool = True
    status: IntegrationStatus = Field(default=IntegrationStatus.PENDING, sa_type=String(32))
    token_type: str | None = Field(default=None, max_length=40)
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    scope: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    # `metadata` is SQLAlchemy's; the column keeps the seed's name.
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    connection_config: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    # The token response's fields the catalog's `public_extras` names (Salesforce's
    # instance_url, Slack's team); the rest is sealed in integration_credentials.extras.
    provider_data: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    last_sync_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_error: str | None = Field(default=None, max_length=1000)
    connected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    disconnected_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class IntegrationCredential(SQLModel, table=True):
    """Sealed tokens (`kid:base64(nonce+ciphertext)`), bound to the row by their AAD."""

    __tablename__ = "integration_credentials"

    integration_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True)
    )
    access_token: str = Field(sa_column=Column(Text, nullable=False))
    refresh_token: str | None = Field(default=None, sa_column=Column(Text))
    # The token response's fields besides the tokens (JSON; Slack's incoming_webhook.url,
    # Discord's webhook), served only by GET …/credentials.
    extras: str | None = Field(default=None, sa_column=Column(Text))
    # The key every sealed column of the row is sealed with: `relay keys rotate-tokens` re-seals the rest.
    key_id: str = Field(max_length=64, index=True)
    # Bumped on every token change (not on re-encryption): the writer's optimistic check.
    version: int = 1
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class OAuthState(SQLModel, table=True):
    __tablename__ = "oauth_states"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    state_hash: str = Field(max_length=64, unique=True)
    integration_id: uuid.UUID = Field(sa_column=_integration_fk(index=True))
    provider: str = Field(max_length=64)
    user_id: str = Field(max_length=255)
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))  # the application's
    callback_url: str = Field(sa_column=Column(Text, nullable=False))  # Relay's, sent upstream
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    code_verifier: str | None = Field(default=None, sa_column=Column(Text))
    code: str | None = Field(default=None, sa_column=Column(Text))
    provider_error: str | None = Field(default=None, max_length=500)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    exchanged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # requireConfirmation (connection fixation, RFC 9700): the callback stores the SHA-256
    # of a one-time code it sends to the application, which must present it in time.
    require_confirmation: bool = False
    confirmation_hash: str | None = Field(default=None, max_length=64)
    confirmation_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    confirmation_attempts: int = 0
    confirmed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class IntegrationSyncLog(SQLModel, table=True):
    __tablename__ = "integration_sync_logs"
    __table_args__ = (
        Index("ix_integration_sync_logs_integration_started", "integration_id", "started_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    integration_id: uuid.UUID = Field(sa_column=_integration_fk())
    action: str = Field(max_length=64)
    resource_type: str | None = Field(default=None, max_length=64)
    resource_id: str | None = Field(default=None, max_length=255)
    status: SyncStatus = Field(default=SyncStatus.COMPLETED, sa_type=String(16))
    items_processed: int = 0
    items_failed: int = 0
    error: str | None = Field(default=None, max_length=1000)
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class IntegrationCredentialAccess(SQLModel, table=True):
    __tablename__ = "integration_credential_access"
    __table_args__ = (
        Index("ix_integration_credential_access_integration", "integration_id", "accessed_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    integration_id: uuid.UUID = Field(sa_column=_integration_fk())
    api_key_id: uuid.UUID | None = None
    refreshed: bool = False
    client_address: str | None = Field(default=None, max_length=64)
    accessed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
