"""A PayPal payment's timers on the time-skipping server: an order the buyer never
approves is EXPIRED after PAYMENT_EXPIRY (Relay stops tracking it: PayPal orders cannot be
deleted, so nothing is written at PayPal), re-read every poll interval meanwhile; one
approved in time is not.

PayPal's read is replaced by an activity registered under the real one's name (the
samples-python way): the test decides what a re-read of the order returns.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.payments.contracts import (
    PAYPAL,
    IntentSnapshot,
    OrderWriteInput,
    PaymentInput,
    PaymentState,
    PaymentStatus,
    PaymentView,
    PublishPaymentEvents,
    ReadOrderInput,
    payment_workflow_id,
)
from workflows.payments import PaymentWorkflow

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


class FakePayPal:
    def __init__(self) -> None:
        self.snapshot: IntentSnapshot | None = None
        self.reads = 0
        self.writes: list[OrderWriteInput] = []
        self.published: list[str] = []

    def activities(self) -> list[Any]:
        @activity.defn(name="read_paypal_order")
        async def read_paypal_order(params: ReadOrderInput) -> IntentSnapshot:
            assert self.snapshot is not None
            self.reads += 1
            return self.snapshot

        @activity.defn(name="write_paypal_order")
        async def write_paypal_order(params: OrderWriteInput) -> IntentSnapshot:
            self.writes.append(params)
            assert self.snapshot is not None
            return self.snapshot

        @activity.defn(name="save_payment")
        async def save_payment(view: PaymentView) -> None:
            pass

        @activity.defn(name="publish_payment_events")
        async def publish_payment_events(params: PublishPaymentEvents) -> None:
            self.published.extend(event.type for event in params.events)

        return [read_paypal_order, write_paypal_order, save_payment, publish_payment_events]


@pytest_asyncio.fixture(loop_scope="session")
async def fake_paypal(
    time_skipping_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[FakePayPal, str]]:
    fake = FakePayPal()
    queue = f"paypal-timers-{uuid.uuid4().hex[:8]}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[PaymentWorkflow],
        activities=fake.activities(),
    ):
        yield fake, queue


async def start(env: WorkflowEnvironment, queue: str, fake: FakePayPal) -> WorkflowHandle[Any, Any]:
    """A PayPal payment just created: its order CREATED, awaiting the buyer."""
    payment_id = str(uuid.uuid4())
    order_id = uuid.uuid4().hex[:17].upper()
    fake.snapshot = IntentSnapshot(
        stripe_payment_intent_id="",
        status="CREATED",
        amount=1999,
        currency="usd",
        provider=PAYPAL,
        paypal_order_id=order_id,
        approve_url=f"https://paypal.example/checkoutnow?token={order_id}",
    )
    now = await env.get_current_time()
    view = PaymentView(
        id=payment_id,
        provider=PAYPAL,
        paypal_order_id=order_id,
        status="CREATED",
        relay_status=PaymentStatus.REQUIRES_ACTION,
        amount=1999,
        currency="usd",
        created_at=now,
        last_read_at=now,
    )
    return await env.client.start_workflow(
        PaymentWorkflow.run,
        PaymentInput(
            payment_id=payment_id,
            provider=PAYPAL,
            paypal_order_id=order_id,
            poll_interval_seconds=(10 * MINUTE).total_seconds(),
            expiry_seconds=(2 * HOUR).total_seconds(),
            view=view,
        ),
        id=payment_workflow_id(payment_id),
        task_queue=queue,
    )


async def state(handle: WorkflowHandle[Any, Any]) -> PaymentState:
    return await handle.query(PaymentWorkflow.state)  # type: ignore[no-any-return]


async def test_an_order_never_approved_expires(
    time_skipping_env: WorkflowEnvironment, fake_paypal: tuple[FakePayPal, str]
) -> None:
    fake, queue = fake_paypal
    fake.published.clear()
    env = time_skipping_env
    handle = await start(env, queue, fake)
    await env.sleep(HOUR)
    current = await state(handle)
    assert current.relay_status == PaymentStatus.REQUIRES_ACTION
    assert current.polls >= 5  # re-read every 10 minutes while the buyer is away

    await env.sleep(2 * HOUR)
    result: PaymentView = await handle.result()
    assert result.relay_status == PaymentStatus.EXPIRED and result.expired
    assert fake.writes == []  # nothing to do at PayPal: the order is left to lapse there
    assert fake.published == ["payment.canceled"]


async def test_an_order_approved_in_time_does_not_expire(
    time_skipping_env: WorkflowEnvironment, fake_paypal: tuple[FakePayPal, str]
) -> None:
    fake, queue = fake_paypal
    env = time_skipping_env
    handle = await start(env, queue, fake)
    await env.sleep(HOUR)
    assert fake.snapshot is not None
    fake.snapshot = dataclasses.replace(fake.snapshot, status="APPROVED", approve_url=None)
    await env.sleep(3 * HOUR)
    current = await state(handle)
    assert current.relay_status == PaymentStatus.REQUIRES_CAPTURE
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    await handle.terminate("done")
