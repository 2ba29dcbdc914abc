"""/v1/subscriptions end to end: API → subscription workflow → activities → localstripe.

Creation makes one customer per user and one subscription per request (even retried);
Stripe's refusals are the client's 400 and create nothing; declines are `incomplete`;
cancel and change are updates on the workflow; every Stripe event makes the workflow
re-read Stripe, so an event's payload never decides the state.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from stripe import StripeClient
from temporalio.client import WorkflowExecutionStatus

from relay import search_attributes
from relay.models.billing import BillingSubscription
from relay.webhooks.publish import events_table
from tests.billing.helpers import ensure_plan, outside_subscription, signed, subscription_event
from tests.conftest import Stack, eventually
from tests.support.api import closed_address
from workflows import clients as workflow_clients
from workflows.clients.billing import subscription_handle, subscription_state

pytestmark = pytest.mark.e2e

S = BillingSubscription.__table__  # type: ignore[attr-defined]


async def create(stack: Stack, **body: Any) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/subscriptions", json=body)


def published(stack: Stack, subscription_id: str) -> list[str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [row.type for row in rows if row.data.get("id") == subscription_id]


async def test_create_get_list_and_one_customer_per_user(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    price = ensure_plan(stripe)
    first = await create(
        billing_stack,
        userId="user-ada",
        email="ada@example.com",
        priceId=price,
        paymentMethodId="pm_card_visa",
        metadata={"plan": "pro"},
    )
    assert first.status_code == 201, first.text
    data = first.json()["data"]
    assert data["id"].startswith("rsub_") and data["userId"] == "user-ada"
    assert data["status"] == "active" and data["entitled"] is True
    assert data["stripeSubscriptionId"].startswith("sub_")
    assert data["currentPeriodEnd"] is not None and data["clientSecret"] is None
    customer = stripe.v1.customers.retrieve(data["stripeCustomerId"])
    assert customer.metadata["userId"] == "user-ada"
    subscription = stripe.v1.subscriptions.retrieve(data["stripeSubscriptionId"])
    assert subscription.metadata["relaySubscriptionId"] == data["id"]

    second = await create(billing_stack, userId="user-ada", priceId=price)
    assert second.status_code == 201, second.text
    assert second.json()["data"]["stripeCustomerId"] == data["stripeCustomerId"]

    async with billing_stack.http() as http:
        got = (await http.get(f"/v1/subscriptions/{data['id']}")).json()["data"]
        assert got["status"] == "active" and got["entitled"] is True
        assert got["stripeSubscriptionId"] == data["stripeSubscriptionId"]
        page1 = (
            await http.get("/v1/subscriptions", params={"userId": "user-ada", "limit": 1})
        ).json()
        page2 = (
            await http.get(
                "/v1/subscriptions",
                params={"userId": "user-ada", "limit": 1, "cursor": page1["nextCursor"]},
            )
        ).json()
        assert page2["nextCursor"] is None
        assert {page1["data"][0]["id"], page2["data"][0]["id"]} == {
            data["id"],
            second.json()["data"]["id"],
        }
        none = (await http.get("/v1/subscriptions", params={"status": "canceled"})).json()
        assert none["data"] == []
        missing = await http.get("/v1/subscriptions/rsub_nope")
        assert missing.status_code == 404
    assert published(billing_stack, data["id"]) == [
        "subscription.created",
        "subscription.activated",
    ]
    handle = subscription_handle(billing_stack.client, data["id"])
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.USER_ID) == "user-ada"
    assert attributes.get(search_attributes.ENTITY_ID) == data["id"]


async def test_a_retried_request_creates_nothing_twice(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    price = ensure_plan(stripe)
    body = {
        "userId": "user-retry",
        "priceId": price,
        "paymentMethodId": "pm_card_visa",
        "idempotencyKey": f"order-42-{uuid.uuid4().hex}",
    }
    first = await create(billing_stack, **body)
    again = await create(billing_stack, **body)
    assert first.status_code == again.status_code == 201
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    customer = first.json()["data"]["stripeCustomerId"]
    listed = stripe.v1.subscriptions.list({"customer": customer})
    assert len(listed.data) == 1
    other = await create(billing_stack, **{**body, "quantity": 3})
    assert other.status_code == 409, other.text
    assert [d["field"] for d in other.json()["error"]["details"]] == ["idempotencyKey", "quantity"]
    assert len(stripe.v1.subscriptions.list({"customer": customer}).data) == 1


async def test_unknown_price_is_400_and_nothing_is_created(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    response = await create(billing_stack, userId="user-typo", priceId="price_does_not_exist")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["field"] == "priceId"
    with billing_stack.engine.connect() as connection:
        assert connection.execute(select(S).where(S.c.user_id == "user-typo")).first() is None
    # The workflow ended: nothing half-created waits anywhere.
    customers = stripe.v1.customers.list()
    for customer in customers.data:
        if customer.metadata.to_dict().get("userId") == "user-typo":
            assert stripe.v1.subscriptions.list({"customer": customer.id}).data == []


async def test_declines(billing_stack: Stack, stripe: StripeClient) -> None:
    price = ensure_plan(stripe)
    # The card is accepted, the first invoice's charge declined: incomplete, not a 5xx.
    declined = await create(
        billing_stack,
        userId="user-declined",
        priceId=price,
        paymentMethodId="pm_card_chargeCustomerFail",
    )
    assert declined.status_code == 201, declined.text
    data = declined.json()["data"]
    assert data["status"] == "incomplete" and data["entitled"] is False
    assert data["declineCode"] == "card_declined" and data["clientSecret"]
    assert "subscription.payment_failed" in published(billing_stack, data["id"])
    async with billing_stack.http() as http:
        stored = (await http.get(f"/v1/subscriptions/{data['id']}")).json()["data"]
    assert stored["status"] == "incomplete" and stored["declineCode"] == "card_declined"
    assert stored["clientSecret"] is None  # answered once, never stored
    # The card is refused outright when attached: 402, no subscription.
    refused = await create(
        billing_stack,
        userId="user-refused",
        priceId=price,
        paymentMethodId="pm_card_visa_chargeDeclined",
    )
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "PAYMENT_DECLINED"


async def test_cancel_at_period_end_then_now_and_change(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    price = ensure_plan(stripe)
    bigger = ensure_plan(stripe, "max-monthly", 3000)
    data = (
        await create(billing_stack, userId="user-c", priceId=price, paymentMethodId="pm_card_visa")
    ).json()["data"]
    sid = data["id"]
    async with billing_stack.http() as http:
        changed = await http.post(
            f"/v1/subscriptions/{sid}/change", json={"priceId": bigger, "quantity": 2}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["data"]["priceId"] == bigger
        assert changed.json()["data"]["quantity"] == 2
        bad = await http.post(f"/v1/subscriptions/{sid}/change", json={"priceId": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == "priceId"

        later = await http.post(f"/v1/subscriptions/{sid}/cancel", json={"atPeriodEnd": True})
        assert later.status_code == 200, later.text
        assert later.json()["data"]["cancelAtPeriodEnd"] is True
        assert later.json()["data"]["entitled"] is True  # until the period ends

        now = await http.post(f"/v1/subscriptions/{sid}/cancel", json={"atPeriodEnd": False})
        assert now.status_code == 200, now.text
        assert now.json()["data"]["status"] == "canceled"
        assert now.json()["data"]["entitled"] is False

        handle = subscription_handle(billing_stack.client, sid)
        await eventually(lambda: _status(handle, WorkflowExecutionStatus.COMPLETED), timeout=30)
        ended = await http.post(f"/v1/subscriptions/{sid}/cancel", json={"atPeriodEnd": False})
        assert ended.status_code == 409
        got = (await http.get(f"/v1/subscriptions/{sid}")).json()["data"]
        assert got["status"] == "canceled" and got["entitled"] is False
        assert got["priceId"] == bigger and got["quantity"] == 2
    kinds = published(billing_stack, sid)
    assert kinds[:2] == ["subscription.created", "subscription.activated"]
    assert "subscription.updated" in kinds
    assert kinds[-2:] == ["subscription.canceled", "subscription.access_revoked"]


async def _status(handle: Any, status: WorkflowExecutionStatus) -> bool:
    return (await handle.describe()).status == status


async def test_an_event_never_decides_the_state_stripe_does(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    """A stale `deleted` event (Stripe says active) and a `past_due` event arriving out of
    order change nothing: the workflow re-reads the subscription from Stripe."""
    sid = outside_subscription(stripe, user_id="user-order")
    newer = subscription_event(sid, "customer.subscription.deleted", status="canceled")
    older = subscription_event(sid, status="past_due")
    async with billing_stack.http(authenticated=False) as http:
        for event in (newer, older):
            body, headers = signed(event)
            assert (await http.post("/webhooks/stripe", content=body, headers=headers)).is_success

    async def applied() -> Any:
        state = await subscription_state(billing_stack.client, sid)
        return state if state.events_applied == 2 else None

    state = await eventually(applied, timeout=30)
    assert state.status == "active" and state.entitled  # type: ignore[union-attr]
    # Then Stripe really cancels it: the next event (even an old-looking one) shows it.
    stripe.v1.subscriptions.cancel(sid)
    body, headers = signed(subscription_event(sid, status="active"))
    async with billing_stack.http(authenticated=False) as http:
        assert (await http.post("/webhooks/stripe", content=body, headers=headers)).is_success
    handle = subscription_handle(billing_stack.client, sid)
    view = await handle.result()
    assert view.status == "canceled" and not view.entitled


async def test_events_for_a_subscription_stripe_does_not_know_end_quietly(
    billing_stack: Stack,
) -> None:
    body, headers = signed(subscription_event("sub_unknownToStripe"))
    async with billing_stack.http(authenticated=False) as http:
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.json()["data"]["status"] == "FORWARDED"
    view = await subscription_handle(billing_stack.client, "sub_unknownToStripe").result()
    assert view.status == "pending"
    with billing_stack.engine.connect() as connection:
        assert connection.execute(select(S).where(S.c.id == "sub_unknownToStripe")).first() is None


async def test_stripe_down_is_a_retryable_502_and_the_workflow_keeps_trying(
    temporal_env: Any, engine: Any, keyring: Any, make_settings: Any, monkeypatch: Any
) -> None:
    from datetime import timedelta

    from tests.billing.conftest import running_stack

    monkeypatch.setattr(workflow_clients, "UPDATE_WAIT", timedelta(seconds=3))
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key="sk_test_down",
        stripe_api_base=f"http://{closed_address()}",
    ) as stack:
        response = await create(stack, userId="user-down", priceId="pro", idempotencyKey="k-down")
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "PROVIDER_ERROR" and error["details"]["retryable"] is True
        handle = subscription_handle(stack.client, error["details"]["subscriptionId"])

        async def retrying() -> bool:
            description = await handle.describe()
            pending = description.raw_description.pending_activities
            return description.status == WorkflowExecutionStatus.RUNNING and any(
                activity.attempt >= 2 for activity in pending
            )

        await eventually(retrying, timeout=30)
