"""A payment's state, derived from the PaymentIntent Stripe holds: pure functions, no
Temporal, no I/O (the workflow calls them with what its activities read).

Relay's status from Stripe's:

| Stripe (intent)                                   | relayStatus                      |
|---------------------------------------------------|----------------------------------|
| requires_payment_method / requires_confirmation   | PENDING (FAILED after a decline) |
| requires_action                                   | REQUIRES_ACTION                  |
| requires_capture                                  | REQUIRES_CAPTURE                 |
| processing                                        | PROCESSING                       |
| succeeded                                         | SUCCEEDED, PARTIALLY_REFUNDED or REFUNDED by its refunds |
| canceled                                          | CANCELED (EXPIRED when Relay's expiry canceled it) |

PayPal's (`status` is the order's until captured, then `CAPTURE_<capture status>`):

| PayPal                                  | relayStatus                                  |
|-----------------------------------------|----------------------------------------------|
| CREATED / PAYER_ACTION_REQUIRED         | REQUIRES_ACTION (the buyer must approve)     |
| APPROVED                                | REQUIRES_CAPTURE (awaiting Relay's capture)  |
| any of those, Relay stopped tracking it | CANCELED (EXPIRED when the expiry did)       |
| VOIDED                                  | CANCELED                                     |
| CAPTURE_PENDING                         | PROCESSING                                   |
| CAPTURE_COMPLETED / _PARTIALLY_REFUNDED / _REFUNDED | SUCCEEDED, PARTIALLY_REFUNDED or REFUNDED by its refunds |
| CAPTURE_DENIED / CAPTURE_DECLINED / CAPTURE_FAILED | FAILED                        |
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from relay.payments.contracts import (
    AWAITING_PAYER,
    FINAL,
    PAYPAL,
    PAYPAL_AWAITING_PAYER,
    PAYPAL_CANCELABLE,
    REFUND_COUNTED,
    REFUND_IN_FLIGHT,
    REFUND_WINDOW_SECONDS,
    IntentSnapshot,
    PaymentEvent,
    PaymentStatus,
    PaymentView,
    RefundView,
)


def refunded(snap_or_view: IntentSnapshot | PaymentView) -> int:
    """What the succeeded refunds returned."""
    return sum(r.amount for r in snap_or_view.refunds if r.status == "succeeded")


def committed(view: PaymentView) -> int:
    """What refunds succeeded or in flight take from the captured amount."""
    return sum(r.amount for r in view.refunds if r.status in REFUND_COUNTED)


def remaining(view: PaymentView) -> int:
    """What may still be refunded."""
    return max(0, view.amount_captured - committed(view))


def refund_in_flight(view: PaymentView) -> bool:
    return any(r.status in REFUND_IN_FLIGHT for r in view.refunds)


def _by_refunds(snap: IntentSnapshot) -> PaymentStatus:
    back = refunded(snap)
    if back > 0 and back >= snap.amount_captured:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED if back > 0 else PaymentStatus.SUCCEEDED


def paypal_status(
    snap: IntentSnapshot, *, expired: bool = False, canceled: bool = False
) -> PaymentStatus:
    status = snap.status
    if status in PAYPAL_CANCELABLE and (canceled or expired):
        return PaymentStatus.EXPIRED if expired else PaymentStatus.CANCELED
    if status in PAYPAL_AWAITING_PAYER:
        return PaymentStatus.REQUIRES_ACTION
    if status == "APPROVED":
        return PaymentStatus.REQUIRES_CAPTURE
    if status == "VOIDED":
        return PaymentStatus.CANCELED
    if status == "CAPTURE_PENDING":
        return PaymentStatus.PROCESSING
    if status in ("CAPTURE_COMPLETED", "CAPTURE_PARTIALLY_REFUNDED", "CAPTURE_REFUNDED"):
        return _by_refunds(snap)
    if status.startswith("CAPTURE_"):
        return PaymentStatus.FAILED  # DENIED, DECLINED, FAILED
    return PaymentStatus.PENDING


def relay_status(
    snap: IntentSnapshot, *, expired: bool = False, canceled: bool = False
) -> PaymentStatus:
    if snap.provider == PAYPAL:
        return paypal_status(snap, expired=expired, canceled=canceled)
    status = snap.status
    if status == "canceled":
        return PaymentStatus.EXPIRED if expired else PaymentStatus.CANCELED
    if status == "succeeded":
        return _by_refunds(snap)
    if status == "processing":
        return PaymentStatus.PROCESSING
    if status == "requires_capture":
        return PaymentStatus.REQUIRES_CAPTURE
    if status == "requires_action":
        return PaymentStatus.REQUIRES_ACTION
    if status == "requires_payment_method" and snap.last_error is not None:
        return PaymentStatus.FAILED
    return PaymentStatus.PENDING


# The outgoing event each Relay status is announced with, when a payment enters it.
_ANNOUNCED = {
    PaymentStatus.SUCCEEDED: "payment.succeeded",
    PaymentStatus.FAILED: "payment.failed",
    PaymentStatus.REQUIRES_ACTION: "payment.requires_action",
    PaymentStatus.CANCELED: "payment.canceled",
    PaymentStatus.EXPIRED: "payment.canceled",
}


def event_data(view: PaymentView) -> dict[str, Any]:
    error = view.last_error
    return {
        "id": view.id,
        "provider": view.provider,
        "userId": view.user_id,
        "stripePaymentIntentId": view.stripe_payment_intent_id,
        "paypalOrderId": view.paypal_order_id,
        "status": view.status,
        "relayStatus": view.relay_status.value,
        "amount": view.amount,
        "currency": view.currency,
        "amountCaptured": view.amount_captured,
        "amountRefunded": view.amount_refunded,
        "declineCode": error.decline_code if error else None,
        "errorCode": error.code if error else None,
    }


def apply_snapshot(
    workflow_id: str, view: PaymentView, snap: IntentSnapshot, now: datetime
) -> tuple[PaymentView, list[PaymentEvent]]:
    """The view after Stripe's answer, and the events its change announces."""
    new = dataclasses.replace(
        view,
        stripe_payment_intent_id=snap.stripe_payment_intent_id or None,
        stripe_customer_id=snap.customer_id or view.stripe_customer_id,
        provider=snap.provider,
        paypal_order_id=snap.paypal_order_id or view.paypal_order_id,
        paypal_capture_id=snap.paypal_capture_id or view.paypal_capture_id,
        approve_url=snap.approve_url,
        user_id=view.user_id or snap.user_id,
        status=snap.status,
        relay_status=relay_status(snap, expired=view.expired, canceled=view.canceled),
        amount=snap.amount,
        currency=snap.currency,
        capture_method=snap.capture_method,
        description=snap.description if snap.description is not None else view.description,
        amount_captured=snap.amount_captured,
        amount_refunded=refunded(snap),
        last_error=snap.last_error,
        refunds=_in_known_order(view, snap),
        next_action=snap.next_action if snap.status == "requires_action" else None,
        client_secret=snap.client_secret or view.client_secret,
        created_at=view.created_at or snap.created or now,
        last_read_at=now,
    )
    changed = (
        new.status,
        new.relay_status,
        new.amount_captured,
        new.amount_refunded,
        new.last_error,
        [(r.id, r.status) for r in new.refunds],
        new.stripe_payment_intent_id,
        new.paypal_order_id,
        new.paypal_capture_id,
    ) != (
        view.status,
        view.relay_status,
        view.amount_captured,
        view.amount_refunded,
        view.last_error,
        [(r.id, r.status) for r in view.refunds],
        view.stripe_payment_intent_id,
        view.paypal_order_id,
        view.paypal_capture_id,
    )
    if not changed:
        return new, []
    new.writes = view.writes + 1
    kinds: list[str] = []
    if new.relay_status != view.relay_status and new.relay_status in _ANNOUNCED:
        kinds.append(_ANNOUNCED[new.relay_status])
    elif new.relay_status == PaymentStatus.FAILED and new.last_error != view.last_error:
        kinds.append("payment.failed")  # declined again
    if new.amount_refunded > view.amount_refunded:
        kinds.append("payment.refunded")
    data = event_data(new)
    events = [PaymentEvent(kind, data, f"{workflow_id}:{new.writes}:{kind}") for kind in kinds]
    return new, events


def _in_known_order(view: PaymentView, snap: IntentSnapshot) -> list[RefundView]:
    """Stripe's refunds in the order Relay first saw them (Stripe lists newest first and
    orders refunds made in the same second arbitrarily); new ones last, oldest first."""
    fresh = {refund.id: refund for refund in snap.refunds}
    known = [fresh.pop(refund.id) for refund in view.refunds if refund.id in fresh]
    return known + list(fresh.values())


def is_final(view: PaymentView, now: datetime) -> bool:
    """The workflow may end: a final status, or a succeeded payment past its refund
    window with no refund in flight."""
    if refund_in_flight(view):
        return False
    if view.relay_status in FINAL:
        return True
    if view.provider == PAYPAL and view.relay_status == PaymentStatus.FAILED:
        return True  # a denied capture: PayPal offers no second attempt on the order
    if view.relay_status == PaymentStatus.SUCCEEDED or (
        view.relay_status == PaymentStatus.PARTIALLY_REFUNDED
    ):
        window_end = refund_window_end(view)
        return window_end is not None and now >= window_end
    return False


def refund_window_end(view: PaymentView) -> datetime | None:
    if view.created_at is None:
        return None
    return view.created_at + timedelta(seconds=REFUND_WINDOW_SECONDS)


def expiry_at(view: PaymentView, expiry_seconds: float) -> datetime | None:
    """When an intent still awaiting the payer is canceled (EXPIRED)."""
    if view.status not in awaiting_payer(view) or view.created_at is None:
        return None
    return view.created_at + timedelta(seconds=expiry_seconds)


def poll_at(view: PaymentView, poll_seconds: float) -> datetime | None:
    """When to re-read the intent if no event came: while Stripe may still change it
    on its own (not settled, or a refund in flight)."""
    if view.provider_id() is None or view.last_read_at is None:
        return None
    settled = view.relay_status in FINAL or view.relay_status in (
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
    )
    if settled and not refund_in_flight(view):
        return None
    return view.last_read_at + timedelta(seconds=poll_seconds)


def awaiting_payer(view: PaymentView) -> frozenset[str]:
    """The provider's statuses in which the payment waits for the payer (expiry applies)."""
    return PAYPAL_AWAITING_PAYER if view.provider == PAYPAL else AWAITING_PAYER
