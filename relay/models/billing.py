"""Billing: the Stripe customer of each user, and each subscription Relay knows.

`billing_subscriptions` maps Relay's subscription id to Stripe's, so a Stripe event that
names only the Stripe id reaches the right workflow; the workflow (the single writer)
keeps the rest of the row as a read model for the list routes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from relay.billing.contracts import SubscriptionStatus
from relay.db import utcnow
from relay.models.types import UTCDateTime


class BillingCustomer(SQLModel, table=True):
    """One Stripe customer per user id, created on first use."""

    __tablename__ = "billing_customers"

    user_id: str = Field(primary_key=True, max_length=255)
    stripe_customer_id: str = Field(max_length=255, unique=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class BillingSubscription(SQLModel, table=True):
    """A subscription's read model, written only by its workflow's activities."""

    __tablename__ = "billing_subscriptions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=255, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255, index=True)
    stripe_subscription_id: str | None = Field(default=None, max_length=255, unique=True)
    status: SubscriptionStatus = Field(default=SubscriptionStatus.PENDING, sa_type=String(32))
    price_id: str | None = Field(default=None, max_length=255)
    quantity: int = 1
    entitled: bool = False
    cancel_at_period_end: bool = False
    trial_end: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    current_period_end: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    grace_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    decline_code: str | None = Field(default=None, max_length=100)
    pause_behavior: str | None = Field(default=None, max_length=32)
    pause_resumes_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
