"""Where payments send Stripe's events: their declaration for the inbound inbox.

An event about a PaymentIntent Relay created (`payment_intent.*`), its charge
(`charge.*`, e.g. `charge.refunded`) or one of its refunds (`refund.*`) goes to that
payment's workflow, `payment-{id}`, by signal-with-start. The Relay id comes from the
intent's `relayPaymentId` metadata (set on every intent Relay creates), else the
database. Intents Relay did not create (an invoice's, a subscription's) are not
payments: their events are left to billing or IGNORED. Only ids are read here; the
workflow re-reads the intent from Stripe and derives its state from that alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from relay import search_attributes
from relay.inbound.contracts import ForwardTarget
from relay.payments.contracts import (
    PAYMENT_WORKFLOW,
    PAYPAL,
    PAYPAL_EVENT_SIGNAL,
    PAYPAL_EVENTS,
    PROVIDER,
    RELAY_ID_METADATA,
    STRIPE_EVENT_SIGNAL,
    PaymentInput,
    PaymentStatus,
    payment_workflow_id,
)


def payment_intent_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(PaymentIntent id, Relay id from metadata) of an event, when it is about one."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = str(event.get("type", ""))
    metadata = obj.get("metadata") or {}
    relay_id = _str(metadata.get(RELAY_ID_METADATA))
    if kind.startswith("payment_intent."):
        return _str(obj.get("id")), relay_id
    if kind.startswith(("charge.", "refund.")):
        intent = obj.get("payment_intent")
        if isinstance(intent, dict):  # expanded
            intent = intent.get("id")
        return _str(intent), relay_id
    return None, None


def stripe_target(
    event: dict[str, Any], relay_id_of: Callable[[str], str | None]
) -> tuple[ForwardTarget | None, str | None]:
    """The payment workflow an event goes to (None: not a payment's) and the intent id.

    `relay_id_of` maps an intent id to Relay's payment id (the database), for events
    that carry no `relayPaymentId` metadata (charges, refunds Relay did not create).
    """
    intent_id, relay_id = payment_intent_of(event)
    if intent_id is None:
        return None, None
    relay_id = relay_id or relay_id_of(intent_id)
    if relay_id is None:
        return None, intent_id
    start = PaymentInput(payment_id=relay_id, stripe_payment_intent_id=intent_id)
    return (
        ForwardTarget(
            workflow_type=PAYMENT_WORKFLOW,
            workflow_id=payment_workflow_id(relay_id),
            signal=STRIPE_EVENT_SIGNAL,
            start_arg=asdict(start),
            search_attributes={
                search_attributes.ENTITY_ID.name: relay_id,
                search_attributes.PROVIDER.name: PROVIDER,
            },
        ),
        intent_id,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --- PayPal --------------------------------------------------------------------------------


def paypal_objects(event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(Relay id from `custom_id`, order id, capture id) of a PayPal event about a payment.

    CHECKOUT.ORDER.* carry the order (its unit's `custom_id`); PAYMENT.CAPTURE.* the
    capture (`custom_id`, `supplementary_data.related_ids.order_id`); a refund event its
    refund (`custom_id` as Relay set it, the capture in its `up` link).
    """
    kind = str(event.get("event_type", ""))
    resource = event.get("resource") or {}
    if not isinstance(resource, dict) or kind not in PAYPAL_EVENTS:
        return None, None, None
    if kind.startswith("CHECKOUT.ORDER."):
        units = resource.get("purchase_units") or [{}]
        unit = units[0] if isinstance(units[0], dict) else {}
        return _str(unit.get("custom_id")), _str(resource.get("id")), None
    related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
    order_id = _str(related.get("order_id"))
    if kind == "PAYMENT.CAPTURE.REFUNDED" or kind == "PAYMENT.CAPTURE.REVERSED":
        capture_id = next(
            (
                str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
                for link in resource.get("links") or []
                if isinstance(link, dict) and link.get("rel") == "up" and link.get("href")
            ),
            None,
        )
        return _str(resource.get("custom_id")), order_id, capture_id
    return _str(resource.get("custom_id")), order_id, _str(resource.get("id"))


def paypal_target(
    event: dict[str, Any],
    payment_of: Callable[[str | None, str | None, str | None], tuple[str, str, str] | None],
) -> tuple[ForwardTarget | None, str | None]:
    """The payment workflow a PayPal event goes to (None: not a payment's, or a payment
    Relay stopped tracking) and the order (or capture) id it is about.

    `payment_of(relay_id, order_id, capture_id)` reads the database: (Relay's id, the
    order id, relayStatus) of the payment found by any of them, or None. Only payments
    Relay created are routed, never adopted from an event.
    """
    relay_id, order_id, capture_id = paypal_objects(event)
    object_id = order_id or capture_id
    if relay_id is None and object_id is None:
        return None, None
    found = payment_of(relay_id, order_id, capture_id)
    if found is None:
        return None, object_id
    relay_id, order_id, status = found
    # Canceled or expired by Relay (its order left uncaptured at PayPal): recorded and
    # IGNORED rather than starting a run about it.
    if status in (PaymentStatus.CANCELED, PaymentStatus.EXPIRED):
        return None, object_id
    start = PaymentInput(payment_id=relay_id, provider=PAYPAL, paypal_order_id=order_id)
    return (
        ForwardTarget(
            workflow_type=PAYMENT_WORKFLOW,
            workflow_id=payment_workflow_id(relay_id),
            signal=PAYPAL_EVENT_SIGNAL,
            start_arg=asdict(start),
            search_attributes={
                search_attributes.ENTITY_ID.name: relay_id,
                search_attributes.PROVIDER.name: PAYPAL,
            },
        ),
        order_id,
    )
