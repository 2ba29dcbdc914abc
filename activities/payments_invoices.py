"""Invoices' side effects: one-off Stripe invoices through Stripe's official SDK, their
read model and Relay's outgoing `invoice.*` events. Registered by `activities.payments`
(`PaymentActivities.invoices`), one provider object per module as PayPal's are.

Guarantees:
- every Stripe write carries the Idempotency-Key the workflow derived from its id and the
  step (`invoice-{id}:customer|create|item:<n>|finalize|send|void`);
- the customer is checked before anything is drafted: `userId` is the one Stripe customer
  billing keeps per user (created here on first use, as billing's `ensure_customer` does),
  a `customerId` Stripe does not know is a non-retryable VALIDATION_ERROR naming
  `customerId`, and nothing is created;
- Stripe failing (5xx, 429, no connection) is retried by Temporal
  (`relay.stripe_api.refusal`, one classification); reads answer an `InvoiceSnapshot`,
  never what an event said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relay import stripe_api
from relay.billing import repository as billing_repository
from relay.errors import ErrorCode
from relay.payments import repository
from relay.payments.contracts import (
    INVOICE_ID_METADATA,
    DraftInvoiceInput,
    InvoiceSnapshot,
    InvoiceView,
    InvoiceWriteInput,
    PublishInvoiceEvent,
    ReadInvoiceInput,
)
from relay.payments.invoices import invoice_snapshot
from relay.settings import Settings
from relay.stripe_api import as_dict
from relay.webhooks.publish import publish_event

_FIELDS = {
    "customer": "customerId",
    "currency": "currency",
    "days_until_due": "daysUntilDue",
    "amount": "items",
    "unit_amount_decimal": "items",
    "quantity": "items",
    "description": "items",
}


class InvoiceActivities:
    """Stripe invoices, their read model and outgoing events, for the invoice workflow."""

    def __init__(self, *, settings: Settings, engine: Engine) -> None:
        self._engine = engine
        self._stripe = stripe_api.stripe_client(settings)

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.draft_stripe_invoice,
            self.write_stripe_invoice,
            self.read_stripe_invoice,
            self.save_invoice,
            self.publish_invoice_event,
        ]

    def _client(self) -> stripe.StripeClient:
        return stripe_api.configured(self._stripe)

    async def _call(self, field: str, call: Callable[[], Any]) -> Any:
        return await stripe_api.call(field, call, _FIELDS)

    async def _customer(self, params: DraftInvoiceInput) -> str:
        client = self._client()
        request = params.request
        if request.customer_id:
            # Refused (404) before anything is drafted: 400 naming customerId.
            customer_id = request.customer_id
            found = await self._call(
                "customerId", lambda: client.v1.customers.retrieve(customer_id)
            )
            if getattr(found, "deleted", False):
                raise ApplicationError(
                    "Stripe refused the request: the customer was deleted",
                    [{"field": "customerId", "in": "body", "message": "deleted customer"}],
                    type=ErrorCode.VALIDATION_ERROR.value,
                    non_retryable=True,
                )
            return customer_id
        user_id = request.user_id or ""
        known = await asyncio.to_thread(billing_repository.customer_of, self._engine, user_id)
        if known is not None:
            return known
        created = await self._call(
            "userId",
            lambda: client.v1.customers.create(
                {"metadata": {"userId": user_id}},
                {"idempotency_key": f"{params.key}:customer"},
            ),
        )
        # Billing's table: the user's one customer (another recorded first wins).
        return await asyncio.to_thread(
            billing_repository.save_customer, self._engine, user_id, str(created.id)
        )

    @activity.defn
    async def draft_stripe_invoice(self, params: DraftInvoiceInput) -> InvoiceSnapshot:
        """The draft (send_invoice, `days_until_due`, pending items excluded) and its
        items, each carrying `metadata.relayInvoiceId`."""
        client = self._client()
        request = params.request
        customer_id = await self._customer(params)
        metadata = {INVOICE_ID_METADATA: params.invoice_id}
        if request.user_id:
            metadata["userId"] = request.user_id
        body: dict[str, Any] = {
            "customer": customer_id,
            "currency": request.currency,
            "collection_method": "send_invoice",
            "days_until_due": request.days_until_due,
            "auto_advance": False,  # Relay finalizes and sends, as its own steps
            "pending_invoice_items_behavior": "exclude",
            "metadata": metadata,
        }
        draft = await self._call(
            "customerId",
            lambda: client.v1.invoices.create(
                body,  # type: ignore[arg-type]
                {"idempotency_key": f"{params.key}:create"},
            ),
        )
        invoice_id = str(draft.id)
        for number, item in enumerate(request.items, start=1):
            line: dict[str, Any] = {
                "customer": customer_id,
                "invoice": invoice_id,
                "currency": request.currency,
                "description": item.description,
                "unit_amount_decimal": str(item.amount),
                "quantity": item.quantity,
                "metadata": metadata,
            }
            await self._call(
                "items",
                lambda line=line, number=number: client.v1.invoice_items.create(  # type: ignore[misc]
                    line,
                    {"idempotency_key": f"{params.key}:item:{number}"},
                ),
            )
        return await self._read(invoice_id)

    async def _read(self, stripe_invoice_id: str) -> InvoiceSnapshot:
        client = self._client()
        found = await self._call("id", lambda: client.v1.invoices.retrieve(stripe_invoice_id))
        return invoice_snapshot(as_dict(found))

    @activity.defn
    async def write_stripe_invoice(self, params: InvoiceWriteInput) -> InvoiceSnapshot:
        """`finalize` (draft → open: number, hosted page, PDF), `send` (Stripe emails the
        hosted page), or `void` (open only); then the invoice re-read."""
        client = self._client()
        sid = params.stripe_invoice_id
        options: Any = {"idempotency_key": params.key}
        if params.action == "finalize":
            call: Callable[[], Any] = lambda: client.v1.invoices.finalize_invoice(  # noqa: E731
                sid, {"auto_advance": False}, options
            )
        elif params.action == "send":
            call = lambda: client.v1.invoices.send_invoice(sid, options=options)  # noqa: E731
        elif params.action == "void":
            call = lambda: client.v1.invoices.void_invoice(sid, options=options)  # noqa: E731
        else:
            raise ApplicationError(
                f"unknown action {params.action}",
                type=ErrorCode.INTERNAL_ERROR.value,
                non_retryable=True,
            )
        await self._call("id", call)
        return await self._read(sid)

    @activity.defn
    async def read_stripe_invoice(self, params: ReadInvoiceInput) -> InvoiceSnapshot:
        """The invoice as Stripe holds it now (never what an event said)."""
        return await self._read(params.stripe_invoice_id)

    @activity.defn
    async def save_invoice(self, view: InvoiceView) -> None:
        await asyncio.to_thread(repository.save_invoice, self._engine, view)

    @activity.defn
    async def publish_invoice_event(self, params: PublishInvoiceEvent) -> None:
        """Relay's own outgoing webhooks; the key makes a retried publish a no-op."""
        event = params.event
        await asyncio.to_thread(
            publish_event,
            self._engine,
            event.type,
            event.data,
            idempotency_key=event.idempotency_key,
        )
