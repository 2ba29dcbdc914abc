"""The payment workflow: `payment-{id}`, the single writer of one payment's state.

- Created by `POST /v1/payments` (update-with-start of `create`): the PaymentIntent is
  created (Idempotency-Key `payment-{id}:create`) and, when asked, confirmed as its own
  step, so a declined card is a state Relay reads back (FAILED with the decline code),
  never a lost intent.
- Stripe's events (`payment_intent.*`, `charge.refunded`, `refund.updated`) are signals
  carrying only their id; duplicates are dropped by event id (a bounded set carried
  across continue-as-new), any other makes the workflow re-read the intent and derive
  its state from that alone (`relay.payments.lifecycle`): late, reordered and
  duplicated events are harmless.
- `confirm`, `capture`, `cancel` and `refund` are updates; every Stripe write carries an
  Idempotency-Key made of the workflow id, the step and its number.
- Durable timers: the intent is re-read when no event came for the poll interval while
  Stripe may still change it, and an intent still awaiting the payer is canceled after
  the expiry (EXPIRED).
- Ends when the payment is canceled, expired or fully refunded, or, succeeded, once its
  refund window has passed with no refund in flight (or when creation was refused);
  continues-as-new when Temporal suggests it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.payments_invoices import InvoiceWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.payments_paypal import PayPalPaymentActivities
    from relay.errors import ErrorCode
    from relay.inbound.contracts import InboundEventSignal
    from relay.payments.contracts import (
        CANCELABLE,
        CONFIRMABLE,
        MAX_SEEN_EVENTS,
        PAYMENT_WORKFLOW,
        PAYPAL,
        PAYPAL_CANCELABLE,
        PAYPAL_CAPTURABLE,
        PAYPAL_EVENT_SIGNAL,
        REFUNDABLE,
        RELAY_ID_METADATA,
        STRIPE_EVENT_SIGNAL,
        CapturePayment,
        ConfirmPayment,
        CreateIntentInput,
        CreateOrderInput,
        CreatePayment,
        IntentSnapshot,
        IntentWriteInput,
        OrderWriteInput,
        PaymentEvent,
        PaymentInput,
        PaymentState,
        PaymentView,
        PublishPaymentEvents,
        ReadIntentInput,
        ReadOrderInput,
        RefundPayment,
        RefundResult,
        RefundView,
        payment_workflow_id,
    )
    from relay.payments.lifecycle import (
        apply_snapshot,
        awaiting_payer,
        expiry_at,
        is_final,
        poll_at,
        refund_window_end,
        remaining,
    )

STRIPE_TIMEOUT = timedelta(seconds=60)
# Stripe down: creation and reads are retried until it answers (a refusal is
# non-retryable and stops at once).
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
# A write (confirm, capture, cancel, refund) that Stripe keeps failing gives up after a
# few minutes: the update fails with PROVIDER_ERROR and releases the payment.
WRITE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name=PAYMENT_WORKFLOW)
class PaymentWorkflow:
    """One payment: mirrors its PaymentIntent, owns Relay's status, publishes its changes."""

    @workflow.init
    def __init__(self, params: PaymentInput) -> None:
        self._workflow_id = payment_workflow_id(params.payment_id)
        self._view = params.view or PaymentView(
            id=params.payment_id,
            provider=params.provider,
            stripe_payment_intent_id=params.stripe_payment_intent_id,
            paypal_order_id=params.paypal_order_id,
        )
        if self._view.key_prefix is None:
            self._view.key_prefix = (
                f"{self._workflow_id}:{workflow.info().run_id}"
                if params.view is None and self._view.provider_id() is not None
                else self._workflow_id
            )
        self._poll_seconds = params.poll_interval_seconds
        self._expiry_seconds = params.expiry_seconds
        self._seen: deque[str] = deque(params.seen_events[-MAX_SEEN_EVENTS:], MAX_SEEN_EVENTS)
        self._pending: list[InboundEventSignal] = []
        self._lock = asyncio.Lock()
        self._refused = False
        # Set by every change of the view: the loop recomputes its timers.
        self._changed = False
        # After a cancellation at expiry that Stripe refused: not again before this.
        self._expiry_not_before: datetime | None = None
        self._state = PaymentState(payment_id=params.payment_id, runs=params.runs)

    # --- the loop ------------------------------------------------------------------------

    def _ended(self) -> bool:
        if self._refused:
            return True
        if self._view.provider_id() is None or self._view.status is None:
            return False
        return is_final(self._view, workflow.now())

    def _deadline(self) -> datetime | None:
        view = self._view
        if view.status is None:
            return None
        candidates = [
            self._expires(),
            poll_at(view, self._poll_seconds),
            refund_window_end(view) if view.relay_status in REFUNDABLE else None,
        ]
        found = [moment for moment in candidates if moment is not None]
        return min(found) if found else None

    def _expires(self) -> datetime | None:
        expires = expiry_at(self._view, self._expiry_seconds)
        if expires is not None and self._expiry_not_before is not None:
            return max(expires, self._expiry_not_before)
        return expires

    @workflow.run
    async def run(self, params: PaymentInput) -> PaymentView:
        while True:
            if self._ended() and not self._pending:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._ended() and not self._pending:
                    return dataclasses.replace(self._view, client_secret=None)
            self._changed = False
            deadline = self._deadline()
            if deadline is not None and deadline <= workflow.now():
                async with self._lock:
                    await self._on_deadline()
                continue
            try:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._pending)
                        or self._changed
                        or self._ended()
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=deadline - workflow.now() if deadline is not None else None,
                )
            except TimeoutError:
                continue  # the deadline is handled at the top of the loop
            if self._pending:
                async with self._lock:
                    await self._sync_pending()
            if workflow.info().is_continue_as_new_suggested() and not self._ended():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    PaymentInput(
                        payment_id=params.payment_id,
                        stripe_payment_intent_id=self._view.stripe_payment_intent_id,
                        provider=self._view.provider,
                        paypal_order_id=self._view.paypal_order_id,
                        poll_interval_seconds=self._poll_seconds,
                        expiry_seconds=self._expiry_seconds,
                        seen_events=list(self._seen),
                        runs=params.runs + 1,
                        view=self._view,
                    )
                )

    async def _sync_pending(self) -> None:
        events, self._pending = self._pending, []
        if self._view.provider_id() is None:
            return  # not created yet: creation reads the provider anyway
        try:
            snap = await self._read()
        except ActivityError as exc:
            # Only a refusal gets here (Stripe down is retried inside the activity).
            if self._view.status is None:
                workflow.logger.warning("payment intent unknown to Stripe: %s", exc.cause)
                self._refused = True
            else:
                workflow.logger.warning("could not re-read the payment intent: %s", exc.cause)
            return
        await self._apply(snap)
        self._state.events_applied += len(events)

    async def _on_deadline(self) -> None:
        now = workflow.now()
        expires = self._expires()
        poll = poll_at(self._view, self._poll_seconds)
        try:
            if expires is not None and now >= expires:
                # The payer may have finished just now: read before canceling.
                await self._apply(await self._read())
                if self._view.status in awaiting_payer(self._view):
                    self._view.expired = True
                    try:
                        await self._cancel()
                    except ApplicationError as exc:
                        self._view.expired = False
                        workflow.logger.warning("could not cancel the expired intent: %s", exc)
                        # Try again one poll interval later, not at once.
                        self._expiry_not_before = now + timedelta(seconds=self._poll_seconds)
            elif poll is not None and now >= poll:
                self._state.polls += 1
                await self._apply(await self._read())
            # Otherwise the refund window ended: the loop ends the run.
        except ActivityError as exc:
            workflow.logger.warning("could not re-read the payment intent: %s", exc.cause)
            # Try again one interval later rather than at once.
            self._view.last_read_at = now
            if expires is not None and now >= expires:
                self._expiry_not_before = now + timedelta(seconds=self._poll_seconds)

    # --- activities ----------------------------------------------------------------------

    async def _read(self) -> IntentSnapshot:
        self._state.syncs += 1
        if self._view.provider == PAYPAL:
            return await workflow.execute_activity_method(
                PayPalPaymentActivities.read_paypal_order,
                ReadOrderInput(self._view.paypal_order_id or ""),
                start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=STRIPE_RETRY,
            )
        return await workflow.execute_activity_method(
            PaymentActivities.read_payment_intent,
            ReadIntentInput(self._view.stripe_payment_intent_id or ""),
            start_to_close_timeout=STRIPE_TIMEOUT,
            retry_policy=STRIPE_RETRY,
        )

    async def _apply(self, snap: IntentSnapshot) -> None:
        view, events = apply_snapshot(self._workflow_id, self._view, snap, workflow.now())
        await self._commit(view, events)

    async def _commit(self, view: PaymentView, events: list[PaymentEvent]) -> None:
        changed = view.writes != self._view.writes
        self._view = view
        self._changed = True
        if changed:
            await workflow.execute_activity_method(
                PaymentActivities.save_payment,
                dataclasses.replace(view, client_secret=None),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
        if events:
            await workflow.execute_activity_method(
                PaymentActivities.publish_payment_events,
                PublishPaymentEvents(events),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )

    async def _cancel(self) -> None:
        """Cancel at Stripe; a PayPal order cannot be canceled (nor deleted): Relay re-reads
        it and stops tracking it while it is still uncaptured."""
        if self._view.provider != PAYPAL:
            await self._write("cancel", {})
            return
        snap = await self._read()
        if snap.status in PAYPAL_CANCELABLE:
            self._view.canceled = not self._view.expired
        await self._apply(snap)
        if snap.status not in PAYPAL_CANCELABLE:
            raise ApplicationError(
                f"a payment that is {self._view.relay_status.value} cannot be canceled",
                {"relayStatus": self._view.relay_status.value, "status": self._view.status},
                type=ErrorCode.CONFLICT.value,
            )

    async def _paypal_write(self, action: str, *, amount: int | None = None) -> IntentSnapshot:
        self._view.stripe_writes += 1
        try:
            snap = await workflow.execute_activity_method(
                PayPalPaymentActivities.write_paypal_order,
                OrderWriteInput(
                    request_id=f"{self._view.key_prefix}:{action}:{self._view.stripe_writes}",
                    paypal_order_id=self._view.paypal_order_id or "",
                    action=action,
                    capture_id=self._view.paypal_capture_id,
                    amount=amount,
                    currency=self._view.currency,
                    payment_id=self._view.id,
                ),
                start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError as exc:
            raise _cause(exc) from None
        await self._apply(snap)
        return snap

    async def _write(self, action: str, params: dict[str, object]) -> IntentSnapshot:
        self._view.stripe_writes += 1
        try:
            snap = await workflow.execute_activity_method(
                PaymentActivities.write_payment_intent,
                IntentWriteInput(
                    idempotency_key=f"{self._view.key_prefix}:{action}:{self._view.stripe_writes}",
                    stripe_payment_intent_id=self._view.stripe_payment_intent_id or "",
                    action=action,
                    params=params,
                ),
                start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError as exc:
            raise _cause(exc) from None
        await self._apply(snap)
        return snap

    # --- messages ------------------------------------------------------------------------

    @workflow.signal(name=PAYPAL_EVENT_SIGNAL)
    def paypal_event(self, event: InboundEventSignal) -> None:
        """A PayPal event about this payment's order (its id only; never the payload): the
        order is re-read, as for Stripe's."""
        self.stripe_event(event)

    @workflow.signal(name=STRIPE_EVENT_SIGNAL)
    def stripe_event(self, event: InboundEventSignal) -> None:
        """A Stripe event about this payment (its id only; never the payload)."""
        if event.event_id in self._seen and not event.replay:
            self._state.duplicates_dropped += 1
            return
        if event.event_id not in self._seen:
            self._seen.append(event.event_id)
        self._state.last_event_id = event.event_id
        self._state.last_event_type = event.type
        self._pending.append(event)

    @workflow.update
    async def create(self, request: CreatePayment) -> PaymentView:
        """Create the PaymentIntent and, when asked, confirm it. A retried request (same
        idempotencyKey, same workflow) gets the payment created the first time."""
        async with self._lock:
            if self._view.provider_id() is not None:
                return self._view
            self._view.user_id = request.user_id
            self._view.metadata = dict(request.metadata)
            self._view.created_at = workflow.now()
            if request.provider == PAYPAL:
                self._view.provider = PAYPAL
                try:
                    snap = await workflow.execute_activity_method(
                        PayPalPaymentActivities.create_paypal_order,
                        CreateOrderInput(
                            request_id=f"{self._workflow_id}:create",
                            payment_id=self._view.id,
                            request=request,
                        ),
                        start_to_close_timeout=STRIPE_TIMEOUT,
                        retry_policy=STRIPE_RETRY,
                    )
                except ActivityError as exc:
                    self._refused = True
                    raise _cause(exc) from None
                await self._apply(snap)
                return self._view
            try:
                snap = await workflow.execute_activity_method(
                    PaymentActivities.create_payment_intent,
                    CreateIntentInput(
                        idempotency_key=f"{self._workflow_id}:create",
                        payment_id=self._view.id,
                        request=request,
                    ),
                    start_to_close_timeout=STRIPE_TIMEOUT,
                    retry_policy=STRIPE_RETRY,
                )
            except ActivityError as exc:
                self._refused = True  # nothing was created: the workflow ends
                raise _cause(exc) from None
            await self._apply(snap)
            if request.confirm:
                await self._write("confirm", _confirm_params(request.return_url))
            return self._view

    @workflow.update
    async def confirm(self, request: ConfirmPayment) -> PaymentView:
        async with self._lock:
            self._require(CONFIRMABLE, "confirmed")
            params = _confirm_params(request.return_url)
            if request.payment_method_id:
                params["payment_method"] = request.payment_method_id
            await self._write("confirm", params)
            return self._view

    @workflow.update
    async def capture(self, request: CapturePayment) -> PaymentView:
        async with self._lock:
            if self._view.provider == PAYPAL:
                # PayPal decides whether the buyer approved (ORDER_NOT_APPROVED: 409).
                self._require(PAYPAL_CAPTURABLE, "captured")
                await self._paypal_write("capture")
                return self._view
            self._require(frozenset({"requires_capture"}), "captured")
            params: dict[str, object] = {}
            if request.amount is not None:
                params["amount_to_capture"] = request.amount
            await self._write("capture", params)
            return self._view

    @workflow.update
    async def cancel(self) -> PaymentView:
        async with self._lock:
            self._require(self._cancelable(), "canceled")
            await self._cancel()
            return self._view

    @workflow.update
    async def refund(self, request: RefundPayment) -> RefundResult:
        """A full (the remaining amount) or partial refund; never more than remains of
        what was captured, counting refunds still in flight."""
        async with self._lock:
            # Checked again under the lock: an earlier refund may have taken the rest.
            self._check_refund(request)
            amount = request.amount or remaining(self._view)
            if self._view.provider == PAYPAL:
                snap = await self._paypal_write("refund", amount=amount)
                made = next(
                    (r for r in self._view.refunds if r.id == snap.refund_id),
                    RefundView(id=snap.refund_id or "", amount=amount, status="pending"),
                )
                return RefundResult(refund=made, payment=self._view)
            params: dict[str, object] = {
                "amount": amount,
                "metadata": {RELAY_ID_METADATA: self._view.id},
            }
            if request.reason:
                params["reason"] = request.reason
            snap = await self._write("refund", params)
            made = next(
                (r for r in self._view.refunds if r.id == snap.refund_id),
                RefundView(id=snap.refund_id or "", amount=amount, status="pending"),
            )
            return RefundResult(refund=made, payment=self._view)

    @confirm.validator
    def _validate_confirm(self, request: ConfirmPayment) -> None:
        self._require(CONFIRMABLE, "confirmed")

    @capture.validator
    def _validate_capture(self, request: CapturePayment) -> None:
        if self._view.provider == PAYPAL:
            self._require(PAYPAL_CAPTURABLE, "captured")
        else:
            self._require(frozenset({"requires_capture"}), "captured")

    @cancel.validator
    def _validate_cancel(self) -> None:
        self._require(self._cancelable(), "canceled")

    def _cancelable(self) -> frozenset[str]:
        return PAYPAL_CANCELABLE if self._view.provider == PAYPAL else CANCELABLE

    @refund.validator
    def _validate_refund(self, request: RefundPayment) -> None:
        self._check_refund(request)

    def _require(self, statuses: frozenset[str], verb: str) -> None:
        if self._view.provider_id() is None or self._ended() or self._view.status not in statuses:
            raise ApplicationError(
                f"a payment that is {self._view.relay_status.value} cannot be {verb}",
                {"relayStatus": self._view.relay_status.value, "status": self._view.status},
                type=ErrorCode.CONFLICT.value,
            )

    def _check_refund(self, request: RefundPayment) -> None:
        if self._view.relay_status not in REFUNDABLE or self._ended():
            raise ApplicationError(
                f"a payment that is {self._view.relay_status.value} cannot be refunded",
                {"relayStatus": self._view.relay_status.value, "remaining": 0},
                type=ErrorCode.CONFLICT.value,
            )
        left = remaining(self._view)
        if (request.amount or left) > left or left <= 0:
            raise ApplicationError(
                f"only {left} {self._view.currency} remain to refund",
                {"remaining": left, "requested": request.amount, "currency": self._view.currency},
                type=ErrorCode.CONFLICT.value,
            )

    @workflow.query
    def state(self) -> PaymentState:
        return dataclasses.replace(
            self._state,
            relay_status=self._view.relay_status,
            view=self._view,
        )

    @workflow.query
    def seen_events(self) -> list[str]:
        return list(self._seen)


def _confirm_params(return_url: str | None) -> dict[str, object]:
    # Only when given: Stripe needs it for redirect-based methods, localstripe refuses it.
    return {"return_url": return_url} if return_url else {}


def _cause(exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    return ApplicationError(
        "the provider could not be reached", type=ErrorCode.PROVIDER_ERROR.value
    )


# One-off invoices' workflow lives in its own module (`workflows.payments_invoices`).
WORKFLOWS = (PaymentWorkflow, InvoiceWorkflow)
