"""Stripe events as Stripe sends them: JSON bodies signed with the webhook secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

WEBHOOK_SECRET = "whsec_test_" + "a" * 32
OLD_WEBHOOK_SECRET = "whsec_test_" + "b" * 32


def stripe_event(
    type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created or int(time.time()),
        "type": type,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


def subscription_event(
    subscription_id: str, type: str = "customer.subscription.updated", **fields: Any
) -> dict[str, Any]:
    obj = {"id": subscription_id, "object": "subscription", "status": "active", **fields}
    return stripe_event(type, obj)


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """`Stripe-Signature: t=…,v1=hex(HMAC-SHA256(secret, "t.body"))` (Stripe's scheme)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def signed(event: dict[str, Any], **options: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sign(body, **options), "Content-Type": "application/json"}


async def signals_received(handle: WorkflowHandle[Any, Any]) -> int:
    """How many signals the workflow's history holds (every run of its chain)."""
    history = await handle.fetch_history()
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )


def ensure_plan(client: Any, plan_id: str = "pro-monthly", amount: int = 1000) -> str:
    """A Plan (localstripe's stand-in for a Price) with that id."""
    import stripe

    try:
        client.v1.plans.retrieve(plan_id)
    except stripe.InvalidRequestError:
        product = client.v1.products.create({"name": plan_id})
        client.v1.plans.create(
            {
                "id": plan_id,
                "product": product.id,
                "amount": amount,
                "currency": "usd",
                "interval": "month",
            }
        )
    return plan_id


def outside_subscription(
    client: Any, *, user_id: str | None = None, payment_method: str = "pm_card_visa"
) -> str:
    """A subscription created in Stripe directly (its dashboard, say), not through Relay."""
    metadata = {"userId": user_id} if user_id else {}
    customer = client.v1.customers.create({"metadata": metadata})
    client.v1.payment_methods.attach(payment_method, {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": payment_method}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": ensure_plan(client)}]}
    )
    return str(subscription.id)
