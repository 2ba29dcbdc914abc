"""/v1/payments end to end: API → payment workflow → activities → localstripe.

Outcomes are checked where they happen: the PaymentIntents at localstripe, the workflow's
state, the read model and Relay's outgoing events.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from stripe import StripeClient

from relay import search_attributes
from relay.billing.contracts import ReconcileInput, ReconcileResult
from relay.inbound.contracts import InboundEventSignal
from relay.inbound.repository import T
from relay.sandbox.stripe import StripeSandbox
from relay.webhooks.publish import events_table
from tests.billing.helpers import signals_received, signed, stripe_event
from tests.conftest import Stack, eventually
from tests.support.api import closed_address
from workflows.billing import StripeReconcileWorkflow
from workflows.clients.payments import payment_handle, payment_state
from workflows.payments import PaymentWorkflow

pytestmark = pytest.mark.e2e

THREE_D_SECURE_CARD = "4000002500003155"  # localstripe asks for authentication


async def create(stack: Stack, **body: Any) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/payments", json=body)


async def post(stack: Stack, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with stack.http() as http:
        return await http.post(path, json=body or {})


async def get(stack: Stack, payment_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def published(stack: Stack, payment_id: str) -> list[str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [row.type for row in rows if row.data.get("id") == payment_id]


def intents(stripe: StripeClient) -> list[Any]:
    return list(stripe.v1.payment_intents.list({"limit": 100}).data)


def three_d_secure_method(stripe: StripeClient) -> str:
    method = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {
                "number": THREE_D_SECURE_CARD,
                "exp_month": 12,
                "exp_year": 2030,
                "cvc": "123",
            },
        }
    )
    return str(method.id)


async def test_create_and_confirm_with_a_visa_succeeds(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    response = await create(
        billing_stack,
        amount=9999,
        currency="USD",
        userId="user-ada",
        paymentMethodId="pm_card_visa",
        confirm=True,
        metadata={"order": "42"},
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["provider"] == "stripe"
    assert data["status"] == "succeeded" and data["relayStatus"] == "SUCCEEDED"
    assert data["amount"] == 9999 and data["currency"] == "usd"
    assert data["amountCaptured"] == 9999
    assert data["clientSecret"].startswith(data["stripePaymentIntentId"])
    assert data["nextAction"] is None and data["lastError"] is None

    intent = stripe.v1.payment_intents.retrieve(data["stripePaymentIntentId"])
    assert intent.status == "succeeded"
    assert intent.metadata["relayPaymentId"] == data["id"]
    assert intent.metadata["userId"] == "user-ada" and intent.metadata["order"] == "42"

    got = await get(billing_stack, data["id"])
    assert got["relayStatus"] == "SUCCEEDED" and got["clientSecret"] is None
    assert published(billing_stack, data["id"]) == ["payment.succeeded"]
    async with billing_stack.http() as http:
        listed = (await http.get("/v1/payments", params={"userId": "user-ada"})).json()
        assert [p["id"] for p in listed["data"]] == [data["id"]]
        none = (await http.get("/v1/payments", params={"status": "REFUNDED"})).json()
        assert none["data"] == []
        assert (await http.get("/v1/payments/not-an-id")).status_code == 404
    handle = payment_handle(billing_stack.client, data["id"])
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.ENTITY_ID) == data["id"]
    assert attributes.get(search_attributes.USER_ID) == "user-ada"


async def test_a_declined_card_is_402_and_the_payment_failed(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    body = {
        "amount": 2500,
        "currency": "eur",
        "paymentMethodId": "pm_card_chargeCustomerFail",  # localstripe declines its charges
        "confirm": True,
        "idempotencyKey": f"order-declined-{uuid.uuid4().hex}",
    }
    response = await create(billing_stack, **body)
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "PAYMENT_DECLINED"
    assert error["details"]["declineCode"] == "card_declined"
    payment = error["details"]["payment"]
    assert payment["relayStatus"] == "FAILED" and payment["status"] == "requires_payment_method"
    assert payment["lastError"]["declineCode"] == "card_declined"
    assert payment["lastError"]["message"]

    got = await get(billing_stack, payment["id"])
    assert got["relayStatus"] == "FAILED" and got["lastError"]["code"] == "card_declined"
    assert published(billing_stack, payment["id"]) == ["payment.failed"]
    # The same request again: the same answer, and no second attempt at Stripe.
    again = await create(billing_stack, **body)
    assert again.status_code == 402
    assert again.json()["error"]["details"]["payment"]["id"] == payment["id"]
    assert len(intents(stripe)) == 1

    # On Stripe the payer may confirm again with another card (until PAYMENT_EXPIRY);
    # localstripe keeps a declined intent's failed charge and refuses a second confirm.


async def test_a_three_d_secure_card_requires_action_then_succeeds_by_its_event(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    response = await create(
        billing_stack,
        amount=1500,
        currency="usd",
        paymentMethodId=three_d_secure_method(stripe),
        confirm=True,
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["relayStatus"] == "REQUIRES_ACTION" and data["status"] == "requires_action"
    assert data["nextAction"]["type"] == "use_stripe_sdk"
    assert data["clientSecret"]
    assert (await get(billing_stack, data["id"]))["nextAction"] is not None
    assert published(billing_stack, data["id"]) == ["payment.requires_action"]

    # The payer passes the challenge in the browser (Stripe.js; localstripe's route).
    async with httpx.AsyncClient(base_url=localstripe.api_base) as raw:
        passed = await raw.post(
            f"/v1/payment_intents/{data['stripePaymentIntentId']}/_authenticate",
            data={"client_secret": data["clientSecret"], "success": "true"},
            headers={"Authorization": f"Bearer {localstripe.api_key}"},
        )
    assert passed.status_code == 200, passed.text
    event = stripe_event(
        "payment_intent.succeeded",
        {"id": data["stripePaymentIntentId"], "metadata": {"relayPaymentId": data["id"]}},
    )
    async with billing_stack.http(authenticated=False) as http:
        body, headers = signed(event)
        assert (await http.post("/webhooks/stripe", content=body, headers=headers)).is_success

    async def succeeded() -> Any:
        got = await get(billing_stack, data["id"])
        return got if got["relayStatus"] == "SUCCEEDED" else None

    got = await eventually(succeeded, timeout=30)
    assert got["nextAction"] is None and got["amountCaptured"] == 1500
    assert published(billing_stack, data["id"]) == [
        "payment.requires_action",
        "payment.succeeded",
    ]


async def test_manual_capture_then_capture(billing_stack: Stack, stripe: StripeClient) -> None:
    response = await create(
        billing_stack,
        amount=4000,
        currency="usd",
        paymentMethodId="pm_card_visa",
        confirm=True,
        captureMethod="manual",
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["relayStatus"] == "REQUIRES_CAPTURE" and data["amountCaptured"] == 0
    path = f"/v1/payments/{data['id']}"

    too_much = await post(billing_stack, f"{path}/capture", {"amount": 4001})
    assert too_much.status_code == 422
    assert too_much.json()["error"]["details"][0]["field"] == "amount"
    refund_first = await post(billing_stack, f"{path}/refunds", {})
    assert refund_first.status_code == 409

    captured = await post(billing_stack, f"{path}/capture", {})
    assert captured.status_code == 200, captured.text
    assert captured.json()["data"]["relayStatus"] == "SUCCEEDED"
    assert captured.json()["data"]["amountCaptured"] == 4000
    assert stripe.v1.payment_intents.retrieve(data["stripePaymentIntentId"]).status == "succeeded"
    again = await post(billing_stack, f"{path}/capture", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"


async def test_cancel_ends_the_payment(billing_stack: Stack, stripe: StripeClient) -> None:
    response = await create(billing_stack, amount=700, currency="gbp")
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["relayStatus"] == "PENDING" and data["status"] == "requires_payment_method"
    canceled = await post(billing_stack, f"/v1/payments/{data['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["relayStatus"] == "CANCELED"
    assert stripe.v1.payment_intents.retrieve(data["stripePaymentIntentId"]).status == "canceled"
    view = await payment_handle(billing_stack.client, data["id"]).result()
    assert view.relay_status == "CANCELED"
    assert (await get(billing_stack, data["id"]))["relayStatus"] == "CANCELED"
    assert published(billing_stack, data["id"]) == ["payment.canceled"]
    closed = await post(billing_stack, f"/v1/payments/{data['id']}/cancel")
    assert closed.status_code == 409


async def test_partial_and_full_refunds_and_no_more_than_remains(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    response = await create(
        billing_stack, amount=10000, currency="usd", paymentMethodId="pm_card_visa", confirm=True
    )
    data = response.json()["data"]
    path = f"/v1/payments/{data['id']}/refunds"

    first = await post(billing_stack, path, {"amount": 3000})
    assert first.status_code == 201, first.text
    refund = first.json()["data"]["refund"]
    assert refund["amount"] == 3000 and refund["status"] == "succeeded"
    assert refund["id"].startswith("re_")
    payment = first.json()["data"]["payment"]
    assert payment["relayStatus"] == "PARTIALLY_REFUNDED" and payment["amountRefunded"] == 3000

    over = await post(billing_stack, path, {"amount": 7001})
    assert over.status_code == 409, over.text
    assert over.json()["error"]["code"] == "CONFLICT"
    assert over.json()["error"]["details"]["remaining"] == 7000

    second = await post(billing_stack, path, {"amount": 2000})
    assert second.status_code == 201, second.text
    rest = await post(billing_stack, path, {})  # all that remains
    assert rest.status_code == 201, rest.text
    assert rest.json()["data"]["refund"]["amount"] == 5000
    final = rest.json()["data"]["payment"]
    assert final["relayStatus"] == "REFUNDED" and final["amountRefunded"] == 10000
    assert [r["amount"] for r in final["refunds"]] == [3000, 2000, 5000]

    at_stripe = stripe.v1.refunds.list({"payment_intent": data["stripePaymentIntentId"]}).data
    assert sorted(r.amount for r in at_stripe) == [2000, 3000, 5000]
    assert all(r.metadata["relayPaymentId"] == data["id"] for r in at_stripe)
    view = await payment_handle(billing_stack.client, data["id"]).result()
    assert view.relay_status == "REFUNDED"
    got = await get(billing_stack, data["id"])
    assert got["relayStatus"] == "REFUNDED" and len(got["refunds"]) == 3
    assert published(billing_stack, data["id"]) == [
        "payment.succeeded",
        "payment.refunded",
        "payment.refunded",
        "payment.refunded",
    ]
    closed = await post(billing_stack, path, {"amount": 1})
    assert closed.status_code == 409


async def test_one_idempotency_key_makes_one_payment_intent(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    body = {
        "amount": 1234,
        "currency": "usd",
        "paymentMethodId": "pm_card_visa",
        "confirm": True,
        "idempotencyKey": f"order-77-{uuid.uuid4().hex}",
    }
    before = len(intents(stripe))
    concurrent = await asyncio.gather(*(create(billing_stack, **body) for _ in range(3)))
    again = await create(billing_stack, **body)
    responses = [*concurrent, again]
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    ids = {r.json()["data"]["id"] for r in responses}
    intent_ids = {r.json()["data"]["stripePaymentIntentId"] for r in responses}
    assert len(ids) == 1 and len(intent_ids) == 1
    after = intents(stripe)
    assert len(after) == before + 1
    assert [i.metadata["relayPaymentId"] for i in after].count(ids.pop()) == 1
    # The same key for another amount is a client bug, refused rather than answered
    # with the first payment.
    other = await create(billing_stack, **{**body, "amount": 999})
    assert other.status_code == 409, other.text
    fields = [d["field"] for d in other.json()["error"]["details"]]
    assert fields == ["idempotencyKey", "amount"]
    assert len(intents(stripe)) == before + 1


async def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    cases = {
        "amount": {"amount": 99.99, "currency": "usd"},
        "currency": {"amount": 100, "currency": "dollars"},
    }
    for field, body in cases.items():
        response = await create(billing_stack, **body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert response.json()["error"]["details"][0]["field"] == field
    for amount in (0, -5, "100"):
        response = await create(billing_stack, amount=amount, currency="usd")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "amount"
    assert intents(stripe) == []


async def test_stripe_refusing_the_request_is_400_and_creates_nothing(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    for field, body in {
        "customerId": {"customerId": "cus_nobody"},
        "paymentMethodId": {"paymentMethodId": "pm_nothing"},
    }.items():
        response = await create(billing_stack, amount=500, currency="usd", confirm=True, **body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == field
        assert error["details"][0]["message"]
    assert intents(stripe) == []
    async with billing_stack.http() as http:
        assert (await http.get("/v1/payments")).json()["data"] == []


async def test_a_signed_stripe_event_reaches_the_payment_once(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    response = await create(
        billing_stack,
        amount=3000,
        currency="usd",
        paymentMethodId="pm_card_visa",
        captureMethod="manual",
        confirm=True,
    )
    data = response.json()["data"]
    assert data["relayStatus"] == "REQUIRES_CAPTURE"
    intent_id = data["stripePaymentIntentId"]
    # Captured behind Relay's back (the dashboard): only the event tells the workflow.
    stripe.v1.payment_intents.capture(intent_id)
    # The payload says "canceled": the workflow believes only the intent it re-reads.
    event = stripe_event(
        "payment_intent.succeeded",
        {
            "id": intent_id,
            "object": "payment_intent",
            "status": "canceled",
            "metadata": {"relayPaymentId": data["id"]},
        },
    )
    async with billing_stack.http(authenticated=False) as http:
        body, headers = signed(event)
        first = await http.post("/webhooks/stripe", content=body, headers=headers)
        body, headers = signed(event)
        again = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["data"]["status"] == "FORWARDED"
    assert again.json()["data"]["duplicate"] is True

    async def applied() -> Any:
        state = await payment_state(billing_stack.client, data["id"])
        return state if state.events_applied >= 1 else None

    state = await eventually(applied, timeout=30)
    assert state.relay_status == "SUCCEEDED" and state.last_event_id == event["id"]
    # A charge's event carries no relayPaymentId: the payment is found in the database.
    charge_event = stripe_event(
        "charge.refunded", {"id": "ch_x", "object": "charge", "payment_intent": intent_id}
    )
    async with billing_stack.http(authenticated=False) as http:
        body, headers = signed(charge_event)
        routed = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert routed.json()["data"]["status"] == "FORWARDED"
    # The first event forwarded again (a mark lost, the forwarder resends): the workflow
    # drops it by event id.
    handle = payment_handle(billing_stack.client, data["id"])
    await handle.signal(
        PaymentWorkflow.stripe_event,
        InboundEventSignal("inbox-again", "stripe", event["id"], event["type"], intent_id),
    )

    async def two() -> Any:
        state = await payment_state(billing_stack.client, data["id"])
        return state if state.events_applied >= 2 and state.duplicates_dropped >= 1 else None

    state = await eventually(two, timeout=30)
    assert state.events_applied == 2 and state.duplicates_dropped == 1
    assert await signals_received(handle) == 3
    assert (await get(billing_stack, data["id"]))["relayStatus"] == "SUCCEEDED"
    assert published(billing_stack, data["id"]) == ["payment.succeeded"]


async def test_events_about_other_intents_are_ignored(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    intent = stripe.v1.payment_intents.create({"amount": 100, "currency": "usd"})
    event = stripe_event("payment_intent.created", {"id": intent.id, "object": "payment_intent"})
    body, headers = signed(event)
    async with billing_stack.http(authenticated=False) as http:
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "IGNORED"


def inbox(stack: Stack, intent_id: str) -> dict[str, str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(T.c.type, T.c.status).where(T.c.object_id == intent_id))
        return {row.type: row.status for row in rows}


async def test_stripes_own_events_and_the_reconciliation_reach_the_payment(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    async def events_applied(payment_id: str) -> bool:
        return (await payment_state(billing_stack.client, payment_id)).events_applied >= 1

    body = {"amount": 800, "currency": "usd", "paymentMethodId": "pm_card_visa", "confirm": True}
    # Delivered: Relay's endpoint is up, localstripe sends payment_intent.succeeded.
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    delivered = (await create(billing_stack, **body)).json()["data"]
    await eventually(
        lambda: (
            inbox(billing_stack, delivered["stripePaymentIntentId"]).get("payment_intent.succeeded")
            == "FORWARDED"
        )
    )
    await eventually(lambda: events_applied(delivered["id"]))

    # Lost: the endpoint is down (localstripe tries once); the reconciliation feeds it.
    localstripe.register_webhook(f"http://{closed_address()}/webhooks/stripe")
    lost = (await create(billing_stack, **body)).json()["data"]
    assert inbox(billing_stack, lost["stripePaymentIntentId"]) == {}
    result: ReconcileResult = await billing_stack.client.execute_workflow(
        StripeReconcileWorkflow.run,
        ReconcileInput(),
        id=f"reconcile-payments-{uuid.uuid4().hex[:6]}",
        task_queue=billing_stack.settings.temporal_task_queue,
    )
    assert result.fed >= 1
    assert inbox(billing_stack, lost["stripePaymentIntentId"])["payment_intent.succeeded"] in (
        "PENDING",
        "FORWARDED",
    )
    await eventually(lambda: events_applied(lost["id"]), timeout=30)
    assert (await get(billing_stack, lost["id"]))["relayStatus"] == "SUCCEEDED"
