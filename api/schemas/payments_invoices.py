"""Invoices on the wire (camelCase). Amounts are integers in the currency's minor unit,
validated as payments' are (`api.schemas.payments`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from api.envelope import ApiModel
from api.schemas.payments import MAX_AMOUNT
from relay.db import as_utc
from relay.payments.contracts import DEFAULT_DAYS_UNTIL_DUE, InvoiceView

# Stripe's ceiling for the lines of one invoice.
MAX_ITEMS = 250


class InvoiceItemIn(ApiModel):
    description: str = Field(min_length=1, max_length=500)
    amount: StrictInt = Field(
        gt=0, le=MAX_AMOUNT, description="Per unit, in minor units (cents).", examples=[5000]
    )
    quantity: StrictInt = Field(default=1, ge=1, le=10_000)


class InvoiceCreate(ApiModel):
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Invoice the Stripe customer Relay keeps for this user (billing's).",
    )
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    items: list[InvoiceItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    currency: str = Field(
        pattern=r"^[A-Za-z]{3}$", description="ISO 4217, three letters.", examples=["usd"]
    )
    days_until_due: StrictInt = Field(default=DEFAULT_DAYS_UNTIL_DUE, ge=1, le=365)
    auto_send: StrictBool = Field(
        default=False, description="Have Stripe email the invoice to the customer."
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("currency")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _one_customer(self) -> InvoiceCreate:
        if (self.user_id is None) == (self.customer_id is None):
            raise ValueError("give exactly one of userId and customerId")
        if sum(item.amount * item.quantity for item in self.items) > MAX_AMOUNT:
            raise ValueError(f"the invoice's total is at most {MAX_AMOUNT}")
        return self


class Invoice(ApiModel):
    id: str
    status: str | None = Field(
        default=None, description="Stripe's: draft, open, paid, void or uncollectible."
    )
    user_id: str | None = None
    customer_id: str | None = None
    stripe_invoice_id: str | None = None
    currency: str
    amount_due: int = 0
    amount_paid: int = 0
    number: str | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    due_date: datetime | None = None
    sent: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


def invoice_view_fields(view: InvoiceView) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "user_id": view.user_id,
        "customer_id": view.stripe_customer_id,
        "stripe_invoice_id": view.stripe_invoice_id,
        "currency": view.currency,
        "amount_due": view.amount_due,
        "amount_paid": view.amount_paid,
        "number": view.number,
        "hosted_invoice_url": view.hosted_invoice_url,
        "invoice_pdf": view.invoice_pdf,
        "due_date": view.due_date,
        "sent": view.sent,
        "created_at": view.created_at,
    }


def invoice_row_fields(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "status": row.status,
        "user_id": row.user_id,
        "customer_id": row.stripe_customer_id,
        "stripe_invoice_id": row.stripe_invoice_id,
        "currency": row.currency,
        "amount_due": row.amount_due,
        "amount_paid": row.amount_paid,
        "number": row.number,
        "hosted_invoice_url": row.hosted_invoice_url,
        "invoice_pdf": row.invoice_pdf,
        "due_date": as_utc(row.due_date) if row.due_date else None,
        "sent": row.sent,
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }
