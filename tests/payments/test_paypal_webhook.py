"""POST /webhooks/paypal: PayPal's signed events (sent by the PayPal sandbox, verified by its
verify-webhook-signature API) recorded once in the inbound inbox and forwarded to the
payment's workflow; forged or unsigned ones refused with nothing recorded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from relay.inbound.repository import T
from relay.sandbox.paypal import AUTH_ALGO, PayPalServer, serialize, signed_message
from tests.billing.helpers import signals_received
from tests.conftest import Stack, eventually
from tests.payments.test_paypal import paypal_body, post, relay_status_becomes
from workflows.clients.payments import payment_handle, payment_state

pytestmark = pytest.mark.e2e


def inbox_rows(stack: Stack, event_id: str | None = None) -> list[Any]:
    query = select(T.c.event_id, T.c.type, T.c.status, T.c.object_id).where(
        T.c.provider == "paypal"
    )
    if event_id is not None:
        query = query.where(T.c.event_id == event_id)
    with stack.engine.connect() as connection:
        return list(connection.execute(query))


def signed_headers(server: PayPalServer, body: bytes) -> dict[str, str]:
    """The headers PayPal sends with `body`, signed by the sandbox's key for the stack's
    webhook id (as the sandbox's own deliveries are)."""
    transmission_id = str(uuid.uuid4())
    transmission_time = "2026-11-26T12:00:00Z"
    signature = server.state.signer.sign(
        signed_message(transmission_id, transmission_time, server.sandbox.webhook_id, body)
    )
    return {
        "Content-Type": "application/json",
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
        "PAYPAL-TRANSMISSION-SIG": signature,
        "PAYPAL-CERT-URL": server.state.cert_url,
        "PAYPAL-AUTH-ALGO": AUTH_ALGO,
    }


async def deliver(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with stack.http(authenticated=False) as http:
        return await http.post("/webhooks/paypal", content=body, headers=headers)


def sent_event(server: PayPalServer, event_type: str) -> dict[str, Any]:
    found = [e for e in server.state.events() if e["eventType"] == event_type]
    assert found, f"the sandbox sent no {event_type}"
    return found[0]


async def approved_payment(stack: Stack, server: PayPalServer) -> dict[str, Any]:
    data = (await post(stack, "/v1/payments", paypal_body())).json()["data"]
    server.state.approve(data["paypalOrderId"])
    await relay_status_becomes(stack, data["id"], "REQUIRES_CAPTURE")
    return data  # type: ignore[no-any-return]


async def test_the_sandboxes_signed_event_reaches_the_workflow_once(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    data = await approved_payment(paypal_stack, paypal_sandbox)
    event = sent_event(paypal_sandbox, "CHECKOUT.ORDER.APPROVED")
    assert event["deliveries"][0]["status"] == "delivered"

    async def forwarded(event_id: str) -> bool:
        rows = inbox_rows(paypal_stack, event_id)
        return len(rows) == 1 and rows[0].status == "FORWARDED"

    await eventually(lambda: forwarded(event["id"]), timeout=30)
    rows = inbox_rows(paypal_stack, event["id"])
    assert (rows[0].type, rows[0].object_id) == ("CHECKOUT.ORDER.APPROVED", data["paypalOrderId"])
    handle = payment_handle(paypal_stack.client, data["id"])
    state = await payment_state(paypal_stack.client, data["id"])
    assert state.last_event_type == "CHECKOUT.ORDER.APPROVED"
    assert state.last_event_id == event["id"]
    signals = await signals_received(handle)

    # PayPal delivers the same event again (a retry): recorded once, not forwarded twice.
    body = serialize(event["event"])
    again = await deliver(paypal_stack, body, signed_headers(paypal_sandbox, body))
    assert again.status_code == 200, again.text
    assert again.json()["data"]["duplicate"] is True
    assert len(inbox_rows(paypal_stack, event["id"])) == 1
    assert await signals_received(handle) == signals

    # The capture's event (PAYMENT.CAPTURE.COMPLETED) is routed by its custom_id.
    captured = await post(paypal_stack, f"/v1/payments/{data['id']}/capture")
    assert captured.status_code == 200, captured.text
    completed = sent_event(paypal_sandbox, "PAYMENT.CAPTURE.COMPLETED")
    await eventually(lambda: forwarded(completed["id"]), timeout=30)


async def test_a_forged_or_unsigned_event_is_400_and_not_recorded(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    data = await approved_payment(paypal_stack, paypal_sandbox)
    genuine = sent_event(paypal_sandbox, "CHECKOUT.ORDER.APPROVED")["event"]
    before = len(inbox_rows(paypal_stack))

    # A changed event under the signature of the genuine one: PayPal answers FAILURE.
    forged = json.loads(json.dumps(genuine))
    forged["id"] = "WH-FORGED-" + uuid.uuid4().hex[:12]
    forged["event_type"] = "PAYMENT.CAPTURE.COMPLETED"
    headers = signed_headers(paypal_sandbox, serialize(genuine))
    refused = await deliver(paypal_stack, serialize(forged), headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "INVALID_SIGNATURE"

    # A header missing.
    body = serialize(forged)
    unsigned = signed_headers(paypal_sandbox, body)
    del unsigned["PAYPAL-TRANSMISSION-SIG"]
    missing = await deliver(paypal_stack, body, unsigned)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "INVALID_SIGNATURE"

    assert len(inbox_rows(paypal_stack)) == before
    assert inbox_rows(paypal_stack, forged["id"]) == []
    state = await payment_state(paypal_stack.client, data["id"])
    assert state.view is not None and state.view.relay_status.value == "REQUIRES_CAPTURE"


async def test_a_payload_saying_completed_changes_nothing_the_order_does_not_confirm(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    """A genuinely signed event whose payload claims a capture: the workflow re-reads the
    order from PayPal (still APPROVED) and trusts that."""
    data = await approved_payment(paypal_stack, paypal_sandbox)
    event = {
        "id": "WH-TEST-" + uuid.uuid4().hex[:12],
        "event_version": "1.0",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "resource_type": "capture",
        "resource": {
            "id": "CAPTURE-THAT-NEVER-WAS",
            "status": "COMPLETED",
            "custom_id": data["id"],
            "supplementary_data": {"related_ids": {"order_id": data["paypalOrderId"]}},
        },
    }
    body = serialize(event)
    answer = await deliver(paypal_stack, body, signed_headers(paypal_sandbox, body))
    assert answer.status_code == 200, answer.text

    async def seen() -> bool:
        state = await payment_state(paypal_stack.client, data["id"])
        return state.last_event_id == event["id"] and state.events_applied >= 2

    await eventually(seen, timeout=30)
    state = await payment_state(paypal_stack.client, data["id"])
    assert state.view is not None and state.view.relay_status.value == "REQUIRES_CAPTURE"
