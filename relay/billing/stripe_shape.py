"""Reading Stripe's subscriptions through one adapter.

stripe-python 12+ pins API `2025-03-31.basil` or later, where `current_period_*` moved
from the subscription to its items and `invoice.subscription` to `invoice.parent`;
localstripe still answers the older shape. Everything Relay reads about a subscription
goes through `snapshot`, which understands both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from relay.billing.contracts import StripeSnapshot, SubscriptionStatus
from relay.stripe_api import object_id, timestamp

# Payment intent statuses in which the customer must act on the client (3-D Secure, a
# new card): the answer to create then carries the client secret.
NEEDS_CLIENT = frozenset({"requires_action", "requires_payment_method", "requires_confirmation"})


def first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}


def current_period_end(subscription: dict[str, Any]) -> datetime | None:
    """On the subscription before basil, on its items since."""
    return timestamp(subscription.get("current_period_end")) or timestamp(
        first_item(subscription).get("current_period_end")
    )


def price_of(subscription: dict[str, Any]) -> str | None:
    item = first_item(subscription)
    return (
        object_id(item.get("price"))
        or object_id(item.get("plan"))
        or object_id(subscription.get("plan"))
    )


def snapshot(
    subscription: dict[str, Any],
    *,
    customer: dict[str, Any] | None = None,
    invoice: dict[str, Any] | None = None,
    payment_intent: dict[str, Any] | None = None,
    grace_period_seconds: float,
) -> StripeSnapshot:
    status = str(subscription.get("status") or "incomplete")
    try:
        mirrored = SubscriptionStatus(status)
    except ValueError:
        mirrored = SubscriptionStatus.INCOMPLETE
    item = first_item(subscription)
    metadata = subscription.get("metadata") or {}
    customer_metadata = (customer or {}).get("metadata") or {}
    invoice = invoice or {}
    payment_intent = payment_intent or {}
    error = payment_intent.get("last_payment_error") or {}
    decline = error.get("decline_code") or error.get("code")
    if not decline and invoice.get("status") == "open":
        charge = invoice.get("charge")
        if isinstance(charge, dict):
            decline = charge.get("failure_code")
    secret = ((invoice.get("confirmation_secret") or {}).get("client_secret")) or (
        payment_intent.get("client_secret")
        if payment_intent.get("status") in NEEDS_CLIENT
        else None
    )
    return StripeSnapshot(
        stripe_subscription_id=str(subscription["id"]),
        customer_id=object_id(subscription.get("customer")) or "",
        status=mirrored,
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        current_period_end=current_period_end(subscription),
        trial_end=timestamp(subscription.get("trial_end")),
        price_id=price_of(subscription),
        quantity=int(item.get("quantity") or subscription.get("quantity") or 1),
        user_id=customer_metadata.get("userId") or metadata.get("userId"),
        relay_id=metadata.get("relaySubscriptionId"),
        latest_invoice_status=invoice.get("status"),
        decline_code=decline if mirrored == SubscriptionStatus.INCOMPLETE else None,
        client_secret=secret if mirrored == SubscriptionStatus.INCOMPLETE else None,
        pause_behavior=(subscription.get("pause_collection") or {}).get("behavior"),
        pause_resumes_at=timestamp((subscription.get("pause_collection") or {}).get("resumes_at")),
        grace_period_seconds=grace_period_seconds,
    )
