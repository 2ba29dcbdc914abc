"""Invoices' routes: /v1/invoices, one-off Stripe invoices, each an `invoice-{id}`
workflow (`workflows.payments_invoices`). Reads come from the read model the workflow
writes; creation and void are updates on the workflow, its single writer. Stripe's
`invoice.*` events arrive on `POST /webhooks/stripe` (billing's route, routed by
`relay.stripe_router`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from api.deps import EngineDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import require_same_request, uuid_for
from api.pagination import newest_first_page, page
from api.schemas.payments_invoices import (
    Invoice,
    InvoiceCreate,
    invoice_row_fields,
    invoice_view_fields,
)
from relay.errors import ErrorCode, RelayError
from relay.payments import repository
from relay.payments.contracts import INVOICE_FINAL, CreateInvoice, InvoiceItem
from workflows.clients.payments import create_invoice, invoice_state, void_invoice

router = APIRouter(
    prefix="/v1/invoices", tags=["invoices"], dependencies=[Depends(require_api_key)]
)

_INVOICE_NAMESPACE = uuid.UUID("0b7d6c2a-3e4f-4a51-8c9d-7e6f5a4b3c2d")


def invoice_id_for(idempotency_key: str | None) -> str:
    return uuid_for(_INVOICE_NAMESPACE, idempotency_key)


def _invoice(view: Any) -> dict[str, Any]:
    return ok(Invoice.model_validate(invoice_view_fields(view)))


@router.post(
    "",
    status_code=201,
    summary="Draft, finalize and (autoSend) send a Stripe invoice",
    description="Items' `amount` is per unit, an integer in the currency's minor unit. "
    "Give `userId` (the Stripe customer Relay keeps for the user) or `customerId`. "
    "The same `idempotencyKey` lands on the same invoice: one invoice at Stripe. A "
    "customer Stripe does not know is 400 VALIDATION_ERROR naming `customerId`, with "
    "nothing created; Stripe down is 502 PROVIDER_ERROR (retry with the same key).",
    response_model=Envelope[Invoice],
    responses=error_responses(400, 401, 422, 502, 503),
)
async def create_invoice_route(
    body: InvoiceCreate, client: TemporalDep, settings: SettingsDep, engine: EngineDep
) -> dict[str, Any]:
    invoice_id = invoice_id_for(body.idempotency_key)
    if body.idempotency_key:
        row = await asyncio.to_thread(repository.find_invoice, engine, invoice_id)
        if row is not None:
            found = Invoice.model_validate(invoice_row_fields(row))
            _require_same_request(body, found)
            if row.status in INVOICE_FINAL:
                return ok(found)
            try:
                await invoice_state(client, invoice_id)
            except (RPCError, WorkflowQueryFailedError):
                # Its run is gone: a new one must never draft a second invoice.
                return ok(found)
    request = CreateInvoice(
        currency=body.currency,
        items=[
            InvoiceItem(description=item.description, amount=item.amount, quantity=item.quantity)
            for item in body.items
        ],
        user_id=body.user_id,
        customer_id=body.customer_id,
        days_until_due=body.days_until_due,
        auto_send=body.auto_send,
    )
    invoice = Invoice.model_validate(
        invoice_view_fields(await create_invoice(client, settings, invoice_id, request))
    )
    if body.idempotency_key:
        _require_same_request(body, invoice)  # another request may have taken the key first
    return ok(invoice)


def _require_same_request(body: InvoiceCreate, invoice: Invoice) -> None:
    compared: dict[str, tuple[object, object]] = {
        "currency": (body.currency, invoice.currency),
        "userId": (body.user_id, invoice.user_id),
    }
    if body.customer_id is not None:
        compared["customerId"] = (body.customer_id, invoice.customer_id)
    require_same_request(compared)


@router.get(
    "",
    summary="Invoices, newest first",
    response_model=Page[Invoice],
    responses=error_responses(401, 422),
)
async def list_invoices(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", max_length=255)] = None,
    status: Annotated[
        Literal["draft", "open", "paid", "void", "uncollectible"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    table = repository.INV
    query = select(table)
    for column, value in (
        (table.c.user_id, user_id),
        (table.c.stripe_customer_id, customer_id),
        (table.c.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    rows, next_cursor = await newest_first_page(engine, table, query, cursor, limit)
    return page([Invoice.model_validate(invoice_row_fields(row)) for row in rows], next_cursor)


@router.get(
    "/{invoice_id}",
    summary="One invoice: Stripe's status, hostedInvoiceUrl and invoicePdf",
    response_model=Envelope[Invoice],
    responses=error_responses(401, 404),
)
async def get_invoice(invoice_id: str, engine: EngineDep) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load_invoice, engine, invoice_id)
    return ok(Invoice.model_validate(invoice_row_fields(row)))


@router.post(
    "/{invoice_id}/void",
    summary="Void an open invoice",
    description="409 CONFLICT unless the invoice is open (a draft, paid or void one).",
    response_model=Envelope[Invoice],
    responses=error_responses(401, 404, 409, 502, 503),
)
async def void(invoice_id: str, engine: EngineDep, client: TemporalDep) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load_invoice, engine, invoice_id)
    if row.status != "open":
        raise RelayError(
            ErrorCode.CONFLICT,
            f"an invoice that is {row.status} cannot be voided",
            {"status": row.status},
        )
    return _invoice(await void_invoice(client, invoice_id))
