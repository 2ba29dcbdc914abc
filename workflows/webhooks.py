"""The webhook dispatcher: one long-lived workflow delivers every event.

Throughput comes from not spending a workflow per event (the dev server runs
about 35 one-activity workflows a second here). Instead:

- the database is the outbox: POST /v1/events writes the event and its PENDING
  deliveries in one transaction and makes no Temporal call;
- this workflow keeps a `pump_deliveries` activity running, which claims due
  deliveries in batches, attempts them concurrently over one shared connection
  pool and records the attempts in bulk;
- only failed deliveries come back here, by the `hold_retries` signal, and wait on
  durable timers (buckets by due second); each due bucket runs `deliver_retries`;
- `retry_delivery` (an update) runs one manual attempt now;
- history stays bounded: continue-as-new when suggested or after
  `MAX_PUMPS_PER_RUN` pumps, carrying the held retries.

Run one per task queue (`dispatcher_workflow_id`), or WEBHOOK_DISPATCH_SHARDS of
them: claims are leases, so shards never attempt one delivery at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from relay.webhooks.contracts import (
        HOLD_RETRIES_SIGNAL,
        LEGACY_PUMP_HEARTBEAT_SECONDS,
        PUMP_HEARTBEAT_SECONDS,
        AttemptResult,
        HeldRetry,
        HoldRetries,
        ManualRetryInput,
        PumpInput,
        PumpResult,
        RetryBatchInput,
        RetryBatchResult,
        WebhookDispatchInput,
        WebhookDispatchState,
    )

# Retries held on timers at once; beyond it the database sweep takes them (later by
# WEBHOOK_SWEEP_GRACE), which keeps the carried state well under payload limits.
MAX_HELD_RETRIES = 20_000
RETRIES_PER_ACTIVITY = 500

PUMP_HEARTBEAT_TIMEOUT = timedelta(seconds=PUMP_HEARTBEAT_SECONDS)
PUMP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)
# A lost pump is retried within 2 s however often it was lost (a retry costs one query).
PUMP_RECOVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=2)
)
RETRY_BATCH_TIMEOUT = timedelta(minutes=5)
RETRY_BATCH_HEARTBEAT = timedelta(seconds=30)
MANUAL_RETRY_TIMEOUT = timedelta(minutes=2)
MANUAL_RETRY = RetryPolicy(maximum_attempts=2)
# Dispatchers that run from before the short pump heartbeat move to it (their input,
# carried across continue-as-new, still says the old default).
SHORT_PUMP_HEARTBEAT_PATCH = "short-pump-heartbeat"


@workflow.defn
class WebhookDispatchWorkflow:
    """Delivers every outgoing webhook; never completes (continues-as-new instead)."""

    @workflow.init
    def __init__(self, params: WebhookDispatchInput) -> None:
        self._params = params
        self._buckets: dict[int, list[HeldRetry]] = {}
        self._held = 0
        self._changed = False
        self._retry_tasks: set[asyncio.Task[None]] = set()
        self._state = WebhookDispatchState(shard=params.shard, runs=params.runs)
        self._hold(params.held)

    # --- retries held on timers ---------------------------------------------------------

    def _hold(self, retries: list[HeldRetry]) -> None:
        for retry in retries:
            if self._held >= MAX_HELD_RETRIES:
                workflow.logger.warning("retry timers full; the database sweep takes the rest")
                break
            # Bucketed by second: one timer and one activity per due second, not per retry.
            due = int(retry.due.timestamp()) + (1 if retry.due.microsecond else 0)
            self._buckets.setdefault(due, []).append(retry)
            self._held += 1
        self._changed = True

    def _next_due(self) -> int | None:
        return min(self._buckets) if self._buckets else None

    def _take_due(self) -> list[HeldRetry]:
        now = workflow.now().timestamp()
        due: list[HeldRetry] = []
        for second in sorted(self._buckets):
            if second > now:
                break
            due.extend(self._buckets.pop(second))
        self._held -= len(due)
        return due

    async def _deliver(self, retries: list[HeldRetry]) -> None:
        result: RetryBatchResult = await workflow.execute_activity_method(
            WebhookActivities.deliver_retries,
            RetryBatchInput(retries),
            start_to_close_timeout=RETRY_BATCH_TIMEOUT,
            heartbeat_timeout=RETRY_BATCH_HEARTBEAT,
            retry_policy=PUMP_RETRY,
        )
        self._state.delivered += result.delivered
        self._hold(result.retries)

    def _start_retries(self) -> None:
        due = self._take_due()
        for start in range(0, len(due), RETRIES_PER_ACTIVITY):
            task = asyncio.create_task(self._deliver(due[start : start + RETRIES_PER_ACTIVITY]))
            self._retry_tasks.add(task)
            task.add_done_callback(self._retry_tasks.discard)

    def _timeout(self) -> timedelta | None:
        due = self._next_due()
        if due is None:
            return None
        return max(timedelta(0), timedelta(seconds=due - workflow.now().timestamp()))

    # --- the loop -------------------------------------------------------------------------

    def _pump_recovery(self) -> tuple[timedelta, RetryPolicy]:
        """The pump's heartbeat timeout and retry policy."""
        seconds = self._params.pump_heartbeat_seconds
        if not workflow.patched(SHORT_PUMP_HEARTBEAT_PATCH):
            return timedelta(seconds=seconds), PUMP_RETRY
        if seconds == LEGACY_PUMP_HEARTBEAT_SECONDS:
            seconds = PUMP_HEARTBEAT_SECONDS
        return timedelta(seconds=seconds), PUMP_RECOVERY_RETRY

    def _pump(self) -> asyncio.Task[PumpResult]:
        params = self._params
        heartbeat_timeout, retry_policy = self._pump_recovery()
        return asyncio.create_task(
            workflow.execute_activity_method(
                WebhookActivities.pump_deliveries,
                PumpInput(
                    budget_seconds=params.pump_budget_seconds,
                    poll_seconds=params.pump_poll_seconds,
                    return_when_idle=params.idle_pause_seconds > 0,
                ),
                start_to_close_timeout=timedelta(
                    seconds=params.pump_budget_seconds + 2 * params.attempt_timeout_seconds + 60
                ),
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=retry_policy,
            )
        )

    @workflow.run
    async def run(self, params: WebhookDispatchInput) -> None:
        pump = self._pump()
        while True:
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda pump=pump: pump.done() or self._changed,  # type: ignore[misc]
                    timeout=self._timeout(),
                )
            except TimeoutError:
                pass
            self._start_retries()
            if not pump.done():
                continue
            result = pump.result()
            self._state.pumps += 1
            self._state.delivered += result.delivered
            self._state.failed += result.failed
            if (
                self._state.pumps >= params.max_pumps_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(
                    lambda: not self._retry_tasks and workflow.all_handlers_finished()
                )
                workflow.continue_as_new(
                    WebhookDispatchInput(
                        shard=params.shard,
                        pump_budget_seconds=params.pump_budget_seconds,
                        pump_poll_seconds=params.pump_poll_seconds,
                        pump_heartbeat_seconds=params.pump_heartbeat_seconds,
                        attempt_timeout_seconds=params.attempt_timeout_seconds,
                        idle_pause_seconds=params.idle_pause_seconds,
                        held=[retry for bucket in self._buckets.values() for retry in bucket],
                        runs=params.runs + 1,
                        max_pumps_per_run=params.max_pumps_per_run,
                    )
                )
            if result.idle and params.idle_pause_seconds > 0:
                await self._pause(timedelta(seconds=params.idle_pause_seconds))
            pump = self._pump()

    async def _pause(self, pause: timedelta) -> None:
        """Between idle pumps (tests only): wait, firing retries as they fall due."""
        until = workflow.now() + pause
        while workflow.now() < until:
            timeout = until - workflow.now()
            retry_in = self._timeout()
            if retry_in is not None and retry_in < timeout:
                timeout = retry_in
            self._changed = False
            try:
                await workflow.wait_condition(lambda: self._changed, timeout=timeout)
            except TimeoutError:
                pass
            self._start_retries()
            if self._retry_tasks:
                await workflow.wait_condition(lambda: not self._retry_tasks)
                return

    # --- messages -------------------------------------------------------------------------

    @workflow.signal(name=HOLD_RETRIES_SIGNAL)
    def hold_retries(self, batch: HoldRetries) -> None:
        """Retries the pump recorded: held on timers until due."""
        self._hold(batch.retries)

    @workflow.update
    async def retry_delivery(self, request: ManualRetryInput) -> AttemptResult:
        """One manual attempt of a delivery now (POST /v1/deliveries/{id}/retry)."""
        return await workflow.execute_activity_method(
            WebhookActivities.retry_delivery,
            request,
            start_to_close_timeout=MANUAL_RETRY_TIMEOUT,
            retry_policy=MANUAL_RETRY,
        )

    @workflow.query
    def state(self) -> WebhookDispatchState:
        due = self._next_due()
        return WebhookDispatchState(
            shard=self._state.shard,
            runs=self._state.runs,
            pumps=self._state.pumps,
            delivered=self._state.delivered,
            failed=self._state.failed,
            held_retries=self._held,
            next_retry_at=datetime.fromtimestamp(due, tz=UTC) if due is not None else None,
            retry_batches_in_flight=len(self._retry_tasks),
        )


WORKFLOWS = (WebhookDispatchWorkflow,)
