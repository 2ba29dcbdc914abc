"""Where a Stripe event goes: the one router `POST /webhooks/stripe` and the Stripe
reconciliation both use.

Each capability with Stripe objects declares its own routing (`relay.billing.inbound`
for subscriptions and their invoices, `relay.payments.inbound` for the PaymentIntents
Relay created, `relay.payments.invoices` for the one-off invoices Relay created); the
router asks billing first (a subscription's invoice stays the subscription's), then
payments' invoices, then payments, and an event none takes is recorded and IGNORED. Only ids are read from the payload.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from relay.billing import inbound as billing_inbound
from relay.billing import repository as billing_repository
from relay.inbound.contracts import ForwardTarget
from relay.payments import inbound as payments_inbound
from relay.payments import invoices as payments_invoices
from relay.payments import repository as payments_repository

PROVIDER = "stripe"


def stripe_target(event: dict[str, Any], engine: Engine) -> tuple[ForwardTarget | None, str | None]:
    """The workflow an event goes to (None when no capability takes it) and the id of
    the Stripe object it is about. Synchronous: it may read the database."""
    target, object_id = billing_inbound.stripe_target(
        event, lambda sid: billing_repository.relay_id_of(engine, sid)
    )
    if target is not None:
        return target, object_id
    invoice_target, invoice_id = payments_invoices.stripe_target(
        event, lambda sid: payments_repository.invoice_of_stripe(engine, sid)
    )
    if invoice_target is not None:
        return invoice_target, invoice_id
    payment_target, intent_id = payments_inbound.stripe_target(
        event, lambda pid: payments_repository.relay_id_of(engine, pid)
    )
    if payment_target is not None:
        return payment_target, intent_id
    return None, object_id or invoice_id or intent_id
