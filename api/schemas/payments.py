"""Payments on the wire (camelCase). Amounts are integers in the currency's minor unit
(cents): seed 001's `99.99` USD is `9999`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from api.envelope import ApiModel
from relay.db import as_utc
from relay.payments import paypal
from relay.payments.contracts import PaymentStatus, PaymentView, RefundView

# Stripe's ceiling for one charge in most currencies (99,999,999 minor units).
MAX_AMOUNT = 99_999_999
# Keys Relay sets on every PaymentIntent's metadata.
RESERVED_METADATA = frozenset({"relayPaymentId", "userId"})


class PaymentCreate(ApiModel):
    provider: Literal["stripe", "paypal"] = Field(
        default="stripe", description="`paypal` creates a PayPal order (Orders v2)."
    )
    amount: StrictInt = Field(
        gt=0, le=MAX_AMOUNT, description="Minor units (cents): 9999 is 99.99.", examples=[9999]
    )
    currency: str = Field(
        pattern=r"^[A-Za-z]{3}$", description="ISO 4217, three letters.", examples=["usd"]
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=255)
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=40)
    payment_method_id: str | None = Field(default=None, min_length=1, max_length=255)
    confirm: bool = False
    capture_method: Literal["automatic", "manual"] = "automatic"
    return_url: str | None = Field(default=None, max_length=2000)
    cancel_url: str | None = Field(
        default=None, max_length=2000, description="PayPal: where a buyer who cancels goes."
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("currency")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("metadata")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        taken = RESERVED_METADATA & value.keys()
        if taken:
            raise ValueError(f"{sorted(taken)} are set by Relay")
        return value

    @model_validator(mode="after")
    def _paypal(self) -> PaymentCreate:
        if self.provider != "paypal":
            return self
        # PayPal's buyer approves on PayPal's page and comes back to one of these.
        for name, value in (("returnUrl", self.return_url), ("cancelUrl", self.cancel_url)):
            if not value or not value.startswith(("http://", "https://")):
                raise ValueError(f"{name}: an http(s) URL is required for PayPal")
        for name, given in (
            ("paymentMethodId", self.payment_method_id),
            ("customerId", self.customer_id),
            ("confirm", self.confirm),
            ("captureMethod", self.capture_method != "automatic"),
        ):
            if given:
                raise ValueError(f"{name}: Stripe only; a PayPal buyer approves on PayPal")
        problem = paypal.amount_problem(self.amount, self.currency)
        if problem:
            raise ValueError(f"amount/currency: {problem}")
        return self


class PaymentConfirm(ApiModel):
    payment_method_id: str | None = Field(default=None, min_length=1, max_length=255)
    return_url: str | None = Field(default=None, max_length=2000)


class PaymentCapture(ApiModel):
    amount: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT)


class RefundCreate(ApiModel):
    amount: StrictInt | None = Field(
        default=None, gt=0, le=MAX_AMOUNT, description="Omitted: all that remains."
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None


class PaymentErrorOut(ApiModel):
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


class Refund(ApiModel):
    id: str
    amount: int
    status: str
    reason: str | None = None
    created: datetime | None = None


class Payment(ApiModel):
    id: str
    provider: str = "stripe"
    user_id: str | None = None
    status: str | None = Field(
        default=None,
        description="The provider's status: Stripe's PaymentIntent's, or PayPal's order's "
        "(`CAPTURE_` and the capture's once captured).",
    )
    relay_status: PaymentStatus
    amount: int
    currency: str
    capture_method: str | None = None
    amount_captured: int = 0
    amount_refunded: int = 0
    description: str | None = None
    client_secret: str | None = Field(
        default=None, description="Confirm on the client with it (answers to POST only)."
    )
    stripe_payment_intent_id: str | None = None
    stripe_customer_id: str | None = None
    paypal_order_id: str | None = None
    paypal_capture_id: str | None = None
    approve_url: str | None = Field(
        default=None, description="PayPal: send the buyer here to approve the order."
    )
    next_action: dict[str, Any] | None = None
    last_error: PaymentErrorOut | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    refunds: list[Refund] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RefundCreated(ApiModel):
    refund: Refund
    payment: Payment


def _refund(refund: RefundView) -> dict[str, Any]:
    return {
        "id": refund.id,
        "amount": refund.amount,
        "status": refund.status,
        "reason": refund.reason,
        "created": refund.created,
    }


def view_fields(view: PaymentView) -> dict[str, Any]:
    error = view.last_error
    return {
        "id": view.id,
        "provider": view.provider,
        "user_id": view.user_id,
        "status": view.status,
        "relay_status": view.relay_status,
        "amount": view.amount,
        "currency": view.currency,
        "capture_method": view.capture_method,
        "amount_captured": view.amount_captured,
        "amount_refunded": view.amount_refunded,
        "description": view.description,
        "client_secret": view.client_secret,
        "stripe_payment_intent_id": view.stripe_payment_intent_id,
        "stripe_customer_id": view.stripe_customer_id,
        "paypal_order_id": view.paypal_order_id,
        "paypal_capture_id": view.paypal_capture_id,
        "approve_url": view.approve_url,
        "next_action": view.next_action,
        "last_error": (
            {"code": error.code, "decline_code": error.decline_code, "message": error.message}
            if error
            else None
        ),
        "refunds": [_refund(r) for r in view.refunds],
        "metadata": view.metadata,
        "created_at": view.created_at,
    }


def row_fields(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "provider": row.provider,
        "user_id": row.user_id,
        "status": row.status,
        "relay_status": row.relay_status,
        "amount": row.amount,
        "currency": row.currency,
        "capture_method": row.capture_method,
        "amount_captured": row.amount_captured,
        "amount_refunded": row.amount_refunded,
        "description": row.description,
        "stripe_payment_intent_id": row.stripe_payment_intent_id,
        "stripe_customer_id": row.stripe_customer_id,
        "paypal_order_id": row.paypal_order_id,
        "paypal_capture_id": row.paypal_capture_id,
        "approve_url": row.approve_url,
        "next_action": row.next_action,
        "last_error": row.last_error,
        "refunds": list(row.refunds or []),
        "metadata": dict(row.metadata or {}),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }
