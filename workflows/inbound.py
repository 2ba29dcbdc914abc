"""The inbound forwarder: one long-lived workflow keeps the inbox pump running.

Provider events are recorded in the inbox by their routes, which forward them at once.
Whatever is still PENDING (Temporal was down when it arrived, the API died before
forwarding it, an operator replayed it) is forwarded by the `forward_pending` activity
this workflow keeps running, one pump after another; it continues-as-new after
`max_pumps_per_run` pumps or when Temporal suggests it. While Temporal itself is down
nothing is lost: events wait in the database and the pump picks them up when it is back.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.inbound import InboundActivities
    from relay.inbound.contracts import (
        ForwardPumpInput,
        InboundForwarderInput,
        InboundForwarderState,
    )

PUMP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)


@workflow.defn
class InboundForwarderWorkflow:
    """Forwards every PENDING inbound event; never completes (continues-as-new instead)."""

    @workflow.init
    def __init__(self, params: InboundForwarderInput) -> None:
        self._state = InboundForwarderState(runs=params.runs)

    @workflow.run
    async def run(self, params: InboundForwarderInput) -> None:
        while True:
            result = await workflow.execute_activity_method(
                InboundActivities.forward_pending,
                ForwardPumpInput(
                    budget_seconds=params.pump_budget_seconds,
                    poll_seconds=params.pump_poll_seconds,
                    batch_size=params.batch_size,
                    lease_seconds=params.lease_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=params.pump_budget_seconds + 60),
                heartbeat_timeout=timedelta(seconds=params.pump_heartbeat_seconds),
                retry_policy=PUMP_RETRY,
            )
            self._state.pumps += 1
            self._state.forwarded += result.forwarded
            self._state.failed += result.failed
            if (
                self._state.pumps >= params.max_pumps_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(
                    InboundForwarderInput(
                        pump_budget_seconds=params.pump_budget_seconds,
                        pump_poll_seconds=params.pump_poll_seconds,
                        pump_heartbeat_seconds=params.pump_heartbeat_seconds,
                        batch_size=params.batch_size,
                        lease_seconds=params.lease_seconds,
                        runs=params.runs + 1,
                        max_pumps_per_run=params.max_pumps_per_run,
                    )
                )

    @workflow.query
    def state(self) -> InboundForwarderState:
        return self._state


WORKFLOWS = (InboundForwarderWorkflow,)
