"""Payments: each payment Relay knows, its read model.

`payments` maps Relay's payment id to Stripe's PaymentIntent id (or PayPal's order id),
so a provider event that names only the provider's object reaches the right workflow; the workflow (the single writer)
keeps the rest of the row for the routes. Amounts are in the currency's minor unit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, String
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.models.types import JSONType, UTCDateTime
from relay.payments.contracts import PaymentStatus


class Payment(SQLModel, table=True):
    """A payment's read model, written only by its workflow's activities."""

    __tablename__ = "payments"

    id: uuid.UUID = Field(primary_key=True)
    provider: str = Field(default="stripe", max_length=16)
    user_id: str | None = Field(default=None, max_length=255, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    stripe_payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    # PayPal: its order (routes PayPal's events that carry no custom_id), its capture and
    # the buyer's approval link while one is needed.
    paypal_order_id: str | None = Field(default=None, max_length=64, unique=True, index=True)
    paypal_capture_id: str | None = Field(default=None, max_length=64)
    approve_url: str | None = Field(default=None, max_length=2000)
    # The client's metadata (Stripe also holds it on the intent; PayPal orders have none).
    metadata_: dict[str, str] | None = Field(
        default=None, sa_column=Column("metadata", JSONType, nullable=True)
    )
    status: str | None = Field(default=None, max_length=32)
    relay_status: PaymentStatus = Field(
        default=PaymentStatus.PENDING, sa_type=String(32), index=True
    )
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    capture_method: str = Field(default="automatic", max_length=16)
    description: str | None = Field(default=None, max_length=1000)
    amount_captured: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    amount_refunded: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    refunds: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    next_action: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class Invoice(SQLModel, table=True):
    """A one-off Stripe invoice's read model, written only by its workflow's activities;
    maps Stripe's invoice id to Relay's, so Stripe's `invoice.*` events reach it."""

    __tablename__ = "invoices"

    id: uuid.UUID = Field(primary_key=True)
    user_id: str | None = Field(default=None, max_length=255, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    stripe_invoice_id: str | None = Field(default=None, max_length=255, unique=True, index=True)
    status: str | None = Field(default=None, max_length=16, index=True)
    currency: str = Field(max_length=3)
    amount_due: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    amount_paid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    number: str | None = Field(default=None, max_length=64)
    hosted_invoice_url: str | None = Field(default=None, max_length=2000)
    invoice_pdf: str | None = Field(default=None, max_length=2000)
    due_date: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    sent: bool = Field(default=False)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
