"""Invoices, pure logic: Stripe's invoice read into a snapshot (Stripe's and localstripe's
shapes), a snapshot applied to Relay's view with the outgoing events it makes, and where
Stripe's `invoice.*` events about the invoices Relay created go.

Only ids are read from an event; the workflow re-reads the invoice and derives its state
from that alone. The one thing an event contributes is its type: `invoice.payment_failed`
on an invoice still open is the failed attempt Relay announces (once per Stripe event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from relay import search_attributes
from relay.inbound.contracts import ForwardTarget
from relay.payments.contracts import (
    INVOICE_FINAL,
    INVOICE_ID_METADATA,
    INVOICE_WORKFLOW,
    PROVIDER,
    STRIPE_EVENT_SIGNAL,
    InvoiceEvent,
    InvoiceInput,
    InvoiceSnapshot,
    InvoiceStatus,
    InvoiceView,
    invoice_workflow_id,
)
from relay.stripe_api import object_id, timestamp

PAID_EVENT = "invoice.paid"
PAYMENT_FAILED_EVENT = "invoice.payment_failed"


def invoice_snapshot(invoice: dict[str, Any]) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        stripe_invoice_id=str(invoice["id"]),
        status=str(invoice.get("status") or InvoiceStatus.DRAFT.value),
        stripe_customer_id=object_id(invoice.get("customer")),
        currency=str(invoice.get("currency") or ""),
        amount_due=int(invoice.get("amount_due") or 0),
        amount_paid=int(invoice.get("amount_paid") or 0),
        number=invoice.get("number") or None,
        hosted_invoice_url=invoice.get("hosted_invoice_url") or None,
        invoice_pdf=invoice.get("invoice_pdf") or None,
        due_date=timestamp(invoice.get("due_date")),
        attempt_count=int(invoice.get("attempt_count") or 0),
    )


def event_data(view: InvoiceView) -> dict[str, Any]:
    return {
        "id": view.id,
        "userId": view.user_id,
        "customerId": view.stripe_customer_id,
        "stripeInvoiceId": view.stripe_invoice_id,
        "status": view.status,
        "amountDue": view.amount_due,
        "amountPaid": view.amount_paid,
        "currency": view.currency,
        "number": view.number,
        "hostedInvoiceUrl": view.hosted_invoice_url,
    }


def apply_invoice(
    workflow_id: str, view: InvoiceView, snap: InvoiceSnapshot, event: tuple[str, str] | None
) -> tuple[InvoiceView, list[InvoiceEvent]]:
    """The view after a re-read, and the outgoing events it makes. `event` is the Stripe
    event (id, type) that caused the re-read, if any."""
    was_paid = view.status == InvoiceStatus.PAID
    new = dataclasses.replace(
        view,
        stripe_invoice_id=snap.stripe_invoice_id,
        stripe_customer_id=snap.stripe_customer_id or view.stripe_customer_id,
        status=snap.status,
        currency=snap.currency or view.currency,
        amount_due=snap.amount_due,
        amount_paid=snap.amount_paid,
        number=snap.number,
        hosted_invoice_url=snap.hosted_invoice_url,
        invoice_pdf=snap.invoice_pdf,
        due_date=snap.due_date,
        attempt_count=snap.attempt_count,
    )
    events: list[InvoiceEvent] = []
    if new.status == InvoiceStatus.PAID and not was_paid:
        events.append(InvoiceEvent(PAID_EVENT, f"{workflow_id}:{PAID_EVENT}", event_data(new)))
    elif (
        event is not None and event[1] == PAYMENT_FAILED_EVENT and new.status == InvoiceStatus.OPEN
    ):
        events.append(
            InvoiceEvent(
                PAYMENT_FAILED_EVENT,
                f"{workflow_id}:{PAYMENT_FAILED_EVENT}:{event[0]}",
                event_data(new),
            )
        )
    return new, events


def invoice_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(Stripe invoice id, Relay id from `metadata.relayInvoiceId`) of an `invoice.*` event."""
    if not str(event.get("type", "")).startswith("invoice."):
        return None, None
    obj = (event.get("data") or {}).get("object") or {}
    metadata = obj.get("metadata") or {}
    relay_id = metadata.get(INVOICE_ID_METADATA)
    stripe_id = obj.get("id")
    return (
        stripe_id if isinstance(stripe_id, str) and stripe_id else None,
        relay_id if isinstance(relay_id, str) and relay_id else None,
    )


def stripe_target(
    event: dict[str, Any], invoice_of_stripe: Callable[[str], tuple[str, str | None] | None]
) -> tuple[ForwardTarget | None, str | None]:
    """The invoice workflow an event goes to (None: not an invoice Relay created, or one
    already paid or voided) and the Stripe invoice id.

    `invoice_of_stripe` reads the database: (Relay's id, status) of the invoice with that
    Stripe id. Invoices are never adopted from events: only those in Relay's table go.
    """
    stripe_id, _ = invoice_of(event)
    if stripe_id is None:
        return None, None
    found = invoice_of_stripe(stripe_id)
    if found is None:
        return None, stripe_id
    relay_id, status = found
    if status in INVOICE_FINAL:
        return None, stripe_id  # its run ended; nothing more can change
    start = InvoiceInput(invoice_id=relay_id, stripe_invoice_id=stripe_id)
    return (
        ForwardTarget(
            workflow_type=INVOICE_WORKFLOW,
            workflow_id=invoice_workflow_id(relay_id),
            signal=STRIPE_EVENT_SIGNAL,
            start_arg=asdict(start),
            search_attributes={
                search_attributes.ENTITY_ID.name: relay_id,
                search_attributes.PROVIDER.name: PROVIDER,
            },
        ),
        stripe_id,
    )
