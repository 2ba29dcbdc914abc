"""The subscription's derived state, as pure functions: what each Stripe status means for
`entitled`, which outgoing events a change makes, and when the workflow must wake up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.billing.contracts import StripeSnapshot, SubscriptionStatus, SubscriptionView
from relay.billing.lifecycle import apply_snapshot, next_deadline, on_deadline
from relay.billing.stripe_shape import current_period_end, price_of, snapshot

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WID = "subscription-rsub_1"


def snap(status: SubscriptionStatus, **fields: Any) -> StripeSnapshot:
    values: dict[str, Any] = {
        "stripe_subscription_id": "sub_1",
        "customer_id": "cus_1",
        "status": status,
        "current_period_end": NOW + timedelta(days=30),
        "grace_period_seconds": timedelta(days=7).total_seconds(),
    }
    return StripeSnapshot(**(values | fields))


def kinds(events: list[Any]) -> list[str]:
    return [event.type.removeprefix("subscription.") for event in events]


@pytest.mark.parametrize(
    ("status", "entitled"),
    [
        (SubscriptionStatus.TRIALING, True),
        (SubscriptionStatus.ACTIVE, True),
        (SubscriptionStatus.INCOMPLETE, False),
        (SubscriptionStatus.INCOMPLETE_EXPIRED, False),
        (SubscriptionStatus.CANCELED, False),
        (SubscriptionStatus.PAUSED, False),
        # Never paid: no grace period to keep.
        (SubscriptionStatus.PAST_DUE, False),
        (SubscriptionStatus.UNPAID, False),
    ],
)
def test_entitlement_of_each_status_from_scratch(
    status: SubscriptionStatus, entitled: bool
) -> None:
    view, _ = apply_snapshot(WID, SubscriptionView(id="rsub_1"), snap(status), NOW)
    assert view.status == status and view.entitled is entitled


def test_a_failed_renewal_keeps_access_for_the_grace_period() -> None:
    active, events = apply_snapshot(
        WID, SubscriptionView(id="rsub_1"), snap(SubscriptionStatus.ACTIVE), NOW, created=True
    )
    assert kinds(events) == ["created", "activated"]
    dunning, events = apply_snapshot(WID, active, snap(SubscriptionStatus.PAST_DUE), NOW)
    assert kinds(events) == ["payment_failed"]
    assert dunning.entitled and dunning.grace_until == NOW + timedelta(days=7)
    # The same state read again (a duplicate or reordered event): nothing new.
    again, events = apply_snapshot(WID, dunning, snap(SubscriptionStatus.PAST_DUE), NOW)
    assert events == [] and again.grace_until == dunning.grace_until
    assert next_deadline(dunning) == NOW + timedelta(days=6)  # the warning first
    warned, events = on_deadline(WID, dunning, NOW + timedelta(days=6))
    assert kinds(events) == ["grace_period_ending"] and warned.entitled
    assert next_deadline(warned) == NOW + timedelta(days=7)
    revoked, events = on_deadline(WID, warned, NOW + timedelta(days=7))
    assert kinds(events) == ["access_revoked"] and not revoked.entitled
    assert next_deadline(revoked) is None
    paid, events = apply_snapshot(WID, revoked, snap(SubscriptionStatus.ACTIVE), NOW)
    assert kinds(events) == ["activated"] and paid.entitled and paid.grace_until is None


def test_a_cancellation_at_period_end_revokes_at_that_moment() -> None:
    end = NOW + timedelta(days=3)
    view, _ = apply_snapshot(
        WID,
        SubscriptionView(id="rsub_1"),
        snap(SubscriptionStatus.ACTIVE, cancel_at_period_end=True, current_period_end=end),
        NOW,
    )
    assert view.entitled and next_deadline(view) == end
    after, events = on_deadline(WID, view, end)
    assert kinds(events) == ["access_revoked"] and not after.entitled
    canceled, events = apply_snapshot(WID, after, snap(SubscriptionStatus.CANCELED), end)
    assert kinds(events) == ["canceled"]


def test_trial_reminder_once_three_days_before() -> None:
    trial_end = NOW + timedelta(days=10)
    view, _ = apply_snapshot(
        WID,
        SubscriptionView(id="rsub_1"),
        snap(SubscriptionStatus.TRIALING, trial_end=trial_end),
        NOW,
    )
    assert next_deadline(view) == NOW + timedelta(days=7)
    reminded, events = on_deadline(WID, view, NOW + timedelta(days=7))
    assert kinds(events) == ["trial_will_end"] and next_deadline(reminded) is None


def test_event_keys_are_stable_per_write_and_kind() -> None:
    view, events = apply_snapshot(
        WID, SubscriptionView(id="rsub_1"), snap(SubscriptionStatus.ACTIVE), NOW, created=True
    )
    assert [e.idempotency_key for e in events] == [f"{WID}:1:created", f"{WID}:1:activated"]
    assert events[0].data["status"] == "active" and events[0].data["entitled"] is True


def test_one_adapter_reads_both_api_shapes() -> None:
    legacy = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "active",
        "current_period_end": 1_800_000_000,
        "items": {"data": [{"plan": {"id": "pro"}, "quantity": 2}]},
    }
    basil = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "active",
        "items": {
            "data": [
                {"price": {"id": "price_pro"}, "quantity": 1, "current_period_end": 1_800_000_000}
            ]
        },
    }
    moment = datetime.fromtimestamp(1_800_000_000, tz=UTC)
    assert current_period_end(legacy) == current_period_end(basil) == moment
    assert price_of(legacy) == "pro" and price_of(basil) == "price_pro"
    read = snapshot(basil, customer={"metadata": {"userId": "u1"}}, grace_period_seconds=60)
    assert read.user_id == "u1" and read.quantity == 1 and read.current_period_end == moment
