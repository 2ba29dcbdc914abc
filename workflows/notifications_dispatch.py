"""The notification dispatcher: one long-lived workflow keeps the send pump running.

Messages are rows queued by the routes (the outbox); `pump_notifications` claims and
sends them, one pump after another. Provider callbacks are applied by their routes; the
ones a route could not apply come back through the inbound forwarder as
`provider_event` signals, and this workflow applies them in batches
(`apply_provider_events`) beside the pump. It continues-as-new after `max_pumps_per_run`
pumps or when Temporal suggests it, carrying events not yet applied.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from relay.inbound.contracts import InboundEventSignal
    from relay.notifications.contracts import (
        PROVIDER_EVENT_SIGNAL,
        ApplyEventsInput,
        ApplyEventsResult,
        NotificationDispatchInput,
        NotificationDispatchState,
        SendPumpInput,
        SendPumpResult,
    )

PUMP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)
APPLY_TIMEOUT = timedelta(minutes=2)
EVENTS_PER_APPLY = 500


@workflow.defn
class NotificationDispatchWorkflow:
    """Sends every queued notification; never completes (continues-as-new instead)."""

    @workflow.init
    def __init__(self, params: NotificationDispatchInput) -> None:
        self._params = params
        self._pending: list[str] = list(params.pending_events)
        self._state = NotificationDispatchState(runs=params.runs)

    def _pump(self) -> asyncio.Task[SendPumpResult]:
        params = self._params
        return asyncio.create_task(
            workflow.execute_activity_method(
                NotificationActivities.pump_notifications,
                SendPumpInput(
                    budget_seconds=params.pump_budget_seconds,
                    poll_seconds=params.pump_poll_seconds,
                    batch_size=params.batch_size,
                    lease_seconds=params.lease_seconds,
                ),
                start_to_close_timeout=timedelta(
                    seconds=params.pump_budget_seconds + params.lease_seconds + 60
                ),
                heartbeat_timeout=timedelta(seconds=params.pump_heartbeat_seconds),
                retry_policy=PUMP_RETRY,
            )
        )

    async def _apply_pending(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[:EVENTS_PER_APPLY],
                self._pending[EVENTS_PER_APPLY:],
            )
            result: ApplyEventsResult = await workflow.execute_activity_method(
                NotificationActivities.apply_provider_events,
                ApplyEventsInput(batch),
                start_to_close_timeout=APPLY_TIMEOUT,
                retry_policy=PUMP_RETRY,
            )
            self._state.events_applied += result.applied

    @workflow.run
    async def run(self, params: NotificationDispatchInput) -> None:
        pump = self._pump()
        while True:
            await workflow.wait_condition(
                lambda pump=pump: pump.done() or bool(self._pending)  # type: ignore[misc]
            )
            if self._pending:
                await self._apply_pending()
            if not pump.done():
                continue
            result = pump.result()
            self._state.pumps += 1
            self._state.sent += result.sent
            self._state.failed += result.failed
            if (
                self._state.pumps >= params.max_pumps_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    NotificationDispatchInput(
                        pump_budget_seconds=params.pump_budget_seconds,
                        pump_poll_seconds=params.pump_poll_seconds,
                        pump_heartbeat_seconds=params.pump_heartbeat_seconds,
                        batch_size=params.batch_size,
                        lease_seconds=params.lease_seconds,
                        runs=params.runs + 1,
                        max_pumps_per_run=params.max_pumps_per_run,
                        pending_events=self._pending,
                    )
                )
            pump = self._pump()

    @workflow.signal(name=PROVIDER_EVENT_SIGNAL)
    def provider_event(self, signal: InboundEventSignal) -> None:
        """A provider callback the route recorded but did not apply (see the module)."""
        self._pending.append(signal.inbox_id)

    @workflow.query
    def state(self) -> NotificationDispatchState:
        return self._state
