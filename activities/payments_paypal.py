"""Payments' PayPal side effects: Orders v2 through `relay.payments.paypal.PayPalClient`
(httpx against PayPal's REST API, configured by PAYPAL_API_BASE / PAYPAL_MODE and the
client credentials: the local sandbox in development and the tests, one code path).

Registered through `activities.payments.PaymentActivities`, which holds one instance.
Guarantees:
- every PayPal write carries the PayPal-Request-Id the workflow derived from its id and
  the step, so a retried activity gets PayPal's first answer instead of acting twice;
- the OAuth token lives in this worker's memory only (never in workflow history);
- every write answers the order re-read (`IntentSnapshot` with provider "paypal"), never
  what a write or an event said;
- PayPal refusing (ORDER_NOT_APPROVED, REFUND_AMOUNT_EXCEEDED…) is non-retryable with
  PayPal's issue; PayPal failing (5xx, 429, no connection) is retried by Temporal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.payments import paypal
from relay.payments.contracts import (
    CreateOrderInput,
    IntentSnapshot,
    OrderWriteInput,
    ReadOrderInput,
)
from relay.settings import Settings


class PayPalPaymentActivities:
    """PayPal orders, captures and refunds for the payment workflow."""

    def __init__(self, *, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._client = paypal.PayPalClient(
            settings, http or httpx.AsyncClient(timeout=paypal.TIMEOUT_SECONDS)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def activities(self) -> list[Callable[..., Any]]:
        return [self.create_paypal_order, self.read_paypal_order, self.write_paypal_order]

    async def _snapshot(self, order_id: str) -> IntentSnapshot:
        return paypal.order_snapshot(await self._client.get_order(order_id))

    @activity.defn
    async def create_paypal_order(self, params: CreateOrderInput) -> IntentSnapshot:
        """Create the order (intent CAPTURE), Relay's id as the unit's `custom_id`."""
        request = params.request
        currency = request.currency.upper()
        unit: dict[str, Any] = {
            "reference_id": "default",
            "custom_id": params.payment_id,
            "amount": {
                "currency_code": currency,
                "value": paypal.to_value(request.amount, currency),
            },
        }
        if request.description:
            unit["description"] = request.description[:127]
        body = {
            "intent": "CAPTURE",
            "purchase_units": [unit],
            "application_context": {
                "return_url": request.return_url,
                "cancel_url": request.cancel_url,
                "user_action": "PAY_NOW",
            },
        }
        created = await self._client.create_order(body, params.request_id)
        return await self._snapshot(str(created["id"]))

    @activity.defn
    async def read_paypal_order(self, params: ReadOrderInput) -> IntentSnapshot:
        """The order as PayPal holds it now, with its capture and refunds."""
        return await self._snapshot(params.paypal_order_id)

    @activity.defn
    async def write_paypal_order(self, params: OrderWriteInput) -> IntentSnapshot:
        """Capture the order or refund its capture, then the order re-read."""
        refund_id: str | None = None
        if params.action == "capture":
            await self._client.capture_order(params.paypal_order_id, params.request_id)
        elif params.action == "refund" and params.capture_id:
            body: dict[str, Any] = {"custom_id": params.payment_id}
            if params.amount is not None:
                body["amount"] = {
                    "currency_code": params.currency.upper(),
                    "value": paypal.to_value(params.amount, params.currency),
                }
            refund = await self._client.refund_capture(params.capture_id, body, params.request_id)
            refund_id = str(refund.get("id") or "") or None
        else:
            raise ApplicationError(
                f"unknown PayPal action {params.action}",
                type=ErrorCode.INTERNAL_ERROR.value,
                non_retryable=True,
            )
        snap = await self._snapshot(params.paypal_order_id)
        snap.refund_id = refund_id
        return snap
