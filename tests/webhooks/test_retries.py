"""Retry schedule, jitter bounds, exhaustion and the 5-day disable rule, on the time-skipping server.

The real workflow and the real activities run against a real receiver on loopback;
only the activities' clock reads the test server's (skipped) time instead of the wall
clock, so days of retries pass in seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from relay.crypto import Keyring
from relay.db import as_utc, utcnow
from relay.ledger import Ledger
from relay.settings import Settings
from relay.webhooks.contracts import WebhookDispatchInput
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext
from tests.conftest import eventually, task_queue
from tests.webhooks.conftest import Receiver, always, sequence
from tests.webhooks.helpers import attempts_of, create_endpoint, deliveries_of, endpoint_row
from workflows.webhooks import WebhookDispatchWorkflow

SCHEDULE = [timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)]


def server_clock() -> datetime:
    """Inside an activity: the time-skipping server's time when the attempt was scheduled."""
    try:
        return activity.info().current_attempt_scheduled_time
    except RuntimeError:
        return utcnow()


class Dispatcher:
    def __init__(self, env: WorkflowEnvironment, handle: WorkflowHandle, engine: Engine) -> None:
        self.env, self.handle, self.engine = env, handle, engine

    async def advance(self, duration: timedelta, step: timedelta = timedelta(hours=1)) -> None:
        remaining = duration
        while remaining > timedelta(0):
            chunk = min(step, remaining)
            await self.env.sleep(chunk)
            remaining -= chunk


@pytest_asyncio.fixture(loop_scope="session")
async def dispatcher(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Dispatcher]:
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        webhook_allowed_networks="127.0.0.0/8",
        webhook_timeout="5s",
    )
    client = time_skipping_env.client
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    activities = WebhookActivities.from_context(context, clock=server_clock)
    queue = task_queue()
    async with Worker(
        client,
        task_queue=queue,
        workflows=[WebhookDispatchWorkflow],
        activities=[
            activities.pump_deliveries,
            activities.deliver_retries,
            activities.retry_delivery,
        ],
    ):
        handle = await client.start_workflow(
            WebhookDispatchWorkflow.run,
            WebhookDispatchInput(
                pump_budget_seconds=5, idle_pause_seconds=3600, pump_heartbeat_seconds=30
            ),
            id=f"webhook-dispatch-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        yield Dispatcher(time_skipping_env, handle, engine)
        await handle.terminate()
    await activities.close()


async def test_retry_schedule_with_jitter_then_failed_event(
    dispatcher: Dispatcher, engine: Engine, keyring: Keyring, receiver: Receiver
) -> None:
    receiver.behave("down", always(500))
    failing = create_endpoint(engine, keyring, receiver.url("down"), ["order.*"])
    ops = create_endpoint(engine, keyring, receiver.url("ops"), ["webhook.failed"])
    publish_event(engine, "order.created", {"n": 1})

    # 27.6 h of retries, up to 33.1 h with +20 % jitter on every one.
    await dispatcher.advance(timedelta(hours=34))
    delivery = await eventually(
        lambda: [d for d in deliveries_of(engine, failing) if d.status == "FAILED"] or None
    )
    attempts = attempts_of(engine, delivery[0].id)
    assert [a.attempt for a in attempts] == list(range(1, 9))  # 1 + 7 retries
    assert all(a.status_code == 500 and a.trigger == "scheduled" for a in attempts)
    gaps = [
        (as_utc(b.started_at) - as_utc(a.started_at)).total_seconds()
        for a, b in zip(attempts, attempts[1:], strict=False)
    ]
    for gap, nominal in zip(gaps, SCHEDULE, strict=True):
        # ±20 % jitter; timers fire on whole seconds, so up to one second later.
        assert 0.8 * nominal.total_seconds() <= gap <= 1.2 * nominal.total_seconds() + 1.5
    assert any(abs(g - n.total_seconds()) > 1.5 for g, n in zip(gaps, SCHEDULE, strict=True))

    # Exhaustion published webhook.failed to the other subscribed endpoint, not back.
    await eventually(lambda: receiver.at("ops"))
    failed = receiver.at("ops")[0].json
    assert failed["type"] == "webhook.failed"
    assert failed["data"]["deliveryId"] == str(delivery[0].id)
    assert failed["data"]["endpointId"] == str(failing)
    assert all(r.json["type"] == "order.created" for r in receiver.at("down"))
    assert endpoint_row(engine, ops).is_active


async def test_endpoint_disabled_after_five_days_of_continuous_failure(
    dispatcher: Dispatcher, engine: Engine, keyring: Keyring, receiver: Receiver
) -> None:
    receiver.behave("dying", always(503))
    receiver.behave("flaky", always(500))
    dying = create_endpoint(engine, keyring, receiver.url("dying"), ["invoice.*"])
    ops = create_endpoint(engine, keyring, receiver.url("ops2"), ["endpoint.disabled"])

    for day in range(7):
        publish_event(engine, "invoice.paid", {"day": day})
        await dispatcher.advance(timedelta(hours=22))
        row = endpoint_row(engine, dying)
        if not row.is_active:
            break
    row = endpoint_row(engine, dying)
    assert not row.is_active
    continuous = as_utc(row.disabled_at) - as_utc(row.failing_since)
    assert timedelta(days=5) <= continuous < timedelta(days=6)
    # Its waiting deliveries ended as FAILED; endpoint.disabled went to the ops endpoint.
    assert {d.status for d in deliveries_of(engine, dying)} == {"FAILED"}
    await eventually(lambda: receiver.at("ops2"))
    event = receiver.at("ops2")[0].json
    assert event["type"] == "endpoint.disabled"
    assert event["data"]["endpointId"] == str(dying)
    assert "failing continuously" in event["data"]["reason"]
    assert endpoint_row(engine, ops).is_active


async def test_a_success_resets_the_failure_clock(
    dispatcher: Dispatcher, engine: Engine, keyring: Keyring, receiver: Receiver
) -> None:
    flips = {"ok": False}

    def behaviour(_n: int) -> tuple[int, dict[str, str], str]:
        return (200 if flips["ok"] else 500), {}, "x"

    receiver.behave("wobbly", behaviour)
    wobbly = create_endpoint(engine, keyring, receiver.url("wobbly"), ["ping"])
    for day in range(8):
        flips["ok"] = day == 3  # one good day in the middle
        publish_event(engine, "ping", {"day": day})
        await dispatcher.advance(timedelta(hours=22))
    row = endpoint_row(engine, wobbly)
    # Eight days of mostly failures, but never five in a row: still enabled.
    assert row.is_active
    assert row.failing_since is not None


async def test_retries_survive_continue_as_new(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
) -> None:
    """Held retries are carried into the next run; the history stays bounded."""
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        webhook_allowed_networks="127.0.0.0/8",
    )
    client = time_skipping_env.client
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    activities = WebhookActivities.from_context(context, clock=server_clock)
    queue = task_queue()
    receiver.behave("later", sequence(500, 500, 500, 200))
    endpoint = create_endpoint(engine, keyring, receiver.url("later"), ["can.*"])
    publish_event(engine, "can.test", {})
    async with Worker(
        client,
        task_queue=queue,
        workflows=[WebhookDispatchWorkflow],
        activities=[activities.pump_deliveries, activities.deliver_retries],
    ):
        handle = await client.start_workflow(
            WebhookDispatchWorkflow.run,
            WebhookDispatchInput(
                pump_budget_seconds=5,
                idle_pause_seconds=60,  # a pump a minute: many runs within the retries
                pump_heartbeat_seconds=30,
                max_pumps_per_run=3,
            ),
            id=f"webhook-dispatch-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        for _ in range(12):
            await time_skipping_env.sleep(timedelta(minutes=10))
        [delivery] = deliveries_of(engine, endpoint)
        assert delivery.status == "DELIVERED"
        assert [a.status_code for a in attempts_of(engine, delivery.id)] == [500, 500, 500, 200]
        state = await handle.query(WebhookDispatchWorkflow.state)
        assert state.runs >= 3  # it continued-as-new while retries were held
        await handle.terminate()
    await activities.close()
