"""The subscription's state, derived: pure functions the workflow calls (no I/O, no clock
but the `now` it is handed, so they are deterministic in workflow code).

Stripe's status is mirrored as read from Stripe. Beside it Relay owns `entitled`, as
Kill Bill separates entitlement from billing:

- trialing / active → entitled;
- past_due / unpaid after a failed renewal → still entitled until `grace_until`
  (BILLING_GRACE_PERIOD after the failure) while Stripe retries the card, then not;
- incomplete, incomplete_expired, canceled, paused → not entitled;
- cancel_at_period_end → not entitled from the period's end (the cancellation's
  effective time) even before Stripe's `customer.subscription.deleted` arrives;
- an invoice paid (active again) → entitled again.

Every change the application cares about becomes an outgoing event, keyed by the
workflow id and the write number so a retried publish is not doubled.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from relay.billing.contracts import (
    DUNNING,
    ENDED,
    GRACE_REMINDER_SECONDS,
    PAYING,
    TRIAL_REMINDER_SECONDS,
    OutgoingEvent,
    StripeSnapshot,
    SubscriptionStatus,
    SubscriptionView,
)


def event_data(view: SubscriptionView) -> dict[str, Any]:
    """What Relay's outgoing subscription events carry (camelCase, no secrets)."""
    return {
        "id": view.id,
        "userId": view.user_id,
        "stripeCustomerId": view.stripe_customer_id,
        "stripeSubscriptionId": view.stripe_subscription_id,
        "status": view.status.value,
        "entitled": view.entitled,
        "priceId": view.price_id,
        "quantity": view.quantity,
        "trialEnd": view.trial_end.isoformat() if view.trial_end else None,
        "currentPeriodEnd": view.current_period_end.isoformat()
        if view.current_period_end
        else None,
        "cancelAtPeriodEnd": view.cancel_at_period_end,
        "graceUntil": view.grace_until.isoformat() if view.grace_until else None,
        "declineCode": view.decline_code,
        "pauseBehavior": view.pause_behavior,
        "pauseResumesAt": view.pause_resumes_at.isoformat() if view.pause_resumes_at else None,
    }


def _events(workflow_id: str, view: SubscriptionView, types: list[str]) -> list[OutgoingEvent]:
    data = event_data(view)
    return [
        OutgoingEvent(f"subscription.{kind}", data, f"{workflow_id}:{view.writes}:{kind}")
        for kind in types
    ]


def period_ended(view: SubscriptionView, now: datetime) -> bool:
    return (
        view.cancel_at_period_end
        and view.current_period_end is not None
        and now >= view.current_period_end
    )


def apply_snapshot(
    workflow_id: str,
    view: SubscriptionView,
    snap: StripeSnapshot,
    now: datetime,
    *,
    created: bool = False,
) -> tuple[SubscriptionView, list[OutgoingEvent]]:
    """The view after re-reading the subscription from Stripe, and the events to publish."""
    old = view
    new = dataclasses.replace(
        view,
        stripe_customer_id=snap.customer_id or view.stripe_customer_id,
        stripe_subscription_id=snap.stripe_subscription_id,
        status=snap.status,
        price_id=snap.price_id,
        quantity=snap.quantity,
        trial_end=snap.trial_end,
        current_period_end=snap.current_period_end,
        cancel_at_period_end=snap.cancel_at_period_end,
        decline_code=snap.decline_code,
        pause_behavior=snap.pause_behavior,
        pause_resumes_at=snap.pause_resumes_at,
        user_id=view.user_id or snap.user_id or f"stripe:{snap.customer_id}",
        client_secret=None,
    )
    kinds: list[str] = ["created"] if created else []
    if snap.status in PAYING:
        new.entitled = not period_ended(new, now)
        new.grace_until = None
        new.reminded_grace_until = None
    elif snap.status in DUNNING:
        if old.grace_until is None and (old.entitled or old.status in PAYING):
            new.grace_until = now + timedelta(seconds=snap.grace_period_seconds)
            kinds.append("payment_failed")
        new.entitled = new.grace_until is not None and now < new.grace_until
    else:
        new.entitled = False
        new.grace_until = None
        if snap.status == SubscriptionStatus.INCOMPLETE and snap.decline_code:
            if old.decline_code != snap.decline_code:
                kinds.append("payment_failed")
    if snap.status in PAYING and old.status not in PAYING:
        kinds.append("activated")
    if snap.status in ENDED and old.status not in ENDED:
        kinds.append("canceled")
    if old.entitled and not new.entitled:
        kinds.append("access_revoked")
    changed = _differs(old, new)
    if changed and not kinds:
        kinds.append("updated")
    if kinds or changed:
        new.writes += 1
    return new, _events(workflow_id, new, kinds)


def on_deadline(
    workflow_id: str, view: SubscriptionView, now: datetime
) -> tuple[SubscriptionView, list[OutgoingEvent]]:
    """A durable timer fired: trial reminder, grace reminder, grace end, period end."""
    new = dataclasses.replace(view)
    kinds: list[str] = []
    if (
        new.status == SubscriptionStatus.TRIALING
        and new.trial_end is not None
        and new.reminded_trial_end != new.trial_end
        and now >= new.trial_end - timedelta(seconds=TRIAL_REMINDER_SECONDS)
    ):
        new.reminded_trial_end = new.trial_end
        kinds.append("trial_will_end")
    if new.grace_until is not None and new.status in DUNNING:
        if now >= new.grace_until:
            if new.entitled:
                new.entitled = False
                kinds.append("access_revoked")
        elif new.reminded_grace_until != new.grace_until and now >= new.grace_until - timedelta(
            seconds=GRACE_REMINDER_SECONDS
        ):
            new.reminded_grace_until = new.grace_until
            kinds.append("grace_period_ending")
    if new.entitled and period_ended(new, now):
        new.entitled = False
        kinds.append("access_revoked")
    if kinds:
        new.writes += 1
    return new, _events(workflow_id, new, kinds)


def next_deadline(view: SubscriptionView) -> datetime | None:
    """When the workflow must wake up next on its own (a durable timer), or None."""
    moments: list[datetime] = []
    if (
        view.status == SubscriptionStatus.TRIALING
        and view.trial_end is not None
        and view.reminded_trial_end != view.trial_end
    ):
        moments.append(view.trial_end - timedelta(seconds=TRIAL_REMINDER_SECONDS))
    if view.grace_until is not None and view.status in DUNNING and view.entitled:
        if view.reminded_grace_until != view.grace_until:
            moments.append(view.grace_until - timedelta(seconds=GRACE_REMINDER_SECONDS))
        moments.append(view.grace_until)
    if view.entitled and view.cancel_at_period_end and view.current_period_end is not None:
        moments.append(view.current_period_end)
    return min(moments) if moments else None


_COMPARED = (
    "status",
    "entitled",
    "price_id",
    "quantity",
    "trial_end",
    "current_period_end",
    "cancel_at_period_end",
    "pause_behavior",
    "pause_resumes_at",
    "stripe_customer_id",
)


def _differs(old: SubscriptionView, new: SubscriptionView) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in _COMPARED)
