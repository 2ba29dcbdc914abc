"""Payments fixtures: billing's (localstripe on a free port, an API and a worker whose
Stripe is that localstripe and whose webhook secrets sign the tests' events), reused;
and a stack whose PayPal is Relay's PayPal sandbox on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.sandbox.paypal import PayPalSandbox, PayPalServer
from relay.settings import Settings
from tests.billing.conftest import billing_stack, localstripe, running_stack, stripe
from tests.conftest import Stack

__all__ = ["billing_stack", "localstripe", "paypal_sandbox", "paypal_stack", "stripe"]


@pytest.fixture
def paypal_sandbox() -> Iterator[PayPalServer]:
    """The PayPal sandbox in a thread on a free port, stopped after the test."""
    with PayPalSandbox(port=0).run_in_thread() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def paypal_stack(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    paypal_sandbox: PayPalServer,
) -> AsyncIterator[Stack]:
    """API and worker with PayPal at the sandbox, whose webhooks go to the stack's
    /webhooks/paypal (signed for the stack's PAYPAL_WEBHOOK_ID)."""
    sandbox = paypal_sandbox.sandbox
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        paypal_client_id=sandbox.client_id,
        paypal_client_secret=sandbox.client_secret,
        paypal_api_base=sandbox.api_base,
        paypal_webhook_id=sandbox.webhook_id,
    ) as stack:
        paypal_sandbox.state.add_webhook(f"{stack.api_url}/webhooks/paypal", sandbox.webhook_id)
        yield stack
