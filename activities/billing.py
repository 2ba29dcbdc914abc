"""Billing's side effects: Stripe calls through the official SDK, the subscriptions' read
model, Relay's outgoing subscription events.

`BillingActivities` holds one `stripe.StripeClient` per worker, configured from
STRIPE_SECRET_KEY and STRIPE_API_BASE (localstripe in the sandbox and the tests: one
code path). Guarantees:
- every Stripe write carries the Idempotency-Key the workflow derived from its id and
  the step (stripe-python would otherwise send a random one, and a retried activity
  would create a second customer or subscription);
- Stripe's refusals are non-retryable failures with Relay's code (VALIDATION_ERROR
  naming the field, Stripe's code in the details); Stripe failing (5xx, 429, no
  connection) is retried by Temporal (`relay.stripe_api.refusal`);
- reads return a `StripeSnapshot` through one adapter for both API shapes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client

from relay import stripe_api
from relay.billing import repository
from relay.billing.contracts import (
    RECONCILE_FIRST_LOOKBACK_SECONDS,
    RECONCILE_OVERLAP_SECONDS,
    CreateStripeSubscriptionInput,
    EnsureCustomerInput,
    PublishInput,
    ReconcileInput,
    ReconcileResult,
    StripeSnapshot,
    StripeWriteInput,
    SubscriptionView,
    SyncInput,
)
from relay.billing.inbound import PROVIDER, RELAY_ID_METADATA
from relay.billing.stripe_shape import first_item, snapshot
from relay.crypto import Keyring
from relay.inbound import repository as inbox
from relay.inbound.forward import forward
from relay.inbound.repository import Claimed
from relay.settings import Settings
from relay.stripe_api import as_dict
from relay.stripe_router import stripe_target
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext


class BillingActivities:
    """Stripe, the read model and outgoing events, for the subscription workflow."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring | None = None,
        client: Client | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        # Reconciliation records into the inbox (sealed) and forwards like the route.
        self._keyring = keyring
        self._client_temporal = client
        self._stripe = stripe_api.stripe_client(settings)

    @classmethod
    def from_context(cls, context: WorkerContext) -> BillingActivities:
        return cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            client=context.client,
        )

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.ensure_customer,
            self.create_stripe_subscription,
            self.read_subscription,
            self.write_subscription,
            self.save_subscription,
            self.publish_subscription_events,
            self.reconcile_stripe_events,
        ]

    def _client(self) -> stripe.StripeClient:
        return stripe_api.configured(self._stripe)

    async def _call(self, field: str, call: Callable[[], Any]) -> Any:
        return await stripe_api.call(field, call)

    def _snapshot(self, subscription: Any) -> StripeSnapshot:
        """Re-read what the snapshot needs beside the subscription (its customer and
        latest invoice), in Stripe's current state."""
        client = self._client()
        data = as_dict(subscription)
        customer_id = data.get("customer")
        customer = as_dict(client.v1.customers.retrieve(customer_id)) if customer_id else {}
        invoice: dict[str, Any] = {}
        payment_intent: dict[str, Any] = {}
        latest = data.get("latest_invoice")
        latest_id = latest if isinstance(latest, str) else as_dict(latest).get("id")
        if latest_id:
            invoice = as_dict(client.v1.invoices.retrieve(latest_id))
            intent = invoice.get("payment_intent")
            if isinstance(intent, str):
                payment_intent = as_dict(client.v1.payment_intents.retrieve(intent))
            charge = invoice.get("charge")
            if isinstance(charge, str):
                invoice["charge"] = as_dict(client.v1.charges.retrieve(charge))
        return snapshot(
            data,
            customer=customer,
            invoice=invoice,
            payment_intent=payment_intent,
            grace_period_seconds=self._settings.billing_grace_period.total_seconds(),
        )

    # --- activities ---------------------------------------------------------------------

    @activity.defn
    async def ensure_customer(self, params: EnsureCustomerInput) -> str:
        """The user's one Stripe customer (metadata.userId), created on first use; the
        payment method, when given, attached and made the invoices' default."""
        customer_id = await asyncio.to_thread(repository.customer_of, self._engine, params.user_id)
        client = self._client()
        if customer_id is None:
            body: dict[str, Any] = {"metadata": {"userId": params.user_id}}
            if params.email:
                body["email"] = params.email
            customer = await self._call(
                "userId",
                lambda: client.v1.customers.create(
                    body,  # type: ignore[arg-type]
                    {"idempotency_key": f"{params.idempotency_key}:customer"},
                ),
            )
            customer_id = await asyncio.to_thread(
                repository.save_customer, self._engine, params.user_id, customer.id
            )
        if params.payment_method_id:
            pm = params.payment_method_id
            await self._call(
                "paymentMethodId",
                lambda: client.v1.payment_methods.attach(
                    pm,
                    {"customer": customer_id},
                    {"idempotency_key": f"{params.idempotency_key}:attach"},
                ),
            )
            await self._call(
                "paymentMethodId",
                lambda: client.v1.customers.update(
                    customer_id,
                    {"invoice_settings": {"default_payment_method": pm}},
                    {"idempotency_key": f"{params.idempotency_key}:default-pm"},
                ),
            )
        return customer_id

    @activity.defn
    async def create_stripe_subscription(
        self, params: CreateStripeSubscriptionInput
    ) -> StripeSnapshot:
        """Create the Stripe subscription (once: the Idempotency-Key) and record which
        Relay subscription it is, before its first event can need the mapping."""
        client = self._client()
        body: dict[str, Any] = {
            "customer": params.customer_id,
            # `plan` takes a Price id as well as a Plan id on Stripe, and is what
            # localstripe (Plans only) understands: one code path.
            "items": [{"plan": params.price_id, "quantity": params.quantity}],
            "metadata": {**params.metadata, RELAY_ID_METADATA: params.subscription_id},
        }
        if params.trial_days:
            body["trial_period_days"] = params.trial_days
        created = await self._call(
            "priceId",
            lambda: client.v1.subscriptions.create(
                body,  # type: ignore[arg-type]
                {"idempotency_key": params.idempotency_key},
            ),
        )
        snap = await self._call("priceId", lambda: self._snapshot(created))
        view = SubscriptionView(
            id=params.subscription_id,
            user_id=snap.user_id,
            stripe_customer_id=snap.customer_id,
            stripe_subscription_id=snap.stripe_subscription_id,
        )
        await asyncio.to_thread(repository.save_view, self._engine, view)
        return snap  # type: ignore[no-any-return]

    @activity.defn
    async def read_subscription(self, params: SyncInput) -> StripeSnapshot:
        """The subscription as Stripe holds it now (never what an event said)."""
        client = self._client()
        return await self._call(  # type: ignore[no-any-return]
            "stripeSubscriptionId",
            lambda: self._snapshot(client.v1.subscriptions.retrieve(params.stripe_subscription_id)),
        )

    @activity.defn
    async def write_subscription(self, params: StripeWriteInput) -> StripeSnapshot:
        """One change to the Stripe subscription (cancel, change, pause, resume)."""
        client = self._client()
        key = {"idempotency_key": params.idempotency_key}
        sid = params.stripe_subscription_id

        def write() -> Any:
            if params.action == "cancel":
                return client.v1.subscriptions.cancel(sid, options=key)  # type: ignore[arg-type]
            if params.action == "resume":
                return client.v1.subscriptions.resume(sid, params.params, key)  # type: ignore[arg-type]
            body = dict(params.params)
            if params.action == "change":
                item = first_item(as_dict(client.v1.subscriptions.retrieve(sid)))
                change = {"id": item.get("id"), "plan": body.pop("price_id")}
                if body.get("quantity"):
                    change["quantity"] = body.pop("quantity")
                body.pop("quantity", None)
                body["items"] = [change]
            return client.v1.subscriptions.update(sid, body, key)  # type: ignore[arg-type]

        field = "priceId" if params.action == "change" else "action"
        updated = await self._call(field, write)
        return await self._call(field, lambda: self._snapshot(updated))  # type: ignore[no-any-return]

    @activity.defn
    async def save_subscription(self, view: SubscriptionView) -> None:
        await asyncio.to_thread(repository.save_view, self._engine, view)

    @activity.defn
    async def publish_subscription_events(self, params: PublishInput) -> None:
        """Relay's own outgoing webhooks; the key makes a retried publish a no-op."""
        for event in params.events:
            await asyncio.to_thread(
                publish_event,
                self._engine,
                event.type,
                event.data,
                idempotency_key=event.idempotency_key,
            )

    @activity.defn
    async def reconcile_stripe_events(self, params: ReconcileInput) -> ReconcileResult:
        """List Stripe's events since the watermark (less an overlap) and feed the inbox
        every one it lacks, then forward them: an event lost while Relay or its endpoint
        was down still reaches its subscription or payment. Idempotent: the inbox dedupes by id."""
        client = self._client()
        result = ReconcileResult()
        mark = await asyncio.to_thread(inbox.watermark, self._engine, PROVIDER)
        since = (
            mark - RECONCILE_OVERLAP_SECONDS
            if mark is not None
            else int(time.time()) - RECONCILE_FIRST_LOOKBACK_SECONDS
        )
        events: list[dict[str, Any]] = []
        starting_after: str | None = None
        while len(events) < params.max_events:
            activity.heartbeat(len(events))
            query: dict[str, Any] = {"created": {"gt": since}, "limit": 100}
            if starting_after:
                query["starting_after"] = starting_after
            page = await self._call(
                "events",
                lambda query=query: client.v1.events.list(query),  # type: ignore[misc]
            )
            batch = [as_dict(item) for item in page.data]
            events.extend(batch)
            if not batch or not page.has_more:
                break
            starting_after = batch[-1]["id"]
        result.listed = len(events)
        known = await asyncio.to_thread(
            inbox.known_event_ids, self._engine, PROVIDER, [e["id"] for e in events]
        )
        # Oldest first, as Stripe would have delivered them.
        for event in sorted(events, key=lambda e: (e.get("created", 0), e["id"])):
            if event["id"] in known:
                continue
            if await self._feed(event):
                result.forwarded += 1
            result.fed += 1
        newest = max((int(e.get("created", 0)) for e in events), default=None)
        if newest is not None:
            await asyncio.to_thread(inbox.advance_watermark, self._engine, PROVIDER, newest)
        result.watermark = newest if newest is not None else mark
        return result

    async def _feed(self, event: dict[str, Any]) -> bool:
        keyring = self._keyring
        assert keyring is not None, "reconciliation needs the keyring (from_context gives it)"

        def record() -> inbox.Recorded:
            # The same router as /webhooks/stripe: subscriptions, then payments.
            target, object_id = stripe_target(event, self._engine)
            return inbox.record(
                self._engine,
                keyring,
                provider=PROVIDER,
                event_id=event["id"],
                type=str(event.get("type", "")),
                payload=json.dumps(event).encode(),
                target=target,
                object_id=object_id,
            )

        recorded = await asyncio.to_thread(record)
        if recorded.duplicate or recorded.target is None:
            return False
        claimed = Claimed(
            recorded.id,
            PROVIDER,
            event["id"],
            str(event.get("type", "")),
            recorded.object_id,
            recorded.target,
        )
        return await forward(
            self._engine, self._client_temporal, self._settings.temporal_task_queue, claimed
        )


ACTIVITIES = BillingActivities
