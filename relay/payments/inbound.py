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
    PROVIDER,
    RELAY_ID_METADATA,
    STRIPE_EVENT_SIGNAL,
    PaymentInput,
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
