"""Stripe down: `POST /v1/payments` answers a retryable 502 (never a 5xx from a stack
trace), the workflow keeps trying, and once Stripe is back the same request (same
idempotencyKey) gets the payment, with one PaymentIntent at the provider."""

from __future__ import annotations

import subprocess
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from relay.sandbox.stripe import StripeSandbox
from relay.stripe_api import stripe_client
from tests.billing.conftest import running_stack
from tests.conftest import eventually
from workflows import clients as workflow_clients
from workflows.clients.payments import payment_handle

pytestmark = pytest.mark.e2e


async def test_stripe_down_is_a_retryable_502_then_the_same_request_gets_the_payment(
    temporal_env: Any, engine: Any, keyring: Any, make_settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(workflow_clients, "UPDATE_WAIT", timedelta(seconds=3))
    sandbox = StripeSandbox()  # its port, with nothing listening yet: Stripe is down
    body = {
        "amount": 4200,
        "currency": "usd",
        "paymentMethodId": "pm_card_visa",
        "confirm": True,
        "idempotencyKey": f"order-down-{uuid.uuid4().hex}",
    }
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key=sandbox.api_key,
        stripe_api_base=sandbox.api_base,
    ) as stack:
        async with stack.http() as http:
            down = await http.post("/v1/payments", json=body)
        assert down.status_code == 502, down.text
        error = down.json()["error"]
        assert error["code"] == "PROVIDER_ERROR" and error["details"]["retryable"] is True
        handle = payment_handle(stack.client, error["details"]["paymentId"])

        async def retrying() -> bool:
            description = await handle.describe()
            pending = description.raw_description.pending_activities
            return description.status == WorkflowExecutionStatus.RUNNING and any(
                activity.attempt >= 2 for activity in pending
            )

        await eventually(retrying, timeout=30)

        process = subprocess.Popen(
            sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            sandbox.wait_ready()

            async def created() -> Any:
                async with stack.http() as http:
                    response = await http.post("/v1/payments", json=body)
                return response if response.status_code == 201 else None

            response = await eventually(created, timeout=60, interval=1)
            data = response.json()["data"]
            assert data["id"] == error["details"]["paymentId"]
            assert data["relayStatus"] == "SUCCEEDED"
            stripe = stripe_client(stack.settings)
            assert stripe is not None
            intents = stripe.v1.payment_intents.list({"limit": 100}).data
            assert [i.id for i in intents] == [data["stripePaymentIntentId"]]
        finally:
            process.terminate()
            process.wait(timeout=10)
