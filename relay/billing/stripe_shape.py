"""Reading Stripe's objects through one adapter, and classifying Stripe's errors.

stripe-python 12+ pins API `2025-03-31.basil` or later, where `current_period_*` moved
from the subscription to its items and `invoice.subscription` to `invoice.parent`;
localstripe still answers the older shape. Everything Relay reads about a subscription
goes through `snapshot`, which understands both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import stripe
from temporalio.exceptions import ApplicationError

from relay.billing.contracts import StripeSnapshot, SubscriptionStatus
from relay.errors import ErrorCode
from relay.provider_errors import translate

PROVIDER = "stripe"
# Payment intent statuses in which the customer must act on the client (3-D Secure, a
# new card): the answer to create then carries the client secret.
NEEDS_CLIENT = frozenset({"requires_action", "requires_payment_method", "requires_confirmation"})


def as_dict(obj: Any) -> dict[str, Any]:
    """A StripeObject (or a dict, or an id) as a plain dict."""
    if obj is None or isinstance(obj, str):
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()  # type: ignore[no-any-return]
    return dict(obj)


def _time(value: object) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _id(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}


def current_period_end(subscription: dict[str, Any]) -> datetime | None:
    """On the subscription before basil, on its items since."""
    return _time(subscription.get("current_period_end")) or _time(
        first_item(subscription).get("current_period_end")
    )


def price_of(subscription: dict[str, Any]) -> str | None:
    item = first_item(subscription)
    return _id(item.get("price")) or _id(item.get("plan")) or _id(subscription.get("plan"))


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
        customer_id=_id(subscription.get("customer")) or "",
        status=mirrored,
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        current_period_end=current_period_end(subscription),
        trial_end=_time(subscription.get("trial_end")),
        price_id=price_of(subscription),
        quantity=int(item.get("quantity") or subscription.get("quantity") or 1),
        user_id=customer_metadata.get("userId") or metadata.get("userId"),
        relay_id=metadata.get("relaySubscriptionId"),
        latest_invoice_status=invoice.get("status"),
        decline_code=decline if mirrored == SubscriptionStatus.INCOMPLETE else None,
        client_secret=secret if mirrored == SubscriptionStatus.INCOMPLETE else None,
        pause_behavior=(subscription.get("pause_collection") or {}).get("behavior"),
        grace_period_seconds=grace_period_seconds,
    )


def refusal(exc: Exception, field: str) -> ApplicationError:
    """Stripe's answer to a call as a Temporal failure.

    Stripe refusing what the client asked (an unknown price or customer: 400/404
    `invalid_request_error`) is the client's error: non-retryable VALIDATION_ERROR naming
    the field, Stripe's code and message in the details. A declined card is
    PAYMENT_DECLINED. A Stripe that failed (5xx, 429, no connection) is transient.
    """
    if isinstance(exc, stripe.CardError):
        return ApplicationError(
            "the card was declined",
            {"field": field, "code": exc.code, "declineCode": getattr(exc, "decline_code", None)},
            type=ErrorCode.PAYMENT_DECLINED.value,
            non_retryable=True,
        )
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 0) in (400, 404):
        return ApplicationError(
            f"Stripe refused the request: {exc.user_message or exc.code or 'invalid request'}",
            [
                {
                    "field": field,
                    "in": "body",
                    "message": str(exc.user_message or "Stripe refused this value")[:300],
                    "code": exc.code,
                    "param": exc.param,
                }
            ],
            type=ErrorCode.VALIDATION_ERROR.value,
            non_retryable=True,
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ApplicationError(
            "Stripe refused Relay's key (STRIPE_SECRET_KEY)",
            {"provider": PROVIDER},
            type=ErrorCode.PROVIDER_ERROR.value,
            non_retryable=True,
        )
    return translate(PROVIDER, exc)
