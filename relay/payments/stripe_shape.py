"""Reading a PaymentIntent through one adapter (Stripe's current shape and localstripe's).

Stripe answers `latest_charge` as an id (expandable) and `amount_received`; localstripe
answers the charge expanded and no `amount_received`. Stripe's errors are classified by
`relay.stripe_api.refusal`, as billing's are.
"""

from __future__ import annotations

from typing import Any

from relay.payments.contracts import (
    RELAY_ID_METADATA,
    IntentSnapshot,
    PaymentError,
    RefundView,
)
from relay.stripe_api import object_id, timestamp


def captured_amount(intent: dict[str, Any], charge: dict[str, Any]) -> int:
    """What was captured: `amount_received` (Stripe), else the charge's captured amount
    (localstripe records a partial capture as a refund of the rest, counted there)."""
    if intent.get("status") != "succeeded":
        return 0
    received = intent.get("amount_received")
    if isinstance(received, int) and received > 0:
        return received
    if isinstance(charge.get("amount_captured"), int) and charge["amount_captured"] > 0:
        return int(charge["amount_captured"])
    return int(charge.get("amount") or intent.get("amount") or 0)


def refund_view(refund: dict[str, Any]) -> RefundView:
    return RefundView(
        id=str(refund["id"]),
        amount=int(refund.get("amount") or 0),
        status=str(refund.get("status") or "pending"),
        reason=refund.get("reason"),
        created=timestamp(refund.get("created")),
    )


def intent_snapshot(
    intent: dict[str, Any],
    *,
    charge: dict[str, Any] | None = None,
    refunds: list[dict[str, Any]] | None = None,
) -> IntentSnapshot:
    charge = charge or {}
    if not charge and isinstance(intent.get("latest_charge"), dict):
        charge = intent["latest_charge"]
    metadata = intent.get("metadata") or {}
    error = intent.get("last_payment_error") or None
    last_error = None
    if isinstance(error, dict):
        last_error = PaymentError(
            code=error.get("code"),
            # localstripe (and a charge declined without an issuer reason) gives only the
            # code: it stands in for the decline code.
            decline_code=error.get("decline_code")
            or charge.get("failure_code")
            or error.get("code"),
            message=error.get("message"),
        )
    ordered = sorted(refunds or [], key=lambda r: (r.get("created") or 0, str(r.get("id"))))
    return IntentSnapshot(
        stripe_payment_intent_id=str(intent["id"]),
        status=str(intent.get("status") or "requires_payment_method"),
        amount=int(intent.get("amount") or 0),
        currency=str(intent.get("currency") or ""),
        capture_method=str(intent.get("capture_method") or "automatic"),
        customer_id=object_id(intent.get("customer")),
        user_id=metadata.get("userId"),
        relay_id=metadata.get(RELAY_ID_METADATA),
        description=intent.get("description"),
        client_secret=intent.get("client_secret"),
        next_action=intent.get("next_action") or None,
        last_error=last_error,
        amount_captured=captured_amount(intent, charge),
        refunds=[refund_view(r) for r in ordered],
        created=timestamp(intent.get("created")),
    )
