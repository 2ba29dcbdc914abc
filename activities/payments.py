"""Payments' side effects: PaymentIntents through Stripe's official SDK, the payments'
read model, Relay's outgoing payment events (PayPal's orders: `activities.payments_paypal`,
one-off invoices: `activities.payments_invoices`, both registered from here).

`PaymentActivities` holds one `stripe.StripeClient` per worker, configured from
STRIPE_SECRET_KEY and STRIPE_API_BASE (localstripe in the sandbox and the tests: one
code path). Guarantees:
- every Stripe write carries the Idempotency-Key the workflow derived from its id and
  the step (stripe-python would otherwise send a random one);
- a declined card is a state, not a failure: the write answers the intent re-read
  (requires_payment_method with its last_payment_error), which the workflow turns into
  FAILED; Stripe's refusals (a bad customer or payment method) are non-retryable
  VALIDATION_ERROR naming the field; Stripe failing (5xx, 429, no connection) is
  retried by Temporal (`relay.stripe_api.refusal`, one classification);
- reads answer an `IntentSnapshot` (the intent, its charge and its refunds), never what
  an event said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payments_invoices import InvoiceActivities
from activities.payments_paypal import PayPalPaymentActivities
from relay import stripe_api
from relay.errors import ErrorCode
from relay.payments import repository
from relay.payments.contracts import (
    RELAY_ID_METADATA,
    CreateIntentInput,
    IntentSnapshot,
    IntentWriteInput,
    PaymentView,
    PublishPaymentEvents,
    ReadIntentInput,
)
from relay.payments.stripe_shape import intent_snapshot
from relay.settings import Settings
from relay.stripe_api import as_dict, refusal
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext

# Stripe's parameter names as the API's fields, to name the field Stripe refused.
_FIELDS = {
    "amount": "amount",
    "currency": "currency",
    "customer": "customerId",
    "payment_method": "paymentMethodId",
    "description": "description",
    "return_url": "returnUrl",
    "capture_method": "captureMethod",
    "amount_to_capture": "amount",
    "reason": "reason",
}


class PaymentActivities:
    """Stripe PaymentIntents, the read model and outgoing events, for the payment workflow."""

    def __init__(self, *, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine
        self._stripe = stripe_api.stripe_client(settings)
        # PayPal's activities (one provider per module), registered with these.
        self.paypal = PayPalPaymentActivities(settings=settings)
        # One-off invoices' activities (`invoice-{id}` workflows), registered with these.
        self.invoices = InvoiceActivities(settings=settings, engine=engine)

    @classmethod
    def from_context(cls, context: WorkerContext) -> PaymentActivities:
        made = cls(settings=context.settings, engine=context.engine)
        context.closers.append(made.paypal.aclose)
        return made

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.create_payment_intent,
            self.read_payment_intent,
            self.write_payment_intent,
            self.save_payment,
            self.publish_payment_events,
            *self.paypal.activities(),
            *self.invoices.activities(),
        ]

    def _client(self) -> stripe.StripeClient:
        return stripe_api.configured(self._stripe)

    async def _call(self, field: str, call: Callable[[], Any]) -> Any:
        return await stripe_api.call(field, call, _FIELDS)

    def _snapshot(self, intent_id: str) -> IntentSnapshot:
        """The intent as Stripe holds it now, with its latest charge and its refunds."""
        client = self._client()
        intent = as_dict(
            client.v1.payment_intents.retrieve(intent_id, {"expand": ["latest_charge"]})
        )
        charge = intent.get("latest_charge")
        if isinstance(charge, str):
            charge = as_dict(client.v1.charges.retrieve(charge))
        refunds: list[dict[str, Any]] = []
        if charge:
            page = client.v1.refunds.list({"payment_intent": intent_id, "limit": 100})
            refunds = [as_dict(item) for item in page.data]
        return intent_snapshot(intent, charge=charge or None, refunds=refunds)

    # --- activities ---------------------------------------------------------------------

    @activity.defn
    async def create_payment_intent(self, params: CreateIntentInput) -> IntentSnapshot:
        """Create the PaymentIntent, unconfirmed (the workflow confirms it as its own step,
        so a declined card leaves an intent to read, not an error), carrying Relay's id."""
        client = self._client()
        request = params.request
        metadata = {**request.metadata, RELAY_ID_METADATA: params.payment_id}
        if request.user_id:
            metadata["userId"] = request.user_id
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency,
            "capture_method": request.capture_method,
            "metadata": metadata,
        }
        # Only what was asked: localstripe refuses parameters it does not know
        # (description), and Stripe's defaults are the right ones otherwise.
        if request.customer_id:
            body["customer"] = request.customer_id
        if request.payment_method_id:
            body["payment_method"] = request.payment_method_id
        if request.description:
            body["description"] = request.description
        field = (
            "paymentMethodId"
            if request.payment_method_id
            else "customerId"
            if request.customer_id
            else "amount"
        )
        created = await self._call(
            field,
            lambda: client.v1.payment_intents.create(
                body,  # type: ignore[arg-type]
                {"idempotency_key": params.idempotency_key},
            ),
        )
        return await self._call(field, lambda: self._snapshot(str(created.id)))  # type: ignore[no-any-return]

    @activity.defn
    async def read_payment_intent(self, params: ReadIntentInput) -> IntentSnapshot:
        """The intent as Stripe holds it now (never what an event said)."""
        return await self._call(  # type: ignore[no-any-return]
            "id", lambda: self._snapshot(params.stripe_payment_intent_id)
        )

    @activity.defn
    async def write_payment_intent(self, params: IntentWriteInput) -> IntentSnapshot:
        """One write to the intent (confirm, capture, cancel, refund), then the intent re-read."""
        client = self._client()
        key = params.idempotency_key
        pid = params.stripe_payment_intent_id
        body = dict(params.params)
        refund_id: str | None = None

        if params.action == "confirm":
            method = body.pop("payment_method", None)
            if method:
                # Set first, then confirm: the same two calls on Stripe and on localstripe
                # (which refuses a payment method on /confirm).
                await self._call(
                    "paymentMethodId",
                    lambda: client.v1.payment_intents.update(
                        pid,
                        {"payment_method": method},
                        {"idempotency_key": f"{key}:payment-method"},
                    ),
                )
            try:
                await asyncio.to_thread(
                    lambda: client.v1.payment_intents.confirm(
                        pid,
                        body,  # type: ignore[arg-type]
                        {"idempotency_key": key},
                    )
                )
            except stripe.CardError:
                pass  # declined: the intent re-read below carries last_payment_error
            except stripe.StripeError as exc:
                raise refusal(
                    exc, _FIELDS.get(str(getattr(exc, "param", None) or ""), "paymentMethodId")
                ) from None
        elif params.action == "capture":
            await self._call(
                "amount",
                lambda: client.v1.payment_intents.capture(
                    pid,
                    body,  # type: ignore[arg-type]
                    {"idempotency_key": key},
                ),
            )
        elif params.action == "cancel":
            await self._call(
                "id",
                lambda: client.v1.payment_intents.cancel(
                    pid,
                    options={"idempotency_key": key},  # type: ignore[arg-type]
                ),
            )
        elif params.action == "refund":
            refund = await self._call(
                "amount",
                lambda: client.v1.refunds.create(
                    {"payment_intent": pid, **body},  # type: ignore[arg-type]
                    {"idempotency_key": key},
                ),
            )
            refund_id = str(refund.id)
        else:
            raise ApplicationError(
                f"unknown action {params.action}",
                type=ErrorCode.INTERNAL_ERROR.value,
                non_retryable=True,
            )
        snap: IntentSnapshot = await self._call("id", lambda: self._snapshot(pid))
        snap.refund_id = refund_id
        return snap

    @activity.defn
    async def save_payment(self, view: PaymentView) -> None:
        await asyncio.to_thread(repository.save_view, self._engine, view)

    @activity.defn
    async def publish_payment_events(self, params: PublishPaymentEvents) -> None:
        """Relay's own outgoing webhooks; the key makes a retried publish a no-op."""
        for event in params.events:
            await asyncio.to_thread(
                publish_event,
                self._engine,
                event.type,
                event.data,
                idempotency_key=event.idempotency_key,
            )


ACTIVITIES = PaymentActivities
