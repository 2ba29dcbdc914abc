"""PaymentWorkflow and InvoiceWorkflow, against localstripe.

- create-event-refunds: POST /v1/payments (manual capture, confirmed), a signed Stripe
  event and its duplicate, capture, a partial refund, then the rest (it ends REFUNDED).
- paypal-approve-capture-refunds: POST /v1/payments (provider paypal) against Relay's
  PayPal sandbox, the buyer's approval (its signed CHECKOUT.ORDER.APPROVED through
  /webhooks/paypal), capture, a partial refund, then the rest (it ends REFUNDED).
- InvoiceWorkflow create-send-event-paid: POST /v1/invoices (autoSend), paid at
  localstripe, a signed invoice.paid and its duplicate (it ends paid).
"""

from __future__ import annotations

from tests.histories.scenarios import Recording, scenario, until
from tests.histories.scenarios.billing import WEBHOOK_SECRET, _localstripe, _stripe_settings


@scenario("PaymentWorkflow", "create-event-refunds")
async def create_event_refunds(rec: Recording) -> list[str]:
    from relay.payments.contracts import payment_workflow_id
    from tests.billing.helpers import signed, stripe_event

    with _localstripe() as sandbox:
        async with rec.stack(**_stripe_settings(sandbox)) as stack:
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post(
                    "/v1/payments",
                    json={
                        "amount": 9999,
                        "currency": "usd",
                        "userId": "user-rec",
                        "paymentMethodId": "pm_card_visa",
                        "captureMethod": "manual",
                        "confirm": True,
                    },
                )
                created.raise_for_status()
                data = created.json()["data"]
                pid = data["id"]
                event = stripe_event(
                    "payment_intent.amount_capturable_updated",
                    {
                        "id": data["stripePaymentIntentId"],
                        "object": "payment_intent",
                        "metadata": {"relayPaymentId": pid},
                    },
                )
                for _ in range(2):  # Stripe's duplicate is dropped by the inbox
                    body, headers = signed(event, secret=WEBHOOK_SECRET)
                    (
                        await http.post("/webhooks/stripe", content=body, headers=headers)
                    ).raise_for_status()
                handle = stack.client.get_workflow_handle(payment_workflow_id(pid))

                async def synced() -> bool:
                    state = await handle.query("state")
                    return bool(state.get("events_applied") if isinstance(state, dict) else False)

                await until(synced)
                for path, body_json in (
                    ("capture", {}),
                    ("refunds", {"amount": 2000}),
                    ("refunds", {}),
                ):
                    response = await http.post(f"/v1/payments/{pid}/{path}", json=body_json)
                    response.raise_for_status()
                await handle.result()
            return [payment_workflow_id(pid)]


@scenario("PaymentWorkflow", "paypal-approve-capture-refunds")
async def paypal_approve_capture_refunds(rec: Recording) -> list[str]:
    from relay.payments.contracts import payment_workflow_id
    from relay.sandbox.paypal import PayPalSandbox

    with PayPalSandbox(port=0).run_in_thread() as server:
        sandbox = server.sandbox
        async with rec.stack(
            paypal_client_id=sandbox.client_id,
            paypal_client_secret=sandbox.client_secret,
            paypal_api_base=sandbox.api_base,
            paypal_webhook_id=sandbox.webhook_id,
            inbound_poll_interval="100ms",
        ) as stack:
            server.state.add_webhook(f"{stack.api_url}/webhooks/paypal", sandbox.webhook_id)
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post(
                    "/v1/payments",
                    json={
                        "provider": "paypal",
                        "amount": 1999,
                        "currency": "usd",
                        "userId": "user-rec",
                        "returnUrl": "https://shop.example/return",
                        "cancelUrl": "https://shop.example/cancel",
                    },
                )
                created.raise_for_status()
                data = created.json()["data"]
                pid = data["id"]
                server.state.approve(data["paypalOrderId"])
                handle = stack.client.get_workflow_handle(payment_workflow_id(pid))

                async def approved() -> bool:
                    response = await http.get(f"/v1/payments/{pid}")
                    return bool(response.json()["data"]["relayStatus"] == "REQUIRES_CAPTURE")

                await until(approved)
                for path, body_json in (
                    ("capture", {}),
                    ("refunds", {"amount": 500}),
                    ("refunds", {}),
                ):
                    response = await http.post(f"/v1/payments/{pid}/{path}", json=body_json)
                    response.raise_for_status()
                await handle.result()
            return [payment_workflow_id(pid)]


@scenario("InvoiceWorkflow", "create-send-event-paid")
async def invoice_create_send_event_paid(rec: Recording) -> list[str]:
    """POST /v1/invoices (autoSend) against localstripe, the customer pays, a signed
    `invoice.paid` and its duplicate: the workflow re-reads, publishes and ends."""
    from relay.payments.contracts import invoice_workflow_id
    from relay.stripe_api import stripe_client
    from tests.billing.helpers import signed, stripe_event

    with _localstripe() as sandbox:
        async with rec.stack(**_stripe_settings(sandbox)) as stack:
            stripe = stripe_client(stack.settings)
            assert stripe is not None
            customer = stripe.v1.customers.create({})
            stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
            stripe.v1.customers.update(
                customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
            )
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post(
                    "/v1/invoices",
                    json={
                        "customerId": customer.id,
                        "items": [{"description": "Consulting", "amount": 5000, "quantity": 2}],
                        "currency": "usd",
                        "autoSend": True,
                    },
                )
                created.raise_for_status()
                data = created.json()["data"]
                stripe.v1.invoices.pay(data["stripeInvoiceId"])
                event = stripe_event(
                    "invoice.paid",
                    {
                        "id": data["stripeInvoiceId"],
                        "object": "invoice",
                        "metadata": {"relayInvoiceId": data["id"]},
                    },
                )
                for _ in range(2):  # Stripe's duplicate is dropped by the inbox
                    body, headers = signed(event, secret=WEBHOOK_SECRET)
                    (
                        await http.post("/webhooks/stripe", content=body, headers=headers)
                    ).raise_for_status()
                await stack.client.get_workflow_handle(invoice_workflow_id(data["id"])).result()
            return [invoice_workflow_id(data["id"])]
