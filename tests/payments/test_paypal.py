"""PayPal payments end to end: API → payment workflow → activities → Relay's PayPal sandbox
(Orders v2 on loopback), with the sandbox's signed webhooks reaching /webhooks/paypal.

Outcomes are checked at the provider (the sandbox's orders, captures and refunds) as well
as in Relay.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from relay.sandbox.paypal import PayPalServer
from tests.conftest import Stack, eventually
from workflows import clients as workflow_clients
from workflows.clients.payments import payment_handle

pytestmark = pytest.mark.e2e

RETURN_URL = "https://shop.example/paypal/return"
CANCEL_URL = "https://shop.example/paypal/cancel"


def paypal_body(**extra: Any) -> dict[str, Any]:
    return {
        "provider": "paypal",
        "amount": 1999,
        "currency": "usd",
        "returnUrl": RETURN_URL,
        "cancelUrl": CANCEL_URL,
        **extra,
    }


async def post(stack: Stack, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with stack.http() as http:
        return await http.post(path, json=body or {})


async def get(stack: Stack, payment_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def relay_status_becomes(stack: Stack, payment_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        data = await get(stack, payment_id)
        return data if data["relayStatus"] == status else None

    return await eventually(reached, timeout=30)  # type: ignore[return-value]


async def approve_in_the_browser(approve_url: str) -> httpx.Response:
    """What the buyer does: open the approval page, press Approve (the form's POST)."""
    async with httpx.AsyncClient() as http:
        page = await http.get(approve_url)
        assert page.status_code == 200 and 'value="approve"' in page.text
        return await http.post(approve_url, data={"action": "approve"})


async def test_create_approve_capture_and_refund(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    sandbox = paypal_sandbox.state
    created = await post(
        paypal_stack,
        "/v1/payments",
        paypal_body(userId="user-ada", description="Order 42", metadata={"cart": "c-9"}),
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["provider"] == "paypal" and data["relayStatus"] == "REQUIRES_ACTION"
    assert data["status"] == "CREATED" and data["amount"] == 1999
    assert data["approveUrl"].startswith(f"{paypal_sandbox.api_base}/checkoutnow?token=")
    order_id = data["paypalOrderId"]
    order = sandbox.get_order(order_id)
    unit = order["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "19.99"}
    assert unit["custom_id"] == data["id"] and order["intent"] == "CAPTURE"
    assert unit["description"] == "Order 42" and data["description"] == "Order 42"
    assert data["metadata"] == {"cart": "c-9"}

    # Not approved yet: PayPal refuses the capture (ORDER_NOT_APPROVED), Relay says 409.
    early = await post(paypal_stack, f"/v1/payments/{data['id']}/capture")
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "CONFLICT"
    assert sandbox.get_order(order_id)["status"] == "CREATED"

    back = await approve_in_the_browser(data["approveUrl"])
    assert back.status_code == 303 and back.headers["location"].startswith(RETURN_URL)
    # CHECKOUT.ORDER.APPROVED, signed by the sandbox, verified and forwarded by Relay.
    approved = await relay_status_becomes(paypal_stack, data["id"], "REQUIRES_CAPTURE")
    assert approved["status"] == "APPROVED" and approved["approveUrl"] is None

    captured = await post(paypal_stack, f"/v1/payments/{data['id']}/capture")
    assert captured.status_code == 200, captured.text
    payment = captured.json()["data"]
    assert payment["relayStatus"] == "SUCCEEDED" and payment["amountCaptured"] == 1999
    capture_id = payment["paypalCaptureId"]
    assert sandbox.get_capture(capture_id)["status"] == "COMPLETED"
    assert sandbox.get_order(order_id)["status"] == "COMPLETED"

    partial = await post(paypal_stack, f"/v1/payments/{data['id']}/refunds", {"amount": 500})
    assert partial.status_code == 201, partial.text
    refunded = partial.json()["data"]
    assert refunded["refund"]["amount"] == 500 and refunded["refund"]["status"] == "succeeded"
    assert refunded["payment"]["relayStatus"] == "PARTIALLY_REFUNDED"
    again = await post(paypal_stack, f"/v1/payments/{data['id']}/refunds", {"amount": 499})
    assert again.status_code == 201, again.text

    over = await post(paypal_stack, f"/v1/payments/{data['id']}/refunds", {"amount": 1001})
    assert over.status_code == 409, over.text
    assert over.json()["error"]["details"]["remaining"] == 1000

    rest = await post(paypal_stack, f"/v1/payments/{data['id']}/refunds")
    assert rest.status_code == 201, rest.text
    assert rest.json()["data"]["refund"]["amount"] == 1000
    assert rest.json()["data"]["payment"]["relayStatus"] == "REFUNDED"

    capture = sandbox.get_capture(capture_id)
    assert capture["status"] == "REFUNDED"
    refunds = sandbox.get_order(order_id)["purchase_units"][0]["payments"]["refunds"]
    assert sorted(r["amount"]["value"] for r in refunds) == ["10.00", "4.99", "5.00"]
    final = await relay_status_becomes(paypal_stack, data["id"], "REFUNDED")
    assert final["amountRefunded"] == 1999 and final["metadata"] == {"cart": "c-9"}
    handle = payment_handle(paypal_stack.client, data["id"])
    await eventually(lambda: _status_is(handle, WorkflowExecutionStatus.COMPLETED), timeout=30)
    # The OAuth token is cached: one for the worker, one for the API's verifications.
    assert len(sandbox._tokens) <= 2


async def _status_is(handle: Any, status: WorkflowExecutionStatus) -> bool:
    return bool((await handle.describe()).status == status)


async def test_approval_by_the_sandbox_control_and_jpy_has_no_decimals(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    created = await post(paypal_stack, "/v1/payments", paypal_body(amount=500, currency="JPY"))
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    order_id = data["paypalOrderId"]
    unit = paypal_sandbox.state.get_order(order_id)["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "JPY", "value": "500"}
    assert data["amount"] == 500 and data["currency"] == "jpy"

    httpx.post(f"{paypal_sandbox.api_base}/_sandbox/orders/{order_id}/approve").raise_for_status()
    await relay_status_becomes(paypal_stack, data["id"], "REQUIRES_CAPTURE")
    captured = await post(paypal_stack, f"/v1/payments/{data['id']}/capture")
    assert captured.status_code == 200, captured.text
    assert captured.json()["data"]["amountCaptured"] == 500
    # PAYMENT.CAPTURE.COMPLETED arrives too: the re-read changes nothing.
    assert (await relay_status_becomes(paypal_stack, data["id"], "SUCCEEDED"))["amount"] == 500


async def test_one_idempotency_key_creates_one_order(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    body = paypal_body(idempotencyKey="paypal-order-7")
    answers = await asyncio.gather(*(post(paypal_stack, "/v1/payments", body) for _ in range(4)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    ids = {a.json()["data"]["id"] for a in answers}
    orders = {a.json()["data"]["paypalOrderId"] for a in answers}
    assert len(ids) == 1 and len(orders) == 1
    again = await post(paypal_stack, "/v1/payments", body)
    assert again.json()["data"]["paypalOrderId"] in orders
    # At the provider: one order.
    assert len(paypal_sandbox.state._orders) == 1


async def test_cancel_before_approval_stops_tracking(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    data = (await post(paypal_stack, "/v1/payments", paypal_body())).json()["data"]
    canceled = await post(paypal_stack, f"/v1/payments/{data['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["relayStatus"] == "CANCELED"
    # PayPal orders cannot be deleted: it stays CREATED there, Relay no longer follows it.
    assert paypal_sandbox.state.get_order(data["paypalOrderId"])["status"] == "CREATED"
    handle = payment_handle(paypal_stack.client, data["id"])
    await eventually(lambda: _status_is(handle, WorkflowExecutionStatus.COMPLETED), timeout=30)
    assert (await get(paypal_stack, data["id"]))["relayStatus"] == "CANCELED"
    late = await post(paypal_stack, f"/v1/payments/{data['id']}/capture")
    assert late.status_code == 409


async def test_bad_paypal_requests_are_422(paypal_stack: Stack) -> None:
    no_urls = await post(
        paypal_stack, "/v1/payments", {"provider": "paypal", "amount": 100, "currency": "usd"}
    )
    assert no_urls.status_code == 422, no_urls.text
    stripe_only = await post(paypal_stack, "/v1/payments", paypal_body(confirm=True))
    assert stripe_only.status_code == 422
    unknown = await post(paypal_stack, "/v1/payments", paypal_body(currency="xof"))
    assert unknown.status_code == 422
    assert "XOF" in unknown.text


async def test_paypal_down_is_retryable_then_the_workflow_finishes_the_step(
    paypal_stack: Stack, paypal_sandbox: PayPalServer, monkeypatch: Any
) -> None:
    monkeypatch.setattr(workflow_clients, "UPDATE_WAIT", timedelta(seconds=3))
    httpx.post(f"{paypal_sandbox.api_base}/_sandbox/faults", json={"count": 4}).raise_for_status()
    body = paypal_body(idempotencyKey="paypal-down")
    down = await post(paypal_stack, "/v1/payments", body)
    assert down.status_code == 502, down.text
    error = down.json()["error"]
    assert error["code"] == "PROVIDER_ERROR" and error["details"]["retryable"] is True

    async def created() -> Any:
        response = await post(paypal_stack, "/v1/payments", body)
        return response if response.status_code == 201 else None

    response = await eventually(created, timeout=60, interval=1)
    data = response.json()["data"]  # type: ignore[attr-defined]
    assert data["id"] == error["details"]["paymentId"]
    assert data["relayStatus"] == "REQUIRES_ACTION"
    assert list(paypal_sandbox.state._orders) == [data["paypalOrderId"]]


async def test_a_capture_paypal_denies_later_is_failed(
    paypal_stack: Stack, paypal_sandbox: PayPalServer
) -> None:
    data = (await post(paypal_stack, "/v1/payments", paypal_body())).json()["data"]
    paypal_sandbox.state.approve(data["paypalOrderId"])
    await relay_status_becomes(paypal_stack, data["id"], "REQUIRES_CAPTURE")
    captured = (await post(paypal_stack, f"/v1/payments/{data['id']}/capture")).json()["data"]
    assert captured["relayStatus"] == "SUCCEEDED"
    # PayPal's review denies it: PAYMENT.CAPTURE.DENIED, the workflow re-reads the order.
    denied = httpx.post(
        f"{paypal_sandbox.api_base}/_sandbox/captures/{captured['paypalCaptureId']}/deny"
    )
    denied.raise_for_status()
    failed = await relay_status_becomes(paypal_stack, data["id"], "FAILED")
    assert failed["status"] == "CAPTURE_DENIED" and failed["amountCaptured"] == 0
    refund = await post(paypal_stack, f"/v1/payments/{data['id']}/refunds")
    assert refund.status_code == 409
    handle = payment_handle(paypal_stack.client, data["id"])
    await eventually(lambda: _status_is(handle, WorkflowExecutionStatus.COMPLETED), timeout=30)
