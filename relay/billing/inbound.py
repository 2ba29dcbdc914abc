"""Where billing sends Stripe's events: its declaration for the inbound inbox.

A Stripe event about a subscription (`customer.subscription.*`) or one of its invoices
(`invoice.*`) goes to that subscription's entity workflow, `subscription-{id}`, by
signal-with-start: a subscription Relay has never seen (created in Stripe's dashboard)
is adopted by its first event. Only ids are read from the payload here; the workflow
derives state from the subscription it re-reads from Stripe, never from the payload.
Events about anything else are left to the next capability `relay.stripe_router` asks
(payments), and recorded as IGNORED when none takes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from relay import search_attributes
from relay.billing.contracts import (
    STRIPE_EVENT_SIGNAL,
    SUBSCRIPTION_WORKFLOW,
    SubscriptionInput,
    subscription_workflow_id,
)
from relay.inbound.contracts import ForwardTarget

PROVIDER = "stripe"
# Relay sets this on every Stripe subscription it creates.
RELAY_ID_METADATA = "relaySubscriptionId"


def stripe_subscription_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(Stripe subscription id, Relay id from the subscription's metadata) of an event, in
    both API shapes: `invoice.subscription` before 2025-03-31.basil (localstripe),
    `invoice.parent.subscription_details` since."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = str(event.get("type", ""))
    if kind.startswith("customer.subscription."):
        metadata = obj.get("metadata") or {}
        return _str(obj.get("id")), _str(metadata.get(RELAY_ID_METADATA))
    if kind.startswith("invoice."):
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        subscription = details.get("subscription") or obj.get("subscription")
        if isinstance(subscription, dict):  # expanded
            subscription = subscription.get("id")
        metadata = details.get("metadata") or {}
        return _str(subscription), _str(metadata.get(RELAY_ID_METADATA))
    return None, None


def stripe_target(
    event: dict[str, Any], relay_id_of: Callable[[str], str | None]
) -> tuple[ForwardTarget | None, str | None]:
    """The workflow an event goes to and the Stripe object it is about.

    `relay_id_of` maps a Stripe subscription id to the Relay id it has (the database),
    for events that carry no `relaySubscriptionId` metadata.
    """
    stripe_id, relay_id = stripe_subscription_of(event)
    if stripe_id is None:
        obj = (event.get("data") or {}).get("object") or {}
        return None, _str(obj.get("id"))
    relay_id = relay_id or relay_id_of(stripe_id)
    adopted = relay_id is None
    subscription_id = relay_id or stripe_id
    start = SubscriptionInput(
        subscription_id=subscription_id, stripe_subscription_id=stripe_id, adopted=adopted
    )
    return (
        ForwardTarget(
            workflow_type=SUBSCRIPTION_WORKFLOW,
            workflow_id=subscription_workflow_id(subscription_id),
            signal=STRIPE_EVENT_SIGNAL,
            start_arg=asdict(start),
            search_attributes={
                search_attributes.ENTITY_ID.name: subscription_id,
                search_attributes.PROVIDER.name: PROVIDER,
            },
        ),
        stripe_id,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
