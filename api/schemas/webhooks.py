"""Outgoing webhooks on the wire: request and response models of the webhook, event and
delivery routes, and the helpers that turn database rows into them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field, StrictBool, field_validator

from api.envelope import ApiModel
from api.schemas.validation import check_metadata
from relay.crypto import Keyring
from relay.db import as_utc
from relay.models.webhooks import WebhookEndpoint
from relay.webhooks.contracts import AttemptTrigger, DeliveryStatus
from relay.webhooks.endpoints import masked, open_headers
from relay.webhooks.patterns import is_valid_pattern

MAX_PATTERNS = 50
MAX_RATE_LIMIT = 10_000


def check_patterns(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    if not events or len(events) > MAX_PATTERNS:
        raise ValueError(f"1 to {MAX_PATTERNS} event types or patterns")
    bad = [pattern for pattern in events if not is_valid_pattern(pattern)]
    if bad:
        raise ValueError(f"not an event type or pattern (order.created, order.*, *): {bad[0]!r}")
    return list(dict.fromkeys(events))


# --- webhook endpoints ------------------------------------------------------------------


class WebhookCreate(ApiModel):
    url: str = Field(max_length=2048, examples=["https://api.example.com/webhooks/relay"])
    events: list[str] = Field(examples=[["order.created", "order.*"]])
    description: str | None = Field(default=None, max_length=500)
    headers: dict[str, str] = Field(default_factory=dict, examples=[{"X-Team": "billing"}])
    rate_limit: int | None = Field(
        default=None, ge=1, le=MAX_RATE_LIMIT, description="Attempts per second, across workers."
    )
    integration_id: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None

    _patterns = field_validator("events")(check_patterns)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


class WebhookUpdate(ApiModel):
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    headers: dict[str, str] | None = None
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    metadata: dict[str, Any] | None = None
    is_active: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint and clears its failure clock"
    )

    _patterns = field_validator("events")(check_patterns)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(value)


class Webhook(ApiModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    headers: dict[str, str] = Field(description="Credential-like header values are masked.")
    rate_limit: int | None
    integration_id: uuid.UUID | None
    metadata: dict[str, Any] | None
    is_active: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    last_triggered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook):
    secret: str = Field(description="Shown only now; store it to verify signatures.")


class RotateSecretRequest(ApiModel):
    """The optional body of rotate-secret; no body (or `{}`) is a normal rotation."""

    model_config = ConfigDict(extra="forbid")

    expire_previous: StrictBool = Field(
        default=False,
        description="true after a leak: every earlier secret stops signing at once (no grace "
        "period), so the next delivery carries exactly one signature, made with the new secret.",
    )


class RotatedSecret(ApiModel):
    id: uuid.UUID
    secret: str
    previous_secret_expires_at: datetime = Field(
        description="Until then deliveries carry signatures with the old and the new secret "
        "(the time of the rotation when `previousSecretsExpired`)."
    )
    previous_secrets_expired: bool = Field(
        description="true when `expirePrevious` was set: no earlier secret signs any more."
    )
    secret_version: int = Field(
        description="Counts the endpoint's secrets (the first is 1); concurrent rotations are "
        "applied one after another, and the highest version returned is the current secret."
    )


class Deleted(ApiModel):
    id: uuid.UUID
    deleted: bool = True


class RecoverRequest(ApiModel):
    since: datetime = Field(description="Re-deliver every FAILED delivery created since then.")


class Recovered(ApiModel):
    endpoint_id: uuid.UUID
    requeued: int


# --- events ---------------------------------------------------------------------------------


class EventCreate(ApiModel):
    type: str = Field(
        max_length=200,
        examples=["order.created"],
        description="Dot-separated words: letters, digits, _ and -.",
    )
    data: dict[str, Any] = Field(examples=[{"orderId": "ord_123", "total": 4200}])
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The same key within 24 hours returns the first event; nothing is "
        "delivered again.",
    )


class EventAccepted(ApiModel):
    event_id: uuid.UUID
    endpoints: int = Field(description="How many endpoints the event is delivered to.")
    duplicate: bool = Field(description="True when the idempotency key was seen already.")


MAX_BATCH_EVENTS = 1000


class EventBatchCreate(ApiModel):
    # Each item is checked on its own (EventCreate), so one bad event gets its own error
    # in the answer instead of refusing the batch.
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_EVENTS,
        description="Up to 1,000 events, each `{type, data, idempotencyKey?}` as for "
        "POST /v1/events.",
    )


class EventRefused(ApiModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class EventBatchResult(ApiModel):
    index: int
    event_id: uuid.UUID | None = None
    endpoints: int | None = None
    duplicate: bool | None = None
    error: EventRefused | None = Field(
        default=None, description="Why this event was refused; nothing of it was stored."
    )


class EventBatchAccepted(ApiModel):
    accepted: int
    refused: int
    results: list[EventBatchResult] = Field(description="One per event, in request order.")


# --- deliveries and attempts ----------------------------------------------------------------


class Delivery(ApiModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    message_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Attempt(ApiModel):
    attempt: int
    trigger: AttemptTrigger
    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_body: str | None
    error: str | None
    url: str | None = None


class DeliveryDetail(Delivery):
    attempts: list[Attempt]


class ManualAttempt(Attempt):
    delivery_id: uuid.UUID
    status: DeliveryStatus


# --- rows to the wire -----------------------------------------------------------------------


def webhook_fields(row: Any, keyring: Keyring) -> dict[str, Any]:
    """A `Webhook`'s fields from an endpoint row (or a `WebhookEndpoint` not yet read back);
    custom header values are opened and credential-like ones masked."""
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "headers": masked(open_headers(keyring, row.id, row.headers)),
        "rate_limit": row.rate_limit,
        "integration_id": row.integration_id,
        "metadata": row.meta if isinstance(row, WebhookEndpoint) else row.metadata,
        "is_active": row.is_active,
        "disabled_at": as_utc(row.disabled_at),
        "disabled_reason": row.disabled_reason,
        "failing_since": as_utc(row.failing_since),
        "last_triggered_at": as_utc(row.last_triggered_at),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }


def delivery_fields(row: Any) -> dict[str, Any]:
    """A `Delivery`'s fields from a delivery row."""
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "message_id": f"msg_{row.id.hex}",
        "status": row.status,
        "attempt_count": row.attempts,
        "next_attempt_at": as_utc(row.next_attempt_at)
        if row.status == DeliveryStatus.RETRYING
        else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "delivered_at": as_utc(row.delivered_at),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }


def attempt_fields(row: Any) -> dict[str, Any]:
    """An `Attempt`'s fields from an attempt row."""
    return {
        "attempt": row.attempt,
        "trigger": row.trigger,
        "started_at": as_utc(row.started_at),
        "duration_ms": row.duration_ms,
        "status_code": row.status_code,
        "response_body": row.response_body,
        "error": row.error,
        "url": row.url,
    }
