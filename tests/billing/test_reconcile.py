"""Reconciliation: the `stripe-reconcile` Schedule lists Stripe's events and feeds the
inbox those it lacks, so an event lost while Relay's endpoint was down still reaches its
subscription; a second pass feeds nothing twice."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from stripe import StripeClient

from relay.billing.contracts import ReconcileInput, ReconcileResult, reconcile_schedule_id
from relay.inbound.repository import T, watermark
from relay.sandbox.stripe import StripeSandbox
from tests.billing.helpers import outside_subscription
from tests.conftest import Stack, eventually
from tests.support.api import closed_address
from workflows.billing import StripeReconcileWorkflow
from workflows.clients.billing import subscription_state

pytestmark = pytest.mark.e2e


def inbox(stack: Stack, sid: str) -> dict[str, str]:
    with stack.engine.connect() as connection:
        rows = connection.execute(select(T.c.type, T.c.status).where(T.c.object_id == sid))
        return {row.type: row.status for row in rows}


async def test_events_lost_while_the_endpoint_was_down_are_fed_once(
    billing_stack: Stack, stripe: StripeClient, localstripe: StripeSandbox
) -> None:
    queue = billing_stack.settings.temporal_task_queue
    schedule = billing_stack.client.get_schedule_handle(reconcile_schedule_id(queue))
    description = await schedule.describe()
    # STRIPE_RECONCILE_INTERVAL (10m by default; the test stacks set a long one).
    every = description.schedule.spec.intervals[0].every
    assert every == billing_stack.settings.stripe_reconcile_interval == timedelta(days=7)

    # Delivered: Relay's endpoint is up.
    localstripe.register_webhook(f"{billing_stack.api_url}/webhooks/stripe")
    delivered = outside_subscription(stripe, user_id="user-up")
    await eventually(
        lambda: inbox(billing_stack, delivered).get("customer.subscription.created") == "FORWARDED"
    )
    # Lost: Relay's endpoint is down (localstripe tries once, as Stripe's sandbox does).
    localstripe.register_webhook(f"http://{closed_address()}/webhooks/stripe")
    lost = outside_subscription(stripe, user_id="user-down")
    assert inbox(billing_stack, lost) == {}

    await schedule.trigger()  # what the Schedule does every STRIPE_RECONCILE_INTERVAL
    await eventually(
        lambda: inbox(billing_stack, lost).get("customer.subscription.created") == "FORWARDED",
        timeout=30,
    )

    async def adopted() -> bool:
        state = await subscription_state(billing_stack.client, lost)
        return state.status == "active" and state.entitled

    await eventually(adopted, timeout=30)
    # The pass records its watermark once it has fed everything it listed.
    await eventually(lambda: watermark(billing_stack.engine, "stripe") is not None, timeout=30)

    again: ReconcileResult = await billing_stack.client.execute_workflow(
        StripeReconcileWorkflow.run,
        ReconcileInput(),
        id=f"reconcile-again-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    assert again.listed >= 1 and again.fed == 0
    assert inbox(billing_stack, delivered)["customer.subscription.created"] == "FORWARDED"
