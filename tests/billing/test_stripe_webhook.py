"""POST /webhooks/stripe end to end: real API, worker and Temporal dev server.

Verification refuses forged, stale, tampered and unsigned events and writes nothing;
an accepted event is recorded once and signalled once to `subscription-{id}`, however
often (and however concurrently) Stripe delivers it; replay re-feeds it.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from stripe import StripeClient

from api.app import create_app
from relay import search_attributes
from relay.billing.contracts import SubscriptionState, subscription_workflow_id
from relay.inbound.marks import ForwardedMarks
from relay.inbound.repository import T, open_payload
from relay.settings import Settings
from tests.billing.helpers import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    outside_subscription,
    sign,
    signals_received,
    signed,
    stripe_event,
    subscription_event,
)
from tests.conftest import Stack, eventually
from tests.support.api import closed_address
from workflows.clients.billing import subscription_handle, subscription_state


def inbox_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(T)).scalar_one())


async def post(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with stack.http(authenticated=False) as http:
        return await http.post("/webhooks/stripe", content=body, headers=headers)


async def eventually_applied(stack: Stack, sid: str, count: int) -> SubscriptionState:
    """The subscription's workflow once it has re-read Stripe for `count` events."""

    async def applied() -> SubscriptionState | None:
        state = await subscription_state(stack.client, sid)
        return state if state.events_applied >= count else None

    state = await eventually(applied, timeout=30)
    assert isinstance(state, SubscriptionState) and state.events_applied == count
    return state


def assert_invalid_signature(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "INVALID_SIGNATURE"


async def test_forged_stale_tampered_and_missing_signatures_are_refused(
    billing_stack: Stack,
) -> None:
    event = subscription_event("sub_forged")
    body = json.dumps(event).encode()
    forged = {"Stripe-Signature": sign(body, secret="whsec_not_ours")}
    stale = {"Stripe-Signature": sign(body, timestamp=int(time.time()) - 301)}
    future = {"Stripe-Signature": sign(body, timestamp=int(time.time()) + 400)}
    # A valid signature captured from one event, replayed over another body.
    captured = sign(json.dumps(subscription_event("sub_other")).encode())
    tampered = {"Stripe-Signature": captured}
    garbage = {"Stripe-Signature": "t=abc,v1=zz"}
    cases = {
        "forged": forged,
        "stale": stale,
        "future": future,
        "tampered": tampered,
        "garbage": garbage,
        "missing": {},
    }
    for case, headers in cases.items():
        response = await post(billing_stack, body, headers)
        assert response.status_code == 400, case
        assert_invalid_signature(response)
    assert inbox_rows(billing_stack.engine) == 0


async def test_accepted_event_is_recorded_sealed_and_signalled_once(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    sid = outside_subscription(stripe, user_id="user-once")
    event = subscription_event(sid)
    body, headers = signed(event)
    first = await post(billing_stack, body, headers)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["eventId"] == event["id"]
    assert data["duplicate"] is False
    assert data["status"] == "FORWARDED"

    # Stripe delivers it again, signed anew: 200, nothing else.
    again_body, again_headers = signed(event)
    again = await post(billing_stack, again_body, again_headers)
    assert again.status_code == 200
    assert again.json()["data"] == data | {"duplicate": True}

    handle = subscription_handle(billing_stack.client, sid)
    state = await eventually_applied(billing_stack, sid, 1)
    assert state.adopted and state.stripe_subscription_id == sid
    assert state.last_event_id == event["id"]
    assert state.status == "active" and state.entitled
    assert await signals_received(handle) == 1
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.ENTITY_ID) == sid
    assert attributes.get(search_attributes.PROVIDER) == "stripe"

    with billing_stack.engine.connect() as connection:
        row = connection.execute(select(T)).one()
    assert event["id"] not in row.payload and sid not in row.payload  # sealed
    assert open_payload(billing_stack.keyring, row) == event
    assert row.target["workflow_id"] == subscription_workflow_id(sid)


async def test_the_old_secret_still_verifies_during_a_rotation(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    sid = outside_subscription(stripe)
    body, headers = signed(subscription_event(sid), secret=OLD_WEBHOOK_SECRET)
    response = await post(billing_stack, body, headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "FORWARDED"


async def test_concurrent_duplicates_make_one_row_and_one_signal(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    sid = outside_subscription(stripe)
    event = subscription_event(sid, type="customer.subscription.created")
    deliveries = [signed(event) for _ in range(12)]
    responses = await asyncio.gather(*(post(billing_stack, b, h) for b, h in deliveries))
    assert [r.status_code for r in responses] == [200] * 12
    firsts = [r for r in responses if not r.json()["data"]["duplicate"]]
    assert len(firsts) == 1
    assert {r.json()["data"]["id"] for r in responses} == {firsts[0].json()["data"]["id"]}
    assert inbox_rows(billing_stack.engine) == 1
    await eventually_applied(billing_stack, sid, 1)
    assert await signals_received(subscription_handle(billing_stack.client, sid)) == 1


async def test_invoice_events_of_both_api_shapes_reach_their_subscription(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    sid = outside_subscription(stripe)
    legacy = stripe_event("invoice.payment_failed", {"id": "in_1", "subscription": sid})
    basil = stripe_event(
        "invoice.paid",
        {"id": "in_2", "parent": {"subscription_details": {"subscription": sid, "metadata": {}}}},
    )
    for event in (legacy, basil):
        response = await post(billing_stack, *signed(event))
        assert response.json()["data"]["status"] == "FORWARDED"
    await eventually_applied(billing_stack, sid, 2)


async def test_events_no_workflow_takes_are_recorded_and_ignored(billing_stack: Stack) -> None:
    event = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    response = await post(billing_stack, *signed(event))
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "IGNORED"
    async with billing_stack.http() as http:
        listed = (await http.get("/v1/inbound-events", params={"status": "IGNORED"})).json()
        replay = await http.post(f"/v1/inbound-events/{listed['data'][0]['id']}/replay")
    assert [item["eventId"] for item in listed["data"]] == [event["id"]]
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "CONFLICT"


async def test_list_filters_and_pages_then_replay_refeeds_the_workflow(
    billing_stack: Stack, stripe: StripeClient
) -> None:
    sid = outside_subscription(stripe)
    events = [subscription_event(sid) for _ in range(3)]
    events.append(stripe_event("invoice.paid", {"id": "in_9", "subscription": sid}))
    for event in events:
        assert (await post(billing_stack, *signed(event))).status_code == 200
    async with billing_stack.http() as http:
        assert (await http.get("/v1/inbound-events")).status_code == 200
        unauthenticated = await billing_stack.http(authenticated=False).get("/v1/inbound-events")
        assert unauthenticated.status_code == 401
        first = (await http.get("/v1/inbound-events", params={"limit": 2})).json()
        second = (
            await http.get("/v1/inbound-events", params={"limit": 2, "cursor": first["nextCursor"]})
        ).json()
        assert second["nextCursor"] is None
        listed = first["data"] + second["data"]
        assert [item["eventId"] for item in listed] == [e["id"] for e in reversed(events)]
        assert {item["status"] for item in listed} == {"FORWARDED"}
        assert {item["workflowId"] for item in listed} == {subscription_workflow_id(sid)}
        paid = (
            await http.get(
                "/v1/inbound-events", params={"provider": "stripe", "type": "invoice.paid"}
            )
        ).json()["data"]
        assert [item["eventId"] for item in paid] == [events[-1]["id"]]
        none = (await http.get("/v1/inbound-events", params={"provider": "paypal"})).json()
        assert none["data"] == []
        bad = await http.get("/v1/inbound-events", params={"status": "LOST"})
        assert bad.status_code == 422

        replayed = await http.post(f"/v1/inbound-events/{paid[0]['id']}/replay")
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["data"]["status"] == "FORWARDED"
        assert replayed.json()["data"]["replays"] == 1
        missing = await http.post("/v1/inbound-events/00000000-0000-0000-0000-000000000000/replay")
        assert missing.status_code == 404
    # Four events, then the replay: applied again although its id was seen.
    state = await eventually_applied(billing_stack, sid, 5)
    assert state.last_event_id == events[-1]["id"]
    assert await signals_received(subscription_handle(billing_stack.client, sid)) == 5


async def test_an_event_that_cannot_be_recorded_gets_503(
    make_settings: callable,  # type: ignore[valid-type]
) -> None:
    """PostgreSQL that nobody answers: Stripe is told to retry, with the envelope."""
    settings: Settings = make_settings(
        database_url=f"postgresql+psycopg://postgres@{closed_address()}/relay",
        stripe_webhook_secret=WEBHOOK_SECRET,
        temporal_address=closed_address(),
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
        body, headers = signed(subscription_event("sub_down"))
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"


async def test_unconfigured_secret_refuses_every_event(
    make_settings: callable,  # type: ignore[valid-type]
    engine: Engine,
) -> None:
    settings: Settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=closed_address(),
    )
    transport = httpx.ASGITransport(app=create_app(settings, engine=engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
        body, headers = signed(subscription_event("sub_unset"))
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert inbox_rows(engine) == 0


async def test_an_event_whose_forwarded_mark_was_lost_is_forwarded_again_and_applied_once(
    billing_stack: Stack, stripe: StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API answers FORWARDED once Temporal accepted the signal and group-commits the
    mark afterwards; an API that dies before that flush leaves the row PENDING under its
    lease. When the lease runs out the forwarder signals it again, and the subscription's
    workflow, which dedupes by event id, applies it once."""
    monkeypatch.setattr(ForwardedMarks, "add", lambda self, row_id, lease_until: None)
    sid = outside_subscription(stripe, user_id="user-lost-mark")
    event = subscription_event(sid)
    response = await post(billing_stack, *signed(event))
    assert response.status_code == 200 and response.json()["data"]["status"] == "FORWARDED"
    with billing_stack.engine.begin() as connection:
        row = connection.execute(select(T).where(T.c.event_id == event["id"])).one()
        assert row.status == "PENDING" and row.claimed_until is not None
        # The API's 30 s lease runs out (the API is gone).
        connection.execute(
            update(T)
            .where(T.c.id == row.id)
            .values(claimed_until=row.claimed_until - timedelta(minutes=5))
        )

    def status() -> str:
        with billing_stack.engine.connect() as connection:
            return str(connection.execute(select(T.c.status).where(T.c.id == row.id)).scalar_one())

    await eventually(lambda: status() == "FORWARDED", timeout=30)
    handle = subscription_handle(billing_stack.client, sid)

    async def signalled_twice() -> bool:
        return await signals_received(handle) == 2

    await eventually(signalled_twice, timeout=30)
    state = await eventually_applied(billing_stack, sid, 1)
    assert state.events_applied == 1 and state.last_event_id == event["id"]
