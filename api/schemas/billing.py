"""Billing on the wire: subscriptions (camelCase), and what /webhooks/stripe answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from api.envelope import ApiModel
from api.schemas.inbound import InboundAccepted
from relay.billing.contracts import SubscriptionStatus, SubscriptionView
from relay.db import as_utc

StripeEventAccepted = InboundAccepted


class SubscriptionCreate(ApiModel):
    user_id: str = Field(min_length=1, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    price_id: str = Field(min_length=1, max_length=255, examples=["price_1PqRsT"])
    quantity: int = Field(default=1, ge=1, le=10_000)
    trial_days: int | None = Field(default=None, ge=1, le=730)
    payment_method_id: str | None = Field(default=None, max_length=255)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=40)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class SubscriptionCancel(ApiModel):
    at_period_end: bool = True


class SubscriptionChange(ApiModel):
    price_id: str = Field(min_length=1, max_length=255)
    quantity: int | None = Field(default=None, ge=1, le=10_000)
    proration_behavior: Literal["create_prorations", "none", "always_invoice"] = "create_prorations"


class SubscriptionPause(ApiModel):
    behavior: Literal["keep_as_draft", "mark_uncollectible", "void"] = "void"
    resumes_at: datetime | None = None


class Subscription(ApiModel):
    id: str
    user_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    status: SubscriptionStatus
    entitled: bool
    price_id: str | None = None
    quantity: int | None = None
    trial_end: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    grace_until: datetime | None = None
    decline_code: str | None = None
    pause_behavior: str | None = Field(
        default=None,
        description="While payment collection is paused: keep_as_draft, mark_uncollectible "
        "or void.",
    )
    pause_resumes_at: datetime | None = Field(
        default=None, description="When a paused collection resumes on its own, if set."
    )
    client_secret: str | None = Field(
        default=None, description="Confirm the first payment on the client with it, when due."
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None


def view_fields(view: SubscriptionView) -> dict[str, Any]:
    return {
        "id": view.id,
        "user_id": view.user_id,
        "stripe_customer_id": view.stripe_customer_id,
        "stripe_subscription_id": view.stripe_subscription_id,
        "status": view.status,
        "entitled": view.entitled,
        "price_id": view.price_id,
        "quantity": view.quantity,
        "trial_end": view.trial_end,
        "current_period_end": view.current_period_end,
        "cancel_at_period_end": view.cancel_at_period_end,
        "grace_until": view.grace_until,
        "decline_code": view.decline_code,
        "pause_behavior": view.pause_behavior,
        "pause_resumes_at": view.pause_resumes_at,
        "client_secret": view.client_secret,
    }


def row_fields(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "stripe_customer_id": row.stripe_customer_id,
        "stripe_subscription_id": row.stripe_subscription_id,
        "status": row.status,
        "entitled": row.entitled,
        "price_id": row.price_id,
        "quantity": row.quantity,
        "trial_end": as_utc(row.trial_end),
        "current_period_end": as_utc(row.current_period_end),
        "cancel_at_period_end": row.cancel_at_period_end,
        "grace_until": as_utc(row.grace_until),
        "decline_code": row.decline_code,
        "pause_behavior": row.pause_behavior,
        "pause_resumes_at": as_utc(row.pause_resumes_at),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }
