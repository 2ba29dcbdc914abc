"""The Stripe sandbox: localstripe stands in for Stripe with one code path.

Relay's own Stripe client (activities.billing.stripe_client) talks to it through
STRIPE_API_BASE, and localstripe's signed callbacks to /webhooks/stripe verify with the
generated secret and reach the subscription's workflow, as Stripe's would.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from stripe import StripeClient
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.dev import _banner
from relay.inbound.repository import T
from relay.sandbox import stripe as stripe_sandbox
from relay.sandbox.stripe import SANDBOX_API_KEY, StripeSandbox
from relay.settings import Settings
from relay.stripe_api import stripe_client
from tests.billing.conftest import running_stack
from tests.billing.helpers import outside_subscription
from tests.conftest import eventually
from workflows.clients.billing import subscription_state


def test_relay_dev_plans_the_sandbox_only_for_development_without_a_key(
    make_settings: Callable[..., Settings],
) -> None:
    development = make_settings(relay_env="development")
    sandbox = stripe_sandbox.plan(development)
    assert sandbox is not None
    env = sandbox.environment()
    assert env["STRIPE_API_BASE"] == f"http://127.0.0.1:{sandbox.port}"
    assert env["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert env["STRIPE_SECRET_KEY"].startswith("sk_test_")
    banner = _banner(development, True, stripe_sandbox.describe(development, sandbox))
    assert f"Stripe       sandboxed (localstripe at {sandbox.api_base})" in banner

    with_key = make_settings(relay_env="development", stripe_secret_key="sk_live_real")
    assert stripe_sandbox.plan(with_key) is None
    assert stripe_sandbox.describe(with_key, None).startswith("real")
    assert stripe_sandbox.plan(make_settings(relay_env="development", sandbox="off")) is None
    assert stripe_sandbox.plan(make_settings(relay_env="test")) is None


@pytest.mark.e2e
async def test_localstripe_events_are_verified_recorded_and_forwarded(
    localstripe: StripeSandbox,
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> None:
    async with running_stack(
        temporal_env.client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key=localstripe.api_key,
        stripe_api_base=localstripe.api_base,
        # The sandbox's generated secret, first; the fixture's own still verifies.
        stripe_webhook_secret=localstripe.webhook_secret,
    ) as stack:
        localstripe.register_webhook(f"{stack.api_url}/webhooks/stripe")
        stripe = stripe_client(stack.settings)
        assert stripe is not None
        sid = outside_subscription(stripe, user_id="user-1")

        def forwarded() -> list[str]:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(T.c.type).where(T.c.object_id == sid, T.c.status == "FORWARDED")
                )
                return [row.type for row in rows]

        # localstripe sends its events concurrently: wait for this one, not the first.
        await eventually(lambda: "customer.subscription.created" in forwarded(), timeout=30)

        async def adopted() -> dict | None:  # type: ignore[type-arg]
            async with stack.http() as http:
                response = await http.get(f"/v1/subscriptions/{sid}")
            return response.json()["data"] if response.status_code == 200 else None

        data = await eventually(adopted, timeout=30)
        # Adopted: Relay's id is Stripe's; the user is the customer's metadata.userId.
        assert data == data | {  # type: ignore[operator]
            "id": sid,
            "userId": "user-1",
            "stripeSubscriptionId": sid,
            "status": "active",
            "entitled": True,
            "priceId": "pro-monthly",
        }

        async def applied() -> bool:
            state = await subscription_state(stack.client, sid)
            return state.adopted and state.events_applied >= 1

        await eventually(applied, timeout=30)


@pytest.mark.e2e
@pytest.mark.slow
async def test_relay_dev_runs_localstripe_and_its_events_reach_relay(
    tmp_path: Path, keyring_spec: str
) -> None:
    """`relay dev` with no Stripe key: localstripe runs, the banner says so, the worker and
    the API use it, and its signed callbacks are verified, recorded and forwarded."""
    from tests.ops.test_dev_stack import DevStack

    stack = DevStack(tmp_path, keyring_spec)
    stack.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await stack.wait_ready(http)
            found = re.search(r"Stripe\s+sandboxed \(localstripe at (http://127\.0\.0\.1:\d+)\)",
                              stack.log())  # fmt: skip
            assert found, stack.log()
            api_base = found.group(1)
            key = stack.relay("keys", "create", "sandbox").stdout.strip().splitlines()[-1]
            auth = {"Authorization": f"Bearer {key}"}
            stripe = StripeClient(SANDBOX_API_KEY, base_addresses={"api": api_base})
            sid = outside_subscription(stripe, user_id="dev-user")

            async def forwarded() -> bool:
                response = await http.get(
                    f"{stack.api}/v1/inbound-events",
                    params={"provider": "stripe", "type": "customer.subscription.created"},
                    headers=auth,
                )
                return any(
                    item["objectId"] == sid and item["status"] == "FORWARDED"
                    for item in response.json()["data"]
                )

            await eventually(forwarded, timeout=60)

            async def adopted() -> dict | None:  # type: ignore[type-arg]
                response = await http.get(f"{stack.api}/v1/subscriptions/{sid}", headers=auth)
                return response.json()["data"] if response.status_code == 200 else None

            data = await eventually(adopted, timeout=60)
            assert data["userId"] == "dev-user" and data["status"] == "active"  # type: ignore[index]
        assert stack.stop() == 0
        port = int(api_base.rsplit(":", 1)[1])
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0  # localstripe stopped with it
    finally:
        if stack.process is not None and stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()
