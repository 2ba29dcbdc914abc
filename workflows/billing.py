"""The subscription entity workflow: `subscription-{id}`, the single writer of its state.

- Created by `POST /v1/subscriptions` (update-with-start of `create`), or by the first
  Stripe event about a subscription Relay never saw (signal-with-start from the inbound
  inbox; `relay.billing.inbound` declares the routing): that subscription is adopted.
- Every Stripe event is a signal carrying only its id and type. Duplicates are dropped
  by event id (a bounded set carried across continue-as-new); any other event makes the
  workflow re-read the subscription from Stripe and derive its state only from that
  (`relay.billing.lifecycle`), never from the event's payload or its arrival order —
  so late, reordered and duplicated events are harmless.
- `cancel`, `change`, `pause` and `resume` are updates; every Stripe write carries an
  Idempotency-Key made of the workflow id and the step.
- `entitled` is Relay's own: durable timers end the dunning grace period, revoke access
  at a cancellation's effective time and send the trial reminder; no cron.
- Ends when the subscription is canceled or incomplete_expired (or its creation was
  refused); continues-as-new per billing period or when Temporal suggests it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.billing import BillingActivities
    from relay.billing.contracts import (
        ENDED,
        MAX_SEEN_EVENTS,
        STRIPE_EVENT_SIGNAL,
        SUBSCRIPTION_WORKFLOW,
        CancelSubscription,
        ChangeSubscription,
        CreateStripeSubscriptionInput,
        CreateSubscription,
        EnsureCustomerInput,
        OutgoingEvent,
        PauseSubscription,
        PublishInput,
        ReconcileInput,
        ReconcileResult,
        StripeSnapshot,
        StripeWriteInput,
        SubscriptionInput,
        SubscriptionState,
        SubscriptionStatus,
        SubscriptionView,
        SyncInput,
        subscription_workflow_id,
    )
    from relay.billing.lifecycle import apply_snapshot, next_deadline, on_deadline
    from relay.errors import ErrorCode
    from relay.inbound.contracts import InboundEventSignal

STRIPE_TIMEOUT = timedelta(seconds=60)
# Stripe down: retried until it answers (a refusal is non-retryable and stops at once).
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
# A write (cancel, change, pause, resume) that Stripe keeps failing gives up after a few
# minutes: the update fails with PROVIDER_ERROR and releases the subscription, instead of
# holding it (and every later event) behind a call that cannot succeed.
WRITE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
RECONCILE_TIMEOUT = timedelta(minutes=10)
RECONCILE_HEARTBEAT = timedelta(minutes=2)
LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
PAUSE_BEHAVIORS = frozenset({"keep_as_draft", "mark_uncollectible", "void"})
PRORATION_BEHAVIORS = frozenset({"create_prorations", "none", "always_invoice"})


@workflow.defn(name=SUBSCRIPTION_WORKFLOW)
class SubscriptionWorkflow:
    """One subscription: mirrors Stripe's status, owns `entitled`, publishes its changes."""

    @workflow.init
    def __init__(self, params: SubscriptionInput) -> None:
        self._workflow_id = subscription_workflow_id(params.subscription_id)
        self._view = params.view or SubscriptionView(
            id=params.subscription_id,
            stripe_subscription_id=params.stripe_subscription_id,
            adopted=params.adopted,
        )
        self._seen: deque[str] = deque(params.seen_events[-MAX_SEEN_EVENTS:], MAX_SEEN_EVENTS)
        self._pending: list[InboundEventSignal] = []
        self._lock = asyncio.Lock()
        self._refused = False
        self._new_period = False
        self._state = SubscriptionState(
            subscription_id=params.subscription_id,
            stripe_subscription_id=params.stripe_subscription_id,
            adopted=params.adopted,
            runs=params.runs,
        )

    # --- the loop ------------------------------------------------------------------------

    def _ended(self) -> bool:
        return self._refused or self._view.status in ENDED

    @workflow.run
    async def run(self, params: SubscriptionInput) -> SubscriptionView:
        while True:
            deadline = next_deadline(self._view)
            if deadline is not None and deadline <= workflow.now():
                async with self._lock:
                    await self._on_deadline()
                continue
            try:
                await workflow.wait_condition(
                    lambda: (
                        bool(self._pending)
                        or self._ended()
                        or self._new_period
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=deadline - workflow.now() if deadline is not None else None,
                )
            except TimeoutError:
                continue  # the deadline is handled at the top of the loop
            if self._pending:
                async with self._lock:
                    await self._sync_pending()
            if self._ended() and not self._pending:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending:
                    return self._view
            if self._new_period or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    SubscriptionInput(
                        subscription_id=params.subscription_id,
                        stripe_subscription_id=self._view.stripe_subscription_id,
                        adopted=self._view.adopted,
                        seen_events=list(self._seen),
                        runs=params.runs + 1,
                        view=self._view,
                    )
                )

    async def _sync_pending(self) -> None:
        events, self._pending = self._pending, []
        if self._view.stripe_subscription_id is None:
            return  # not created yet: creation reads Stripe anyway
        try:
            snap = await self._read()
        except ActivityError as exc:
            # Only a refusal gets here (Stripe down is retried inside the activity).
            if self._view.status == SubscriptionStatus.PENDING:
                # Stripe knows no such subscription: nothing to adopt.
                workflow.logger.warning("subscription unknown to Stripe: %s", exc.cause)
                self._refused = True
            else:
                # Keep the state Stripe last gave; the next event or timer reads again.
                workflow.logger.warning("could not re-read the subscription: %s", exc.cause)
            return
        await self._apply(snap)
        self._state.events_applied += len(events)

    async def _on_deadline(self) -> None:
        if self._view.stripe_subscription_id is not None:
            try:
                await self._apply(await self._read())
            except ActivityError as exc:
                workflow.logger.warning("could not re-read the subscription: %s", exc.cause)
        view, events = on_deadline(self._workflow_id, self._view, workflow.now())
        await self._commit(view, events)

    # --- activities ----------------------------------------------------------------------

    async def _read(self) -> StripeSnapshot:
        self._state.syncs += 1
        return await workflow.execute_activity_method(
            BillingActivities.read_subscription,
            SyncInput(self._view.stripe_subscription_id or ""),
            start_to_close_timeout=STRIPE_TIMEOUT,
            retry_policy=STRIPE_RETRY,
        )

    async def _apply(self, snap: StripeSnapshot, *, created: bool = False) -> None:
        old_period = self._view.current_period_end
        view, events = apply_snapshot(
            self._workflow_id, self._view, snap, workflow.now(), created=created
        )
        if old_period is not None and view.current_period_end != old_period:
            self._new_period = True
        await self._commit(view, events)

    async def _commit(self, view: SubscriptionView, events: list[OutgoingEvent]) -> None:
        changed = view.writes != self._view.writes
        self._view = view
        if changed:
            await workflow.execute_activity_method(
                BillingActivities.save_subscription,
                dataclasses.replace(view, client_secret=None),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
        if events:
            await workflow.execute_activity_method(
                BillingActivities.publish_subscription_events,
                PublishInput(events),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )

    async def _write(self, action: str, params: dict[str, object]) -> SubscriptionView:
        self._view.stripe_writes += 1
        try:
            snap = await workflow.execute_activity_method(
                BillingActivities.write_subscription,
                StripeWriteInput(
                    idempotency_key=f"{self._workflow_id}:{action}:{self._view.stripe_writes}",
                    stripe_subscription_id=self._view.stripe_subscription_id or "",
                    action=action,
                    params=params,
                ),
                start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError as exc:
            raise _cause(exc) from None
        await self._apply(snap)
        return self._view

    # --- messages ------------------------------------------------------------------------

    @workflow.signal(name=STRIPE_EVENT_SIGNAL)
    def stripe_event(self, event: InboundEventSignal) -> None:
        """A Stripe event about this subscription (its id only; never the payload)."""
        if event.event_id in self._seen and not event.replay:
            self._state.duplicates_dropped += 1
            return
        if event.event_id not in self._seen:
            self._seen.append(event.event_id)
        self._state.last_event_id = event.event_id
        self._state.last_event_type = event.type
        self._pending.append(event)

    @workflow.update
    async def create(self, request: CreateSubscription) -> SubscriptionView:
        """Create the customer (once per user) and the Stripe subscription. A retried
        request (same idempotencyKey, same workflow) gets the subscription created."""
        async with self._lock:
            if self._view.stripe_subscription_id is not None:
                return self._view
            self._view.user_id = request.user_id
            try:
                customer_id = await workflow.execute_activity_method(
                    BillingActivities.ensure_customer,
                    EnsureCustomerInput(
                        idempotency_key=self._workflow_id,
                        user_id=request.user_id,
                        email=request.email,
                        payment_method_id=request.payment_method_id,
                    ),
                    start_to_close_timeout=STRIPE_TIMEOUT,
                    retry_policy=STRIPE_RETRY,
                )
                snap = await workflow.execute_activity_method(
                    BillingActivities.create_stripe_subscription,
                    CreateStripeSubscriptionInput(
                        idempotency_key=f"{self._workflow_id}:create",
                        subscription_id=self._view.id,
                        customer_id=customer_id,
                        price_id=request.price_id,
                        quantity=request.quantity,
                        trial_days=request.trial_days,
                        metadata={**request.metadata, "userId": request.user_id},
                    ),
                    start_to_close_timeout=STRIPE_TIMEOUT,
                    retry_policy=STRIPE_RETRY,
                )
            except ActivityError as exc:
                self._refused = True  # nothing was created: the workflow ends
                raise _cause(exc) from None
            self._state.stripe_subscription_id = snap.stripe_subscription_id
            await self._apply(snap, created=True)
            return dataclasses.replace(self._view, client_secret=snap.client_secret)

    @workflow.update
    async def cancel(self, request: CancelSubscription) -> SubscriptionView:
        async with self._lock:
            if request.at_period_end:
                return await self._write("update", {"cancel_at_period_end": True})
            return await self._write("cancel", {})

    @workflow.update
    async def change(self, request: ChangeSubscription) -> SubscriptionView:
        params: dict[str, object] = {"price_id": request.price_id}
        if request.quantity:
            params["quantity"] = request.quantity
        if request.proration_behavior != "create_prorations":  # Stripe's default
            params["proration_behavior"] = request.proration_behavior
        async with self._lock:
            return await self._write("change", params)

    @workflow.update
    async def pause(self, request: PauseSubscription) -> SubscriptionView:
        pause: dict[str, object] = {"behavior": request.behavior}
        if request.resumes_at is not None:
            pause["resumes_at"] = int(request.resumes_at.timestamp())
        async with self._lock:
            return await self._write("update", {"pause_collection": pause})

    @workflow.update
    async def resume(self) -> SubscriptionView:
        async with self._lock:
            if self._view.status == SubscriptionStatus.PAUSED:
                return await self._write("resume", {"billing_cycle_anchor": "now"})
            return await self._write("update", {"pause_collection": ""})

    @cancel.validator
    def _validate_cancel(self, request: CancelSubscription) -> None:
        self._require_live()

    @change.validator
    def _validate_change(self, request: ChangeSubscription) -> None:
        self._require_live()
        if request.proration_behavior not in PRORATION_BEHAVIORS:
            raise ApplicationError(
                f"prorationBehavior must be one of {sorted(PRORATION_BEHAVIORS)}",
                type=ErrorCode.VALIDATION_ERROR.value,
            )

    @pause.validator
    def _validate_pause(self, request: PauseSubscription) -> None:
        self._require_live()
        if request.behavior not in PAUSE_BEHAVIORS:
            raise ApplicationError(
                f"behavior must be one of {sorted(PAUSE_BEHAVIORS)}",
                type=ErrorCode.VALIDATION_ERROR.value,
            )

    @resume.validator
    def _validate_resume(self) -> None:
        self._require_live()

    def _require_live(self) -> None:
        if self._view.stripe_subscription_id is None or self._ended():
            raise ApplicationError(
                f"the subscription is {self._view.status.value}", type=ErrorCode.CONFLICT.value
            )

    @workflow.query
    def state(self) -> SubscriptionState:
        return dataclasses.replace(
            self._state,
            stripe_subscription_id=self._view.stripe_subscription_id,
            status=self._view.status,
            entitled=self._view.entitled,
            view=self._view,
        )

    @workflow.query
    def seen_events(self) -> list[str]:
        return list(self._seen)


def _cause(exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    return ApplicationError("Stripe could not be reached", type=ErrorCode.PROVIDER_ERROR.value)


@workflow.defn
class StripeReconcileWorkflow:
    """One reconciliation pass, started by the `stripe-reconcile` Schedule every
    STRIPE_RECONCILE_INTERVAL: Stripe's events since the last seen, fed to the inbox when
    missing, so an event lost while Relay or its endpoint was down still arrives."""

    @workflow.run
    async def run(self, params: ReconcileInput) -> ReconcileResult:
        return await workflow.execute_activity_method(
            BillingActivities.reconcile_stripe_events,
            params,
            start_to_close_timeout=RECONCILE_TIMEOUT,
            heartbeat_timeout=RECONCILE_HEARTBEAT,
            retry_policy=WRITE_RETRY,
        )


WORKFLOWS = (SubscriptionWorkflow, StripeReconcileWorkflow)
