"""Billing fixtures: a stack whose API and worker know the Stripe webhook secrets."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
import stripe as stripe_sdk
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.api_keys import create_key
from relay.billing.contracts import reconcile_schedule_id
from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from relay.stripe_api import stripe_client
from relay.worker_context import WorkerContext
from tests.billing.helpers import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET
from tests.conftest import ServerThread, Stack, task_queue, terminate_running
from worker import build_worker, start_long_lived_workflows


@asynccontextmanager
async def running_stack(
    client: Client,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    **overrides: object,
) -> AsyncIterator[Stack]:
    """An API (uvicorn on loopback) and a worker on a task queue of their own."""
    values: dict[str, object] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "temporal_address": client.service_client.config.target_host,
        "temporal_task_queue": task_queue(),
        "stripe_webhook_secret": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        "inbound_poll_interval": "100ms",
        # The Schedule's 10m interval is aligned to the clock: a test spanning :00, :10…
        # would see reconciliation feed localstripe's own events. Tests trigger it.
        "stripe_reconcile_interval": "7d",
    }
    settings = make_settings(**(values | overrides))
    _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}")
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    worker = build_worker(context)
    app = create_app(settings, engine=engine, keyring=keyring)
    async with worker:
        await start_long_lived_workflows(context)
        with ServerThread(app) as server:
            yield Stack(settings, engine, keyring, client, server.url, raw_key, context)
        await terminate_running(client, settings.temporal_task_queue)
        # The reconciliation Schedule would keep starting runs on this dead task queue.
        with contextlib.suppress(RPCError):
            await client.get_schedule_handle(
                reconcile_schedule_id(settings.temporal_task_queue)
            ).delete()
        for close in context.closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


@pytest_asyncio.fixture(loop_scope="session")
async def billing_stack(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    localstripe: StripeSandbox,
) -> AsyncIterator[Stack]:
    """API and worker with Stripe at localstripe. localstripe sends no webhooks unless a
    test registers Relay's route with it; the tests send the events they need, signed."""
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key=localstripe.api_key,
        stripe_api_base=localstripe.api_base,
        # The tests' own secrets sign synthetic events; localstripe's, its callbacks.
        stripe_webhook_secret=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET},{localstripe.webhook_secret}",
    ) as stack:
        yield stack


@pytest.fixture
def stripe(billing_stack: Stack) -> stripe_sdk.StripeClient:
    """Relay's own Stripe client, at localstripe."""
    client = stripe_client(billing_stack.settings)
    assert client is not None
    return client


@pytest.fixture
def localstripe() -> Iterator[StripeSandbox]:
    """localstripe on a free port, empty (`--from-scratch`), stopped after the test."""
    sandbox = StripeSandbox()
    process = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready()
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
