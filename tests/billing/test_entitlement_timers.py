"""Entitlement on durable timers, on the time-skipping server: the dunning grace period,
the trial reminder and access ending at a cancellation's effective time.

Stripe is replaced here by activities registered under the real activities' names (the
samples-python way): the test decides what a re-read of the subscription returns, and
days pass in well under a second.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.billing.contracts import (
    STRIPE_EVENT_SIGNAL,
    PublishInput,
    StripeSnapshot,
    SubscriptionInput,
    SubscriptionState,
    SubscriptionStatus,
    SubscriptionView,
    SyncInput,
    subscription_workflow_id,
)
from relay.inbound.contracts import InboundEventSignal
from tests.conftest import eventually
from workflows.billing import SubscriptionWorkflow

DAY = timedelta(days=1)


class FakeStripe:
    """What `read_subscription` answers, and every event `publish` was handed."""

    def __init__(self) -> None:
        self.snapshot: StripeSnapshot | None = None
        self.published: list[str] = []
        self.saved: list[SubscriptionView] = []

    def activities(self) -> list[Any]:
        @activity.defn(name="read_subscription")
        async def read_subscription(params: SyncInput) -> StripeSnapshot:
            assert self.snapshot is not None
            return self.snapshot

        @activity.defn(name="save_subscription")
        async def save_subscription(view: SubscriptionView) -> None:
            self.saved.append(view)

        @activity.defn(name="publish_subscription_events")
        async def publish_subscription_events(params: PublishInput) -> None:
            self.published.extend(
                event.type.removeprefix("subscription.") for event in params.events
            )

        return [read_subscription, save_subscription, publish_subscription_events]

    def set(self, **changes: Any) -> None:
        assert self.snapshot is not None
        self.snapshot = dataclasses.replace(self.snapshot, **changes)


@pytest_asyncio.fixture(loop_scope="session")
async def fake_stripe(
    time_skipping_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    queue = f"billing-timers-{uuid.uuid4().hex[:8]}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=fake.activities(),
    ):
        yield fake, queue


async def adopt(
    env: WorkflowEnvironment, queue: str, fake: FakeStripe, snapshot: StripeSnapshot
) -> WorkflowHandle[Any, Any]:
    fake.snapshot = snapshot
    sid = snapshot.stripe_subscription_id
    handle = await env.client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=sid, stripe_subscription_id=sid, adopted=True),
        id=subscription_workflow_id(sid),
        task_queue=queue,
        start_signal=STRIPE_EVENT_SIGNAL,
        start_signal_args=[
            InboundEventSignal("inbox-1", "stripe", "evt_1", "customer.subscription.created")
        ],
    )
    await applied(handle, 1)
    return handle


async def applied(handle: WorkflowHandle[Any, Any], count: int) -> SubscriptionState:
    async def check() -> SubscriptionState | None:
        state = await handle.query(SubscriptionWorkflow.state)
        return state if state.events_applied >= count else None

    return await eventually(check, timeout=20)  # type: ignore[return-value]


async def event(
    handle: WorkflowHandle[Any, Any], n: int, kind: str = "customer.subscription.updated"
) -> SubscriptionState:
    await handle.signal(
        SubscriptionWorkflow.stripe_event,
        InboundEventSignal(f"inbox-{n}", "stripe", f"evt_{n}", kind),
    )
    return await applied(handle, n)


async def state(handle: WorkflowHandle[Any, Any]) -> SubscriptionState:
    return await handle.query(SubscriptionWorkflow.state)


def snapshot(sid: str, now: datetime, **fields: Any) -> StripeSnapshot:
    """As Stripe would answer at `now` (the time-skipping server's clock, days ahead of
    the wall clock once earlier tests skipped time)."""
    values: dict[str, Any] = {
        "stripe_subscription_id": sid,
        "customer_id": "cus_1",
        "status": SubscriptionStatus.ACTIVE,
        "current_period_end": now + 30 * DAY,
        "price_id": "price_pro",
        "user_id": "user-1",
        "grace_period_seconds": (7 * DAY).total_seconds(),
    }
    return StripeSnapshot(**(values | fields))


async def test_dunning_grace_period_keeps_access_then_revokes_then_restores(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    env = time_skipping_env
    now = await env.get_current_time()
    handle = await adopt(env, queue, fake, snapshot("sub_grace", now))
    assert (await state(handle)).entitled

    fake.set(status=SubscriptionStatus.PAST_DUE)  # the renewal failed; Stripe retries
    current = await event(handle, 2, "invoice.payment_failed")
    assert current.status == "past_due" and current.entitled
    assert current.view is not None and current.view.grace_until is not None

    await env.sleep(5 * DAY)
    assert (await state(handle)).entitled
    await env.sleep(DAY + timedelta(hours=12))  # less than a day left: the warning
    assert "grace_period_ending" in fake.published
    assert (await state(handle)).entitled

    await env.sleep(DAY)  # the grace period ended unpaid
    current = await state(handle)
    assert current.status == "past_due" and not current.entitled
    assert fake.published[-1] == "access_revoked"

    fake.set(status=SubscriptionStatus.ACTIVE)  # an invoice was paid
    current = await event(handle, 3, "invoice.paid")
    assert current.entitled and current.view is not None and current.view.grace_until is None
    assert fake.published == [
        "activated",
        "payment_failed",
        "grace_period_ending",
        "access_revoked",
        "activated",
    ]
    await handle.terminate("done")


async def test_trial_reminder_three_days_before_the_trial_ends(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    fake.published.clear()
    now = await time_skipping_env.get_current_time()
    handle = await adopt(
        time_skipping_env,
        queue,
        fake,
        snapshot("sub_trial", now, status=SubscriptionStatus.TRIALING, trial_end=now + 10 * DAY),
    )
    assert (await state(handle)).entitled
    await time_skipping_env.sleep(6 * DAY)
    assert "trial_will_end" not in fake.published
    await time_skipping_env.sleep(2 * DAY)
    assert fake.published.count("trial_will_end") == 1
    await time_skipping_env.sleep(DAY)
    assert fake.published.count("trial_will_end") == 1  # once per trial end
    await handle.terminate("done")


async def test_access_ends_at_the_period_end_of_a_cancellation_then_the_run_ends(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    fake.published.clear()
    now = await time_skipping_env.get_current_time()
    handle = await adopt(
        time_skipping_env,
        queue,
        fake,
        snapshot("sub_cape", now, cancel_at_period_end=True, current_period_end=now + 5 * DAY),
    )
    assert (await state(handle)).entitled
    await time_skipping_env.sleep(4 * DAY)
    assert (await state(handle)).entitled
    await time_skipping_env.sleep(2 * DAY)
    current = await state(handle)
    # Stripe has not sent customer.subscription.deleted yet; access ended on time anyway.
    assert current.status == "active" and not current.entitled
    assert fake.published[-1] == "access_revoked"

    fake.set(status=SubscriptionStatus.CANCELED)
    await handle.signal(
        SubscriptionWorkflow.stripe_event,
        InboundEventSignal("inbox-2", "stripe", "evt_2", "customer.subscription.deleted"),
    )
    view = await handle.result()
    assert view.status == "canceled" and not view.entitled
    assert fake.published[-1] == "canceled"
