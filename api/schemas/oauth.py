"""OAuth connections on the wire: request and response models of the integration and
provider routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from api.envelope import ApiModel
from api.schemas.validation import check_metadata
from relay.models.oauth import IntegrationStatus

# A user or organization id of the application: opaque, URL-safe.
ID_PATTERN = r"^[A-Za-z0-9_.:@/+-]{1,200}$"


class InitiateRequest(ApiModel):
    user_id: str = Field(pattern=ID_PATTERN, examples=["7d0f3c1e-5d0e-4c55-9a55-1f4f2b8f7a10"])
    provider: str = Field(min_length=1, max_length=64, examples=["github"])
    redirect_uri: str = Field(
        min_length=1, max_length=2048, examples=["http://localhost:3000/integrations/done"]
    )
    scopes: list[str] | None = Field(
        default=None, max_length=100, description="Defaults to the catalog's default_scopes."
    )
    connection_config: dict[str, str] | None = Field(
        default=None, examples=[{"shop": "acme"}], description="Values the provider needs."
    )
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"source": "settings"}])
    organization_id: str | None = Field(default=None, pattern=ID_PATTERN)
    require_confirmation: bool | None = Field(
        default=None,
        description=(
            "Defence against connection fixation: the callback sends the application a "
            "one-time `relay_confirmation` code, and the connection stays "
            "PENDING_CONFIRMATION (its credentials refused) until the application, having "
            "checked its own session, posts the code to /v1/integrations/{id}/confirm. "
            "Defaults to OAUTH_REQUIRE_CONFIRMATION."
        ),
    )

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        for scope in value or []:
            if not scope or len(scope) > 200 or any(ch.isspace() for ch in scope):
                raise ValueError("each scope is 1 to 200 characters without whitespace")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


class InitiateResult(ApiModel):
    integration_id: uuid.UUID
    authorization_url: str
    state: str = Field(description="Single use, valid 10 minutes; Relay keeps only its hash.")
    expires_at: datetime
    require_confirmation: bool


class IntegrationPublic(ApiModel):
    id: uuid.UUID
    user_id: str
    organization_id: str | None
    provider: str
    name: str | None
    status: IntegrationStatus
    is_active: bool
    scope: list[str]
    token_type: str | None
    expires_at: datetime | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    connection_config: dict[str, str]
    provider_data: dict[str, Any]
    last_sync_at: datetime | None
    last_error: str | None
    connected_at: datetime | None
    disconnected_at: datetime | None
    created_at: datetime
    updated_at: datetime


class IntegrationUpdate(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    is_active: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


class Credentials(ApiModel):
    access_token: str
    token_type: str | None
    expires_at: datetime | None
    scope: list[str]
    extras: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Every other field of the provider's token response, kept sealed with the "
            "tokens (Slack's incoming_webhook.url, Discord's webhook); only the catalog's "
            "public_extras also appear, in the clear, as the integration's providerData."
        ),
    )


class ConfirmRequest(ApiModel):
    code: str = Field(
        min_length=1,
        max_length=200,
        description="The `relay_confirmation` parameter the callback added to redirectUri.",
    )


class RefreshResult(ApiModel):
    integration_id: uuid.UUID
    expires_at: datetime | None
    refreshed: bool


class SyncLogPublic(ApiModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    action: str
    resource_type: str | None
    resource_id: str | None
    status: str
    items_processed: int
    items_failed: int
    error: str | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    started_at: datetime
    completed_at: datetime | None


class UserIntegrationsDeleted(ApiModel):
    user_id: str
    disconnected: int
    integration_ids: list[uuid.UUID]


class ProviderPublic(ApiModel):
    key: str
    display_name: str
    auth_mode: str
    scopes: list[str]
    configured: bool
    connection_config: list[str]
