"""Pause, resume and renewals end to end: API → subscription workflow → activities → the
Stripe sandbox server, whose signed events come back through /webhooks/stripe.

Pausing sets Stripe's `pause_collection` and keeps the subscription active and entitled;
resuming clears it. A renewal that fails puts the subscription in dunning (past_due, still
entitled during the grace period); a paid one makes it active again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from stripe import StripeClient

from relay.sandbox.stripe import StripeSandbox
from relay.webhooks.publish import events_table
from tests.billing.helpers import ensure_plan
from tests.conftest import Stack, eventually
from workflows.clients.billing import subscription_state

pytestmark = pytest.mark.e2e

BEHAVIORS = ("keep_as_draft", "mark_uncollectible", "void")


async def create_subscription(stack: Stack, stripe: StripeClient, user_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.post(
            "/v1/subscriptions",
            json={
                "userId": user_id,
                "priceId": ensure_plan(stripe),
                "paymentMethodId": "pm_card_visa",
            },
        )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["status"] == "active" and data["entitled"] is True
    return data


async def get(stack: Stack, subscription_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get(f"/v1/subscriptions/{subscription_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def pause_behavior(stack: Stack, subscription_id: str) -> str | None:
    """What the workflow holds."""
    state = await subscription_state(stack.client, subscription_id)
    assert state.view is not None
    return state.view.pause_behavior


def published(stack: Stack, subscription_id: str) -> list[str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [row.type for row in rows if row.data.get("id") == subscription_id]


async def was_published(stack: Stack, subscription_id: str, kind: str) -> list[str]:
    """Relay's outgoing events so far, once `kind` is among them (the workflow saves the
    view, which the API reads, before its next activity publishes the events)."""
    kinds = await eventually(lambda: kind in published(stack, subscription_id), timeout=30)
    assert kinds
    return published(stack, subscription_id)


def renew(sandbox: StripeSandbox, stripe_subscription_id: str, outcome: str) -> None:
    response = httpx.post(
        f"{sandbox.api_base}/_sandbox/subscriptions/{stripe_subscription_id}/renew",
        json={"outcome": outcome},
    )
    assert response.status_code == 200, response.text


async def test_pause_with_each_behavior_then_resume(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    data = await create_subscription(billing_stack, stripe, "user-pause")
    sid, stripe_id = data["id"], data["stripeSubscriptionId"]

    async with billing_stack.http() as http:
        for behavior in BEHAVIORS:
            paused = await http.post(f"/v1/subscriptions/{sid}/pause", json={"behavior": behavior})
            assert paused.status_code == 200, paused.text
            # Collection is paused, not the subscription: still active, still entitled.
            assert paused.json()["data"]["status"] == "active"
            assert paused.json()["data"]["entitled"] is True
            held = stripe.v1.subscriptions.retrieve(stripe_id).to_dict()["pause_collection"]
            assert held == {"behavior": behavior, "resumes_at": None}
            assert await pause_behavior(billing_stack, sid) == behavior
            assert paused.json()["data"]["pauseBehavior"] == behavior
            got = await get(billing_stack, sid)
            assert got["status"] == "active" and got["entitled"] is True
            assert got["pauseBehavior"] == behavior and got["pauseResumesAt"] is None

        resumes_at = (datetime.now(UTC) + timedelta(days=45)).replace(microsecond=0)
        until = await http.post(
            f"/v1/subscriptions/{sid}/pause",
            json={"behavior": "void", "resumesAt": resumes_at.isoformat()},
        )
        assert until.status_code == 200, until.text
        held = stripe.v1.subscriptions.retrieve(stripe_id).to_dict()["pause_collection"]
        assert held == {"behavior": "void", "resumes_at": int(resumes_at.timestamp())}
        shown = await get(billing_stack, sid)
        assert shown["pauseBehavior"] == "void"
        assert datetime.fromisoformat(shown["pauseResumesAt"]) == resumes_at

        bad = await http.post(f"/v1/subscriptions/{sid}/pause", json={"behavior": "freeze"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["code"] == "VALIDATION_ERROR"

        resumed = await http.post(f"/v1/subscriptions/{sid}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["data"]["status"] == "active"
        assert resumed.json()["data"]["entitled"] is True
        assert resumed.json()["data"]["pauseBehavior"] is None
    assert stripe.v1.subscriptions.retrieve(stripe_id).to_dict()["pause_collection"] is None
    assert (await get(billing_stack, sid))["pauseBehavior"] is None
    assert await pause_behavior(billing_stack, sid) is None
    await was_published(billing_stack, sid, "subscription.updated")


async def test_a_renewal_while_collection_is_paused_keeps_the_subscription_active(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    data = await create_subscription(billing_stack, stripe, "user-paused-renewal")
    sid, stripe_id = data["id"], data["stripeSubscriptionId"]
    async with billing_stack.http() as http:
        paused = await http.post(f"/v1/subscriptions/{sid}/pause", json={"behavior": "void"})
        assert paused.status_code == 200, paused.text

    renew(localstripe, stripe_id, "failed")  # no payment is attempted while paused

    async def next_period() -> dict[str, Any] | None:
        got = await get(billing_stack, sid)
        return got if got["currentPeriodEnd"] != data["currentPeriodEnd"] else None

    got: dict[str, Any] = await eventually(next_period, timeout=30)  # type: ignore[assignment]
    assert got["status"] == "active" and got["entitled"] is True
    assert got["graceUntil"] is None
    subscription = stripe.v1.subscriptions.retrieve(stripe_id).to_dict()
    assert stripe.v1.invoices.retrieve(subscription["latest_invoice"]).status == "void"
    # Published: the pause, then the new period; never a failed payment.
    await eventually(
        lambda: published(billing_stack, sid).count("subscription.updated") == 2, timeout=30
    )
    assert "subscription.payment_failed" not in published(billing_stack, sid)


async def test_a_failed_renewal_is_past_due_within_grace_and_a_paid_one_active(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    data = await create_subscription(billing_stack, stripe, "user-renewal")
    sid, stripe_id = data["id"], data["stripeSubscriptionId"]

    renew(localstripe, stripe_id, "failed")

    async def status_is(status: str) -> dict[str, Any] | None:
        got = await get(billing_stack, sid)
        return got if got["status"] == status else None

    dunning: dict[str, Any] = await eventually(lambda: status_is("past_due"), timeout=30)  # type: ignore[assignment]
    assert dunning["entitled"] is True  # the grace period
    assert dunning["graceUntil"] is not None
    grace_until = datetime.fromisoformat(dunning["graceUntil"])
    assert grace_until > datetime.now(UTC) + timedelta(days=6)
    assert dunning["currentPeriodEnd"] > data["currentPeriodEnd"]
    await was_published(billing_stack, sid, "subscription.payment_failed")

    renew(localstripe, stripe_id, "paid")

    async def paid() -> dict[str, Any] | None:
        got = await get(billing_stack, sid)
        return got if got["status"] == "active" and got["graceUntil"] is None else None

    active: dict[str, Any] = await eventually(paid, timeout=30)  # type: ignore[assignment]
    assert active["entitled"] is True
    assert active["currentPeriodEnd"] > dunning["currentPeriodEnd"]
    # Activated at creation, and again once paid.
    await eventually(
        lambda: published(billing_stack, sid).count("subscription.activated") == 2, timeout=30
    )
    kinds = published(billing_stack, sid)
    assert (
        kinds.index("subscription.payment_failed")
        < len(kinds) - 1
        == kinds.index("subscription.activated", 2)
    )


async def test_a_paused_subscription_is_resumed_through_relay(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    """Status `paused` (a trial that ended without a payment method, set to pause): not
    entitled; `/resume` resumes it in Stripe (`subscriptions.resume`) and it is paid for."""
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    customer = stripe.v1.customers.create({"metadata": {"userId": "user-trial"}})
    sid = stripe.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"plan": ensure_plan(stripe)}],
            "trial_period_days": 14,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    ).id

    async def relay_status(status: str) -> dict[str, Any] | None:
        async with billing_stack.http() as http:
            response = await http.get(f"/v1/subscriptions/{sid}")
        if response.status_code != 200:
            return None
        data: dict[str, Any] = response.json()["data"]
        return data if data["status"] == status else None

    trialing: dict[str, Any] = await eventually(lambda: relay_status("trialing"), timeout=30)  # type: ignore[assignment]
    assert trialing["entitled"] is True and trialing["trialEnd"] is not None

    renew(localstripe, sid, "paid")  # the trial ends; there is no card to charge
    paused: dict[str, Any] = await eventually(lambda: relay_status("paused"), timeout=30)  # type: ignore[assignment]
    assert paused["entitled"] is False
    await was_published(billing_stack, sid, "subscription.access_revoked")

    stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    async with billing_stack.http() as http:
        resumed = await http.post(f"/v1/subscriptions/{sid}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["data"]["status"] == "active"
    assert resumed.json()["data"]["entitled"] is True
    held = stripe.v1.subscriptions.retrieve(sid).to_dict()
    assert held["status"] == "active"
    assert stripe.v1.invoices.retrieve(held["latest_invoice"]).status == "paid"
    assert (await get(billing_stack, sid))["status"] == "active"
