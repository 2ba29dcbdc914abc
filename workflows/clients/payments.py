"""Talking to payment workflows from the API, typed against the workflow class."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from relay import search_attributes
from relay.payments.contracts import (
    PAYPAL,
    PROVIDER,
    CapturePayment,
    ConfirmPayment,
    CreateInvoice,
    CreatePayment,
    InvoiceInput,
    InvoiceState,
    InvoiceView,
    PaymentInput,
    PaymentState,
    PaymentView,
    RefundPayment,
    RefundResult,
    invoice_workflow_id,
    payment_workflow_id,
)
from relay.settings import Settings
from workflows.clients import Entity, await_update
from workflows.payments import PaymentWorkflow
from workflows.payments_invoices import InvoiceWorkflow

T = TypeVar("T")


def payment_handle(client: Client, payment_id: str) -> WorkflowHandle[PaymentWorkflow, PaymentView]:
    return client.get_workflow_handle_for(PaymentWorkflow.run, payment_workflow_id(payment_id))


async def payment_state(client: Client, payment_id: str) -> PaymentState:
    return await payment_handle(client, payment_id).query(PaymentWorkflow.state)


_PROVIDER_NAMES = {PROVIDER: "Stripe", PAYPAL: "PayPal"}


def _entity(payment_id: str, provider: str) -> Entity:
    return Entity(
        "the payment",
        "paymentId",
        payment_id,
        _PROVIDER_NAMES.get(provider, provider),
        "the payment is closed; nothing more can change",
    )


async def _wait(payment_id: str, call: Awaitable[T], provider: str = PROVIDER) -> T:
    return await await_update(_entity(payment_id, provider), call)


async def create_payment(
    client: Client, settings: Settings, payment_id: str, request: CreatePayment
) -> PaymentView:
    """Update-with-start: a retried request lands on the same workflow and gets its result."""
    attributes = [
        SearchAttributePair(search_attributes.ENTITY_ID, payment_id),
        SearchAttributePair(search_attributes.PROVIDER, request.provider),
    ]
    if request.user_id:
        attributes.append(SearchAttributePair(search_attributes.USER_ID, request.user_id))
    start = WithStartWorkflowOperation(
        PaymentWorkflow.run,
        PaymentInput(
            payment_id=payment_id,
            provider=request.provider,
            poll_interval_seconds=settings.payment_poll_interval.total_seconds(),
            expiry_seconds=settings.payment_expiry.total_seconds(),
        ),
        id=payment_workflow_id(payment_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A creation Stripe refused ended its run with nothing created; the same request
        # may try again. A payment that exists is answered from the database first.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        # Ids only: search attributes are stored in the clear.
        search_attributes=TypedSearchAttributes(attributes),
    )
    return await _wait(
        payment_id,
        client.execute_update_with_start_workflow(
            PaymentWorkflow.create, request, start_workflow_operation=start
        ),
        request.provider,
    )


async def confirm_payment(client: Client, payment_id: str, request: ConfirmPayment) -> PaymentView:
    handle = payment_handle(client, payment_id)
    return await _wait(payment_id, handle.execute_update(PaymentWorkflow.confirm, request))


async def capture_payment(
    client: Client, payment_id: str, request: CapturePayment, provider: str = PROVIDER
) -> PaymentView:
    handle = payment_handle(client, payment_id)
    return await _wait(
        payment_id, handle.execute_update(PaymentWorkflow.capture, request), provider
    )


async def cancel_payment(client: Client, payment_id: str, provider: str = PROVIDER) -> PaymentView:
    handle = payment_handle(client, payment_id)
    return await _wait(payment_id, handle.execute_update(PaymentWorkflow.cancel), provider)


async def refund_payment(
    client: Client, payment_id: str, request: RefundPayment, provider: str = PROVIDER
) -> RefundResult:
    handle = payment_handle(client, payment_id)
    return await _wait(payment_id, handle.execute_update(PaymentWorkflow.refund, request), provider)


# --- invoices ------------------------------------------------------------------------------


def _invoice_entity(invoice_id: str) -> Entity:
    return Entity(
        "the invoice",
        "invoiceId",
        invoice_id,
        "Stripe",
        "the invoice is closed (paid or void); nothing more can change",
    )


def invoice_handle(client: Client, invoice_id: str) -> WorkflowHandle[InvoiceWorkflow, InvoiceView]:
    return client.get_workflow_handle_for(InvoiceWorkflow.run, invoice_workflow_id(invoice_id))


async def invoice_state(client: Client, invoice_id: str) -> InvoiceState:
    return await invoice_handle(client, invoice_id).query(InvoiceWorkflow.state)


async def create_invoice(
    client: Client, settings: Settings, invoice_id: str, request: CreateInvoice
) -> InvoiceView:
    """Update-with-start: a retried request lands on the same workflow, which finishes
    whatever step is left and answers the one invoice."""
    attributes = [
        SearchAttributePair(search_attributes.ENTITY_ID, invoice_id),
        SearchAttributePair(search_attributes.PROVIDER, PROVIDER),
    ]
    if request.user_id:
        attributes.append(SearchAttributePair(search_attributes.USER_ID, request.user_id))
    start = WithStartWorkflowOperation(
        InvoiceWorkflow.run,
        InvoiceInput(
            invoice_id=invoice_id,
            poll_interval_seconds=settings.payment_poll_interval.total_seconds(),
        ),
        id=invoice_workflow_id(invoice_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A creation Stripe refused ended its run with nothing created; the same request
        # may try again. An invoice that exists is answered from the database first.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(attributes),
    )
    return await await_update(
        _invoice_entity(invoice_id),
        client.execute_update_with_start_workflow(
            InvoiceWorkflow.create, request, start_workflow_operation=start
        ),
    )


async def void_invoice(client: Client, invoice_id: str) -> InvoiceView:
    handle = invoice_handle(client, invoice_id)
    return await await_update(
        _invoice_entity(invoice_id), handle.execute_update(InvoiceWorkflow.void)
    )
