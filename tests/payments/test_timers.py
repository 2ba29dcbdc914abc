"""A payment's durable timers on the time-skipping server: the re-read when no event came
for the poll interval, and the expiry of an intent still awaiting the payer.

Stripe is replaced here by activities registered under the real activities' names (the
samples-python way): the test decides what a re-read of the intent returns, and hours
pass in well under a second.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.inbound.contracts import InboundEventSignal
from relay.payments.contracts import (
    IntentSnapshot,
    IntentWriteInput,
    PaymentError,
    PaymentInput,
    PaymentState,
    PaymentStatus,
    PaymentView,
    PublishPaymentEvents,
    ReadIntentInput,
    payment_workflow_id,
)
from tests.conftest import eventually
from workflows.payments import PaymentWorkflow

MINUTE = timedelta(minutes=1)
DECLINED = PaymentError(code="card_declined", decline_code="insufficient_funds", message="no")
HOUR = timedelta(hours=1)


class FakeStripe:
    """What a read of the intent answers, every write asked, every event published."""

    def __init__(self) -> None:
        self.snapshot: IntentSnapshot | None = None
        self.reads = 0
        self.writes: list[IntentWriteInput] = []
        self.published: list[str] = []
        self.saved: list[PaymentView] = []

    def activities(self) -> list[Any]:
        @activity.defn(name="read_payment_intent")
        async def read_payment_intent(params: ReadIntentInput) -> IntentSnapshot:
            assert self.snapshot is not None
            self.reads += 1
            return self.snapshot

        @activity.defn(name="write_payment_intent")
        async def write_payment_intent(params: IntentWriteInput) -> IntentSnapshot:
            assert self.snapshot is not None
            self.writes.append(params)
            if params.action == "cancel":
                self.set(status="canceled", next_action=None)
            return self.snapshot

        @activity.defn(name="save_payment")
        async def save_payment(view: PaymentView) -> None:
            self.saved.append(view)

        @activity.defn(name="publish_payment_events")
        async def publish_payment_events(params: PublishPaymentEvents) -> None:
            self.published.extend(event.type for event in params.events)

        return [read_payment_intent, write_payment_intent, save_payment, publish_payment_events]

    def set(self, **changes: Any) -> None:
        assert self.snapshot is not None
        self.snapshot = dataclasses.replace(self.snapshot, **changes)


@pytest_asyncio.fixture(loop_scope="session")
async def fake_stripe(
    time_skipping_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    queue = f"payment-timers-{uuid.uuid4().hex[:8]}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[PaymentWorkflow],
        activities=fake.activities(),
    ):
        yield fake, queue


async def start(
    env: WorkflowEnvironment,
    queue: str,
    fake: FakeStripe,
    status: str,
    now: datetime,
    relay_status: PaymentStatus = PaymentStatus.PROCESSING,
    last_error: PaymentError | None = None,
) -> WorkflowHandle[Any, Any]:
    """A payment created at `now` whose intent Stripe holds in `status` (a run that
    continued as new carries its view like this)."""
    payment_id = str(uuid.uuid4())
    intent_id = f"pi_{uuid.uuid4().hex[:12]}"
    fake.snapshot = IntentSnapshot(
        stripe_payment_intent_id=intent_id,
        status=status,
        amount=9999,
        currency="usd",
        next_action={"type": "use_stripe_sdk"} if status == "requires_action" else None,
        last_error=last_error,
    )
    view = PaymentView(
        id=payment_id,
        stripe_payment_intent_id=intent_id,
        status=status,
        relay_status=relay_status,
        last_error=last_error,
        amount=9999,
        currency="usd",
        created_at=now,
        last_read_at=now,
    )
    return await env.client.start_workflow(
        PaymentWorkflow.run,
        PaymentInput(
            payment_id=payment_id,
            stripe_payment_intent_id=intent_id,
            poll_interval_seconds=(10 * MINUTE).total_seconds(),
            expiry_seconds=(2 * HOUR).total_seconds(),
            view=view,
        ),
        id=payment_workflow_id(payment_id),
        task_queue=queue,
    )


async def state(handle: WorkflowHandle[Any, Any]) -> PaymentState:
    return await handle.query(PaymentWorkflow.state)  # type: ignore[no-any-return]


async def test_no_event_for_the_poll_interval_re_reads_the_intent(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    env = time_skipping_env
    handle = await start(env, queue, fake, "processing", await env.get_current_time())
    await env.sleep(5 * MINUTE)
    assert (await state(handle)).syncs == 0  # not yet: the interval has not passed

    fake.set(status="succeeded", amount_captured=9999)  # Stripe settled; no event came
    await env.sleep(6 * MINUTE)
    current = await state(handle)
    assert current.polls == 1 and current.events_applied == 0
    assert current.relay_status == PaymentStatus.SUCCEEDED
    assert fake.published == ["payment.succeeded"]
    assert fake.saved[-1].relay_status == PaymentStatus.SUCCEEDED

    # Settled: no more polling, only the refund window's end.
    reads = fake.reads
    await env.sleep(5 * HOUR)
    assert fake.reads == reads
    await handle.terminate("done")


@pytest.mark.parametrize(
    ("status", "relay_status", "last_error"),
    [
        ("requires_action", PaymentStatus.REQUIRES_ACTION, None),  # 3-D Secure abandoned
        ("requires_payment_method", PaymentStatus.FAILED, DECLINED),  # no second card
        ("requires_confirmation", PaymentStatus.PENDING, None),  # never confirmed
    ],
)
async def test_an_intent_still_awaiting_the_payer_expires(
    time_skipping_env: WorkflowEnvironment,
    fake_stripe: tuple[FakeStripe, str],
    status: str,
    relay_status: PaymentStatus,
    last_error: PaymentError | None,
) -> None:
    fake, queue = fake_stripe
    fake.published.clear()
    fake.writes.clear()
    env = time_skipping_env
    now = await env.get_current_time()
    handle = await start(env, queue, fake, status, now, relay_status, last_error)
    await env.sleep(HOUR)
    current = await state(handle)
    assert current.relay_status == relay_status
    assert current.polls >= 5  # re-read every 10 minutes while the payer is away
    assert fake.writes == []

    view = await handle.result()  # the expiry (2 hours) ends it
    assert view.relay_status == PaymentStatus.EXPIRED and view.status == "canceled"
    assert [w.action for w in fake.writes] == ["cancel"]
    assert fake.writes[0].idempotency_key == f"{payment_workflow_id(view.id)}:cancel:1"
    assert fake.published == ["payment.canceled"]
    assert fake.saved[-1].relay_status == PaymentStatus.EXPIRED


async def test_an_event_puts_the_next_poll_a_full_interval_later(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    env = time_skipping_env
    handle = await start(env, queue, fake, "processing", await env.get_current_time())
    await env.sleep(8 * MINUTE)
    await handle.signal(
        PaymentWorkflow.stripe_event,
        InboundEventSignal("inbox-1", "stripe", "evt_1", "payment_intent.processing"),
    )

    async def applied() -> PaymentState | None:
        current = await state(handle)
        return current if current.events_applied == 1 else None

    await eventually(applied, timeout=20)
    await env.sleep(5 * MINUTE)  # 13 minutes after the start, 5 after the event
    assert (await state(handle)).polls == 0
    await env.sleep(6 * MINUTE)  # 11 after the event
    current = await state(handle)
    assert current.polls == 1 and current.syncs == 2
    await handle.terminate("done")


async def test_a_succeeded_payment_stays_open_for_refunds_then_ends(
    time_skipping_env: WorkflowEnvironment, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, queue = fake_stripe
    env = time_skipping_env
    handle = await start(
        env, queue, fake, "succeeded", await env.get_current_time(), PaymentStatus.SUCCEEDED
    )
    fake.set(amount_captured=9999)
    reads = fake.reads
    await env.sleep(timedelta(days=179))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    view = await handle.result()  # the refund window (180 days) passes
    assert view.relay_status == PaymentStatus.SUCCEEDED
    assert fake.reads == reads  # settled: it slept, it did not poll
