"""Temporal stopped while Stripe's events arrive: each is accepted (2xx) and kept, then
forwarded to its workflow by the inbound forwarder once Temporal is back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.inbound.repository import T
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from relay.stripe_api import stripe_client
from tests.billing.conftest import running_stack
from tests.billing.helpers import (
    outside_subscription,
    signals_received,
    signed,
    subscription_event,
)
from tests.conftest import eventually
from tests.support.api import DevServer
from workflows.clients.billing import subscription_handle, subscription_state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return {row.event_id: row.status for row in connection.execute(select(T))}


async def test_events_arriving_while_temporal_is_down_are_forwarded_when_it_is_back(
    dev_server: DevServer,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    localstripe: StripeSandbox,
) -> None:
    client = await dev_server.connect(keyring)
    async with running_stack(
        client,
        engine,
        keyring,
        make_settings,
        stripe_secret_key=localstripe.api_key,
        stripe_api_base=localstripe.api_base,
    ) as stack:
        stripe = stripe_client(stack.settings)
        sub_a, sub_b = outside_subscription(stripe), outside_subscription(stripe)
        async with stack.http(authenticated=False) as http:
            before = subscription_event(sub_a, type="customer.subscription.created")
            response = await http.post("/webhooks/stripe", content=b"", headers={})
            assert response.status_code == 400
            body, headers = signed(before)
            response = await http.post("/webhooks/stripe", content=body, headers=headers)
            assert response.json()["data"]["status"] == "FORWARDED"

            dev_server.stop()
            during = [
                subscription_event(sub_a),
                subscription_event(sub_b, type="customer.subscription.created"),
                subscription_event(sub_b),
            ]
            for event in [*during, during[1]]:  # the last one is Stripe's duplicate
                body, headers = signed(event)
                response = await http.post("/webhooks/stripe", content=body, headers=headers)
                assert response.status_code == 200, response.text
                assert response.json()["data"]["status"] == "PENDING"
            assert set(statuses(engine).values()) == {"FORWARDED", "PENDING"}
            assert len(statuses(engine)) == 4

            dev_server.start()
            await eventually(
                lambda: set(statuses(engine).values()) == {"FORWARDED"}, timeout=90, interval=0.5
            )

        async def applied(sid: str) -> bool:
            return (await subscription_state(client, sid)).events_applied >= 2

        await eventually(lambda: applied(sub_a), timeout=30)
        await eventually(lambda: applied(sub_b), timeout=30)
        state_a = await subscription_state(client, sub_a)
        state_b = await subscription_state(client, sub_b)
        assert state_b.events_applied == 2
        assert state_a.events_applied == 2 and state_a.last_event_id == during[0]["id"]
        assert state_a.status == "active" and state_a.entitled
        assert await signals_received(subscription_handle(client, sub_b)) == 2
        with engine.connect() as connection:
            waited = connection.execute(
                select(T.c.attempts, T.c.last_error).where(T.c.event_id == during[2]["id"])
            ).one()
        assert waited.attempts >= 2  # refused while down, accepted once back
