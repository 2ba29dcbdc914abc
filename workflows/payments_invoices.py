"""The invoice workflow: `invoice-{id}`, the single writer of one one-off Stripe invoice.

Registered through `workflows.payments.WORKFLOWS`: invoices are part of the payments
capability (its contracts, read model, activities, routes and docs), and this module
keeps the payment workflow's module about payments, as `activities.payments_paypal`
keeps PayPal's activities beside Stripe's.

- Created by `POST /v1/invoices` (update-with-start of `create`): the customer is
  checked, the draft and its items created, the invoice finalized and, when asked, sent
  — each a step with its own Idempotency-Key (`invoice-{id}:create`, `…:item:<n>`,
  `…:finalize`, `…:send`). A retried request (same idempotencyKey) lands on the same
  workflow and finishes whatever step is left: one invoice per idempotencyKey.
- Stripe's `invoice.*` events are signals carrying only their id; duplicates are dropped
  by event id (a bounded set carried across continue-as-new), any other makes the
  workflow re-read the invoice and derive its state from that alone
  (`relay.payments.invoices`). `invoice.paid` and `invoice.payment_failed` are
  published through Relay's outgoing webhooks.
- `void` is an update, allowed on an open invoice only (re-read first).
- While open, the invoice is re-read every poll interval (events may be late or lost).
- Ends when the invoice is paid or void (or when Stripe refused its creation);
  continues-as-new when Temporal suggests it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.payments_invoices import InvoiceActivities
    from relay.errors import ErrorCode
    from relay.inbound.contracts import InboundEventSignal
    from relay.payments.contracts import (
        INVOICE_FINAL,
        INVOICE_WORKFLOW,
        MAX_SEEN_EVENTS,
        STRIPE_EVENT_SIGNAL,
        CreateInvoice,
        DraftInvoiceInput,
        InvoiceInput,
        InvoiceSnapshot,
        InvoiceState,
        InvoiceStatus,
        InvoiceView,
        InvoiceWriteInput,
        PublishInvoiceEvent,
        ReadInvoiceInput,
        invoice_workflow_id,
    )
    from relay.payments.invoices import PAYMENT_FAILED_EVENT, apply_invoice

STRIPE_TIMEOUT = timedelta(seconds=60)
# Stripe down: drafting and reads are retried until it answers (a refusal is
# non-retryable and stops at once).
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
# A finalize, send or void that Stripe keeps failing gives up after a few minutes: the
# update fails with PROVIDER_ERROR; the same request again finishes the step.
WRITE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name=INVOICE_WORKFLOW)
class InvoiceWorkflow:
    """One invoice: mirrors the Stripe invoice, publishes when it is paid or a payment of
    it failed, voids it on request."""

    @workflow.init
    def __init__(self, params: InvoiceInput) -> None:
        self._workflow_id = invoice_workflow_id(params.invoice_id)
        self._view = params.view or InvoiceView(
            id=params.invoice_id, stripe_invoice_id=params.stripe_invoice_id
        )
        self._poll_seconds = params.poll_interval_seconds
        self._seen: deque[str] = deque(params.seen_events[-MAX_SEEN_EVENTS:], MAX_SEEN_EVENTS)
        self._pending: list[InboundEventSignal] = []
        self._lock = asyncio.Lock()
        self._refused = False
        self._state = InvoiceState(invoice_id=params.invoice_id)

    # --- the loop ------------------------------------------------------------------------

    def _ended(self) -> bool:
        return self._refused or self._view.status in INVOICE_FINAL

    @workflow.run
    async def run(self, params: InvoiceInput) -> InvoiceView:
        while True:
            if self._ended() and not self._pending:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._ended() and not self._pending:
                    return self._view
            polling = self._view.status is not None
            try:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._pending)
                        or self._ended()
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=timedelta(seconds=self._poll_seconds) if polling else None,
                )
            except TimeoutError:
                async with self._lock:
                    if not self._ended():
                        await self._sync(None)
                continue
            if self._pending:
                async with self._lock:
                    events, self._pending = self._pending, []
                    failed = next((e for e in events if e.type == PAYMENT_FAILED_EVENT), None)
                    if self._view.stripe_invoice_id is not None:
                        await self._sync(failed)
                        self._state.events_applied += len(events)
            if workflow.info().is_continue_as_new_suggested() and not self._ended():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    InvoiceInput(
                        invoice_id=params.invoice_id,
                        stripe_invoice_id=self._view.stripe_invoice_id,
                        poll_interval_seconds=self._poll_seconds,
                        seen_events=list(self._seen),
                        view=self._view,
                    )
                )

    async def _sync(self, event: InboundEventSignal | None) -> None:
        try:
            snap = await self._read()
        except ActivityError as exc:
            # Only a refusal gets here (Stripe down is retried inside the activity).
            workflow.logger.warning("could not re-read the invoice: %s", exc.cause)
            if self._view.status is None:
                self._refused = True  # a run an event started about an unknown invoice
            return
        await self._apply(snap, event)

    # --- activities ----------------------------------------------------------------------

    async def _read(self) -> InvoiceSnapshot:
        return await workflow.execute_activity_method(
            InvoiceActivities.read_stripe_invoice,
            ReadInvoiceInput(self._view.stripe_invoice_id or ""),
            start_to_close_timeout=STRIPE_TIMEOUT,
            retry_policy=STRIPE_RETRY,
        )

    async def _apply(self, snap: InvoiceSnapshot, event: InboundEventSignal | None) -> None:
        view, events = apply_invoice(
            self._workflow_id,
            self._view,
            snap,
            (event.event_id, event.type) if event is not None else None,
        )
        changed = view != self._view
        self._view = view
        if changed:
            await workflow.execute_activity_method(
                InvoiceActivities.save_invoice,
                view,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
        for outgoing in events:
            await workflow.execute_activity_method(
                InvoiceActivities.publish_invoice_event,
                PublishInvoiceEvent(outgoing),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )

    async def _write(self, action: str) -> None:
        try:
            snap = await workflow.execute_activity_method(
                InvoiceActivities.write_stripe_invoice,
                InvoiceWriteInput(
                    key=f"{self._workflow_id}:{action}",
                    stripe_invoice_id=self._view.stripe_invoice_id or "",
                    action=action,
                ),
                start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError as exc:
            raise _cause(exc) from None
        if action == "send":
            self._view.sent = True
        await self._apply(snap, None)

    # --- messages ------------------------------------------------------------------------

    @workflow.signal(name=STRIPE_EVENT_SIGNAL)
    def stripe_event(self, event: InboundEventSignal) -> None:
        """A Stripe event about this invoice (its id only; never the payload)."""
        if event.event_id in self._seen and not event.replay:
            self._state.duplicates_dropped += 1
            return
        if event.event_id not in self._seen:
            self._seen.append(event.event_id)
        self._state.last_event_type = event.type
        self._pending.append(event)

    @workflow.update
    async def create(self, request: CreateInvoice) -> InvoiceView:
        """Draft, finalize and (when asked) send the invoice. A retried request lands
        here again and finishes whatever step is left, creating nothing twice."""
        async with self._lock:
            if self._view.stripe_invoice_id is None:
                self._view.user_id = request.user_id
                self._view.currency = request.currency
                self._view.created_at = workflow.now()
                try:
                    snap = await workflow.execute_activity_method(
                        InvoiceActivities.draft_stripe_invoice,
                        DraftInvoiceInput(
                            key=self._workflow_id, invoice_id=self._view.id, request=request
                        ),
                        start_to_close_timeout=STRIPE_TIMEOUT,
                        retry_policy=STRIPE_RETRY,
                    )
                except ActivityError as exc:
                    self._refused = True  # nothing was created: the workflow ends
                    raise _cause(exc) from None
                await self._apply(snap, None)
            if self._view.status == InvoiceStatus.DRAFT:
                await self._write("finalize")
            if request.auto_send and not self._view.sent and self._view.status == "open":
                await self._write("send")
            return self._view

    @workflow.update
    async def void(self) -> InvoiceView:
        async with self._lock:
            self._require_open()
            # It may have been paid a moment ago: Stripe's word, not the last event's.
            await self._sync(None)
            self._require_open()
            await self._write("void")
            return self._view

    @void.validator
    def _validate_void(self) -> None:
        self._require_open()

    def _require_open(self) -> None:
        if self._ended() or self._view.status != InvoiceStatus.OPEN:
            raise ApplicationError(
                f"an invoice that is {self._view.status or 'not created'} cannot be voided",
                {"status": self._view.status},
                type=ErrorCode.CONFLICT.value,
            )

    @workflow.query
    def state(self) -> InvoiceState:
        self._state.view = self._view
        return self._state


def _cause(exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    return ApplicationError("Stripe could not be reached", type=ErrorCode.PROVIDER_ERROR.value)
