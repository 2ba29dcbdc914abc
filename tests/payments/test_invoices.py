"""/v1/invoices end to end: API → invoice workflow → activities → localstripe (Relay's
Stripe sandbox, which adds finalize, send and the hosted page to localstripe).

Outcomes are checked where they happen: the invoices at localstripe, the workflow's
state, the read model and Relay's outgoing events.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from stripe import StripeClient

from relay.billing import repository as billing_repository
from relay.sandbox.stripe import StripeSandbox
from relay.stripe_api import stripe_client
from relay.stripe_router import stripe_target
from relay.webhooks.publish import events_table
from tests.billing.conftest import running_stack
from tests.billing.helpers import signals_received, signed, stripe_event
from tests.conftest import Stack, eventually
from workflows import clients as workflow_clients
from workflows.clients.payments import invoice_handle, invoice_state

pytestmark = pytest.mark.e2e

ITEMS = [
    {"description": "Consulting", "amount": 5000, "quantity": 2},
    {"description": "Setup", "amount": 1500},
]


async def create(stack: Stack, **body: Any) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/invoices", json=body)


async def get(stack: Stack, invoice_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get(f"/v1/invoices/{invoice_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def published(stack: Stack, invoice_id: str) -> list[str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [row.type for row in rows if row.data.get("id") == invoice_id]


def invoices(stripe: StripeClient) -> list[Any]:
    return list(stripe.v1.invoices.list({"limit": 100}).data)


def customer_with_card(stripe: StripeClient) -> str:
    customer = stripe.v1.customers.create({})
    stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    return str(customer.id)


def sandbox_events(localstripe: StripeSandbox, object_id: str) -> list[str]:
    response = httpx.get(f"{localstripe.api_base}/_sandbox/events", params={"limit": 1000})
    return [
        event["type"]
        for event in response.json()["data"]
        if event["data"]["object"].get("id") == object_id
    ]


async def send_event(stack: Stack, event: dict[str, Any]) -> dict[str, Any]:
    async with stack.http(authenticated=False) as http:
        body, headers = signed(event)
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def invoice_event(type: str, stripe_invoice_id: str, relay_id: str, **fields: Any) -> Any:
    return stripe_event(
        type,
        {
            "id": stripe_invoice_id,
            "object": "invoice",
            "metadata": {"relayInvoiceId": relay_id},
            **fields,
        },
    )


async def test_an_invoice_is_finalized_sent_and_paid_by_the_customers_card(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    customer = customer_with_card(stripe)
    response = await create(
        billing_stack, customerId=customer, items=ITEMS, currency="USD", autoSend=True
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "open" and data["sent"] is True
    assert data["amountDue"] == 11500 and data["currency"] == "usd"
    assert data["customerId"] == customer
    assert data["hostedInvoiceUrl"] and data["invoicePdf"] and data["number"]
    sid = data["stripeInvoiceId"]

    at_stripe = stripe.v1.invoices.retrieve(sid).to_dict()
    assert at_stripe["metadata"]["relayInvoiceId"] == data["id"]
    assert at_stripe["collection_method"] == "send_invoice"
    lines = at_stripe["lines"]["data"]
    assert [(line["description"], line["quantity"], line["amount"]) for line in lines] == [
        ("Consulting", 2, 10000),
        ("Setup", 1, 1500),
    ]
    assert all(line["metadata"]["relayInvoiceId"] == data["id"] for line in lines)
    assert {"invoice.finalized", "invoice.sent"} <= set(sandbox_events(localstripe, sid))
    assert (await get(billing_stack, data["id"]))["status"] == "open"

    # The customer pays (localstripe charges the default card); Stripe's event tells Relay.
    assert stripe.v1.invoices.pay(sid).status == "paid"
    # The payload says "open": the workflow believes only the invoice it re-reads.
    event = invoice_event("invoice.paid", sid, data["id"], status="open")
    first = await send_event(billing_stack, event)
    again = await send_event(billing_stack, event)
    assert first["status"] == "FORWARDED" and again["duplicate"] is True

    handle = invoice_handle(billing_stack.client, data["id"])
    result = await asyncio.wait_for(handle.result(), timeout=30)  # paid: the run ends
    assert result.status == "paid" and result.amount_paid == 11500
    got = await get(billing_stack, data["id"])
    assert got["status"] == "paid" and got["amountPaid"] == 11500
    assert published(billing_stack, data["id"]) == ["invoice.paid"]
    assert await signals_received(handle) == 1
    async with billing_stack.http() as http:
        voided = await http.post(f"/v1/invoices/{data['id']}/void")
        assert voided.status_code == 409 and voided.json()["error"]["code"] == "CONFLICT"
        assert (await http.get("/v1/invoices/not-an-id")).status_code == 404
    # A later event about the paid invoice is recorded and IGNORED: no new run.
    late = await send_event(billing_stack, invoice_event("invoice.updated", sid, data["id"]))
    assert late["status"] == "IGNORED"


async def test_a_user_is_invoiced_as_billings_one_customer(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    first = await create(billing_stack, userId="user-inv", items=ITEMS[:1], currency="eur")
    second = await create(billing_stack, userId="user-inv", items=ITEMS[1:], currency="eur")
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    customer = billing_repository.customer_of(billing_stack.engine, "user-inv")
    assert customer is not None
    assert {first.json()["data"]["customerId"], second.json()["data"]["customerId"]} == {customer}
    assert first.json()["data"]["sent"] is False  # no autoSend
    assert stripe.v1.invoices.retrieve(first.json()["data"]["stripeInvoiceId"]).status == "open"
    async with billing_stack.http() as http:
        listed = await http.get("/v1/invoices", params={"userId": "user-inv", "limit": 1})
        assert listed.status_code == 200, listed.text
        page_one = listed.json()
        rest = await http.get(
            "/v1/invoices",
            params={"userId": "user-inv", "limit": 1, "cursor": page_one["nextCursor"]},
        )
        open_ones = await http.get("/v1/invoices", params={"status": "open"})
        nobody = await http.get("/v1/invoices", params={"userId": "someone-else"})
    # Newest first, one a page.
    ids = [page_one["data"][0]["id"], rest.json()["data"][0]["id"]]
    assert ids == [second.json()["data"]["id"], first.json()["data"]["id"]]
    assert rest.json()["nextCursor"] is None
    assert set(ids) <= {invoice["id"] for invoice in open_ones.json()["data"]}
    assert nobody.json()["data"] == []


async def test_void_is_for_open_invoices_and_ends_the_workflow(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    customer = customer_with_card(stripe)
    data = (await create(billing_stack, customerId=customer, items=ITEMS, currency="usd")).json()[
        "data"
    ]
    async with billing_stack.http() as http:
        voided = await http.post(f"/v1/invoices/{data['id']}/void")
        assert voided.status_code == 200, voided.text
        assert voided.json()["data"]["status"] == "void"
        again = await http.post(f"/v1/invoices/{data['id']}/void")
        assert again.status_code == 409
    assert stripe.v1.invoices.retrieve(data["stripeInvoiceId"]).status == "void"
    result = await asyncio.wait_for(
        invoice_handle(billing_stack.client, data["id"]).result(), timeout=30
    )
    assert result.status == "void"
    assert published(billing_stack, data["id"]) == []


async def test_a_failed_payment_is_published_once_per_stripe_event(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    customer = customer_with_card(stripe)
    data = (await create(billing_stack, customerId=customer, items=ITEMS, currency="usd")).json()[
        "data"
    ]
    event = invoice_event("invoice.payment_failed", data["stripeInvoiceId"], data["id"])
    assert (await send_event(billing_stack, event))["status"] == "FORWARDED"
    assert (await send_event(billing_stack, event))["duplicate"] is True

    async def applied() -> Any:
        state = await invoice_state(billing_stack.client, data["id"])
        return state if state.events_applied >= 1 else None

    state = await eventually(applied, timeout=30)
    assert state.events_applied == 1 and state.view is not None
    assert state.view.status == "open"
    assert published(billing_stack, data["id"]) == ["invoice.payment_failed"]


async def test_one_idempotency_key_makes_one_invoice(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    customer = customer_with_card(stripe)
    body = {
        "customerId": customer,
        "items": ITEMS,
        "currency": "usd",
        "idempotencyKey": f"inv-7-{uuid.uuid4().hex}",
    }
    concurrent = await asyncio.gather(*(create(billing_stack, **body) for _ in range(3)))
    again = await create(billing_stack, **body)
    responses = [*concurrent, again]
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert len({r.json()["data"]["stripeInvoiceId"] for r in responses}) == 1
    assert len(invoices(stripe)) == 1
    assert len(stripe.v1.invoice_items.list({"limit": 100}).data) == 0  # none left pending
    other = await create(billing_stack, **{**body, "currency": "eur"})
    assert other.status_code == 409, other.text
    assert [d["field"] for d in other.json()["error"]["details"]] == ["idempotencyKey", "currency"]
    assert len(invoices(stripe)) == 1


async def test_bad_input_is_422_and_a_bad_customer_400_and_nothing_is_created(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    good = {"customerId": "cus_x", "items": ITEMS, "currency": "usd"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("items.0.amount", {**good, "items": [{"description": "x", "amount": 99.99}]}),
        ("items.0.amount", {**good, "items": [{"description": "x", "amount": -5}]}),
        ("items.0.quantity", {**good, "items": [{"description": "x", "amount": 1, "quantity": 0}]}),
        ("items", {**good, "items": []}),
        ("currency", {**good, "currency": "dollars"}),
        ("daysUntilDue", {**good, "daysUntilDue": 0}),
    ]
    for field, body in cases:
        response = await create(billing_stack, **body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == field, error
    both = await create(billing_stack, **good, userId="u1")
    neither = await create(billing_stack, items=ITEMS, currency="usd")
    assert both.status_code == neither.status_code == 422

    refused = await create(billing_stack, **{**good, "customerId": "cus_nobody"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["field"] == "customerId"
    assert invoices(stripe) == []
    assert list(stripe.v1.invoice_items.list({"limit": 100}).data) == []


async def test_a_subscriptions_invoice_still_goes_to_billing(billing_stack: Stack) -> None:
    event = stripe_event(
        "invoice.paid",
        {"id": "in_sub", "object": "invoice", "subscription": "sub_abc", "metadata": {}},
    )
    target, _ = stripe_target(event, billing_stack.engine)
    assert target is not None and target.workflow_type == "SubscriptionWorkflow"
    unknown = stripe_event("invoice.paid", {"id": "in_other", "object": "invoice"})
    assert stripe_target(unknown, billing_stack.engine) == (None, "in_other")


async def test_stripe_down_is_a_retryable_502_then_the_same_request_gets_the_invoice(
    temporal_env: Any, engine: Any, keyring: Any, make_settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(workflow_clients, "UPDATE_WAIT", timedelta(seconds=3))
    sandbox = StripeSandbox()  # its port, with nothing listening yet: Stripe is down
    body = {
        "userId": "user-down",
        "items": ITEMS,
        "currency": "usd",
        "idempotencyKey": f"inv-down-{uuid.uuid4().hex}",
    }
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key=sandbox.api_key,
        stripe_api_base=sandbox.api_base,
    ) as stack:
        down = await create(stack, **body)
        assert down.status_code == 502, down.text
        error = down.json()["error"]
        assert error["code"] == "PROVIDER_ERROR" and error["details"]["retryable"] is True
        process = subprocess.Popen(
            sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            sandbox.wait_ready()

            async def created() -> Any:
                response = await create(stack, **body)
                return response if response.status_code == 201 else None

            response = await eventually(created, timeout=60, interval=1)
            data = response.json()["data"]
            assert data["id"] == error["details"]["invoiceId"]
            assert data["status"] == "open"
            stripe = stripe_client(stack.settings)
            assert stripe is not None
            listed = stripe.v1.invoices.list({"limit": 100}).data
            assert [i.id for i in listed] == [data["stripeInvoiceId"]]
        finally:
            process.terminate()
            process.wait(timeout=10)
