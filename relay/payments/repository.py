"""Payments' database reads and writes (synchronous; async callers use `asyncio.to_thread`).

`payments` is the payments' read model: only the payment workflow's activities write it
(the workflow is the single writer), the routes read it.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from sqlalchemy import Row, Select, insert, select, update
from sqlalchemy.engine import Engine

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.payments import Invoice, Payment
from relay.payments.contracts import InvoiceView, PaymentView

P = Payment.__table__  # type: ignore[attr-defined]
INV = Invoice.__table__  # type: ignore[attr-defined]


def parse_id(payment_id: str) -> uuid.UUID:
    """A payment id from a path: not one of Relay's ids is simply not found."""
    try:
        return uuid.UUID(payment_id)
    except ValueError:
        raise RelayError(ErrorCode.NOT_FOUND, "no payment with that id") from None


def relay_id_of(engine: Engine, stripe_payment_intent_id: str) -> str | None:
    """Relay's id of a PaymentIntent it created, or None."""
    with engine.connect() as connection:
        found = connection.execute(
            select(P.c.id).where(P.c.stripe_payment_intent_id == stripe_payment_intent_id)
        ).scalar_one_or_none()
    return str(found) if found is not None else None


def paypal_payment_of(
    engine: Engine, relay_id: str | None, order_id: str | None, capture_id: str | None
) -> tuple[str, str, str] | None:
    """(Relay's id, PayPal order id, relayStatus) of the PayPal payment found by Relay's id,
    its order or its capture, or None (not a PayPal payment Relay created)."""
    query = select(P.c.id, P.c.paypal_order_id, P.c.relay_status).where(P.c.provider == "paypal")
    key: uuid.UUID | None = None
    if relay_id is not None:
        try:
            key = uuid.UUID(relay_id)
        except ValueError:
            key = None
    if key is not None:
        query = query.where(P.c.id == key)
    elif order_id is not None:
        query = query.where(P.c.paypal_order_id == order_id)
    elif capture_id is not None:
        query = query.where(P.c.paypal_capture_id == capture_id)
    else:
        return None
    with engine.connect() as connection:
        found = connection.execute(query).first()
    if found is None or found.paypal_order_id is None:
        return None
    return str(found.id), str(found.paypal_order_id), str(found.relay_status)


def _values(view: PaymentView) -> dict[str, Any]:
    return {
        "provider": view.provider,
        "user_id": view.user_id,
        "stripe_customer_id": view.stripe_customer_id,
        "stripe_payment_intent_id": view.stripe_payment_intent_id,
        "paypal_order_id": view.paypal_order_id,
        "paypal_capture_id": view.paypal_capture_id,
        "approve_url": view.approve_url,
        "metadata": view.metadata or None,
        "status": view.status,
        "relay_status": view.relay_status.value,
        "amount": view.amount,
        "currency": view.currency,
        "capture_method": view.capture_method,
        "description": view.description,
        "amount_captured": view.amount_captured,
        "amount_refunded": view.amount_refunded,
        "last_error": dataclasses.asdict(view.last_error) if view.last_error else None,
        "refunds": [
            {**dataclasses.asdict(r), "created": r.created.isoformat() if r.created else None}
            for r in view.refunds
        ],
        "next_action": view.next_action,
        "updated_at": utcnow(),
    }


def save_view(engine: Engine, view: PaymentView) -> None:
    """Upsert the read model of one payment (the workflow's view of it)."""
    values = _values(view)
    payment_id = uuid.UUID(view.id)
    with engine.begin() as connection:
        updated = connection.execute(
            update(P).where(P.c.id == payment_id).values(**values)
        ).rowcount
        if not updated:
            connection.execute(
                insert(P).values(id=payment_id, created_at=view.created_at or utcnow(), **values)
            )


def find(engine: Engine, payment_id: str) -> Row[Any] | None:
    try:
        key = uuid.UUID(payment_id)
    except ValueError:
        return None
    with engine.connect() as connection:
        return connection.execute(select(P).where(P.c.id == key)).first()


def load(engine: Engine, payment_id: str) -> Row[Any]:
    key = parse_id(payment_id)
    with engine.connect() as connection:
        row = connection.execute(select(P).where(P.c.id == key)).first()
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no payment with that id")
    return row


def payments_query(*, user_id: str | None = None, relay_status: str | None = None) -> Select[Any]:
    query = select(P)
    if user_id:
        query = query.where(P.c.user_id == user_id)
    if relay_status:
        query = query.where(P.c.relay_status == relay_status)
    return query


# --- invoices ------------------------------------------------------------------------------


def invoice_of_stripe(engine: Engine, stripe_invoice_id: str) -> tuple[str, str | None] | None:
    """(Relay's id, status) of the invoice Relay created as that Stripe invoice, or None."""
    with engine.connect() as connection:
        found = connection.execute(
            select(INV.c.id, INV.c.status).where(INV.c.stripe_invoice_id == stripe_invoice_id)
        ).first()
    return (str(found.id), found.status) if found is not None else None


def save_invoice(engine: Engine, view: InvoiceView) -> None:
    """Upsert the read model of one invoice (its workflow's view of it)."""
    values: dict[str, Any] = {
        "user_id": view.user_id,
        "stripe_customer_id": view.stripe_customer_id,
        "stripe_invoice_id": view.stripe_invoice_id,
        "status": view.status,
        "currency": view.currency,
        "amount_due": view.amount_due,
        "amount_paid": view.amount_paid,
        "number": view.number,
        "hosted_invoice_url": view.hosted_invoice_url,
        "invoice_pdf": view.invoice_pdf,
        "due_date": view.due_date,
        "sent": view.sent,
        "updated_at": utcnow(),
    }
    invoice_id = uuid.UUID(view.id)
    with engine.begin() as connection:
        updated = connection.execute(
            update(INV).where(INV.c.id == invoice_id).values(**values)
        ).rowcount
        if not updated:
            connection.execute(
                insert(INV).values(id=invoice_id, created_at=view.created_at or utcnow(), **values)
            )


def find_invoice(engine: Engine, invoice_id: str) -> Row[Any] | None:
    try:
        key = uuid.UUID(invoice_id)
    except ValueError:
        return None
    with engine.connect() as connection:
        return connection.execute(select(INV).where(INV.c.id == key)).first()


def load_invoice(engine: Engine, invoice_id: str) -> Row[Any]:
    row = find_invoice(engine, invoice_id)
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no invoice with that id")
    return row
