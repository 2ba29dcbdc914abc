"""The webhook API end to end: API → database → dispatcher → a real receiver on loopback."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import Stack, eventually
from tests.webhooks.conftest import Receiver, always, sequence


async def create(http, receiver: Receiver, name: str, events: list[str], **extra) -> dict:
    response = await http.post(
        "/v1/webhooks", json={"url": receiver.url(name), "events": events, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


# --- CRUD, validation, envelopes ---------------------------------------------------------


async def test_create_read_list_update_delete(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        created = await create(
            http,
            receiver,
            "crud",
            ["order.created", "order.*"],
            description="orders",
            headers={"X-Team": "billing", "Authorization": "Bearer receiver-token"},
            rateLimit=50,
            metadata={"owner": "ops"},
        )
        assert created["secret"].startswith("whsec_")
        assert created["isActive"] is True
        assert created["rateLimit"] == 50
        assert created["headers"] == {"X-Team": "billing", "Authorization": "********"}
        webhook_id = created["id"]

        fetched = (await http.get(f"/v1/webhooks/{webhook_id}")).json()
        assert fetched["success"] is True
        assert "secret" not in fetched["data"]
        assert fetched["data"]["metadata"] == {"owner": "ops"}

        changed = await http.patch(
            f"/v1/webhooks/{webhook_id}", json={"events": ["*"], "description": "all"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["data"]["events"] == ["*"]

        listed = (await http.get("/v1/webhooks", params={"isActive": "true"})).json()
        assert webhook_id in [w["id"] for w in listed["data"]]

        deleted = await http.delete(f"/v1/webhooks/{webhook_id}")
        assert deleted.json() == {"success": True, "data": {"id": webhook_id, "deleted": True}}
        missing = await http.get(f"/v1/webhooks/{webhook_id}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"


async def test_pagination_with_cursor(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        ids = [(await create(http, receiver, f"p{i}", ["page.test"]))["id"] for i in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            body = (await http.get("/v1/webhooks", params=params)).json()
            seen += [w["id"] for w in body["data"]]
            cursor = body["nextCursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))  # newest first, each once
        bad = await http.get("/v1/webhooks", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["order..created"]}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["a"], "rateLimit": 0}, "rateLimit"),
        (
            {"url": "http://127.0.0.1/x", "events": ["a"], "headers": {"webhook-id": "x"}},
            "headers.webhook-id",
        ),
        (
            {"url": "http://127.0.0.1/x", "events": ["a"], "headers": {"Content-Type": "x"}},
            "headers.Content-Type",
        ),
        (
            {"url": "http://127.0.0.1/x", "events": ["a"], "headers": {"X-A": "a\r\nb"}},
            "headers.X-A",
        ),
        ({"events": ["a"]}, "url"),
    ],
)
async def test_invalid_endpoints_are_422_and_write_nothing(
    stack: Stack, body: dict, field: str
) -> None:
    async with stack.http() as http:
        before = len((await http.get("/v1/webhooks", params={"limit": 200})).json()["data"])
        response = await http.post("/v1/webhooks", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert field in [d["field"] for d in error["details"]]
        after = len((await http.get("/v1/webhooks", params={"limit": 200})).json()["data"])
        assert after == before


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://user:pass@127.0.0.1/hook",
        "http://[::1]:80/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
    ],
)
async def test_unsafe_urls_are_invalid_webhook_url(stack: Stack, url: str) -> None:
    async with stack.http() as http:
        response = await http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_WEBHOOK_URL"


async def test_unknown_ids_are_404_with_codes(stack: Stack) -> None:
    async with stack.http() as http:
        unknown = uuid.uuid4()
        for method, path, code in [
            ("GET", f"/v1/webhooks/{unknown}", "WEBHOOK_NOT_FOUND"),
            ("PATCH", f"/v1/webhooks/{unknown}", "WEBHOOK_NOT_FOUND"),
            ("DELETE", f"/v1/webhooks/{unknown}", "WEBHOOK_NOT_FOUND"),
            ("POST", f"/v1/webhooks/{unknown}/rotate-secret", "WEBHOOK_NOT_FOUND"),
            ("GET", f"/v1/webhooks/{unknown}/deliveries", "WEBHOOK_NOT_FOUND"),
            ("GET", f"/v1/deliveries/{unknown}", "DELIVERY_NOT_FOUND"),
            ("POST", f"/v1/deliveries/{unknown}/retry", "DELIVERY_NOT_FOUND"),
        ]:
            response = await http.request(method, path, json={} if method == "PATCH" else None)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == code


async def test_routes_need_an_api_key(stack: Stack) -> None:
    async with stack.http(authenticated=False) as http:
        for method, path in [("GET", "/v1/webhooks"), ("POST", "/v1/events")]:
            response = await http.request(method, path)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "UNAUTHORIZED"


# --- events ------------------------------------------------------------------------------


async def test_event_validation_and_payload_limit(stack: Stack) -> None:
    async with stack.http() as http:
        for body in [
            {"type": "order.created", "data": [1, 2]},
            {"type": "order created", "data": {}},
            {"type": "order.created"},
        ]:
            response = await http.post("/v1/events", json=body)
            assert response.status_code == 422, body
            assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        limit = stack.settings.webhook_max_payload_bytes
        huge = {"type": "order.created", "data": {"blob": "x" * limit}}
        response = await http.post("/v1/events", json=huge)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_fan_out_signed_to_every_subscribed_endpoint(
    stack: Stack, receiver: Receiver
) -> None:
    async with stack.http() as http:
        endpoints = {
            name: await create(http, receiver, name, events)
            for name, events in [
                ("exact", ["shipment.sent"]),
                ("prefix", ["shipment.*"]),
                ("all", ["*"]),
                ("other", ["invoice.*"]),
            ]
        }
        await create(http, receiver, "custom", ["shipment.sent"], headers={"X-Team": "ops"})
        published = []
        for n in range(10):
            response = await http.post(
                "/v1/events", json={"type": "shipment.sent", "data": {"n": n}}
            )
            assert response.status_code == 202
            assert response.json()["data"]["endpoints"] == 4
            published.append(response.json()["data"]["eventId"])

        await eventually(
            lambda: all(len(receiver.at(n)) >= 10 for n in ("exact", "prefix", "all", "custom"))
        )
        assert receiver.at("other") == []
        for name in ("exact", "prefix", "all"):
            secret = endpoints[name]["secret"]
            received = receiver.at(name)
            assert len(receiver.ids(name)) == 10  # one delivery each, distinct webhook-ids
            for request in received:
                payload = Webhook(secret).verify(request.body, request.headers)
                assert payload["type"] == "shipment.sent"
                assert set(payload) == {"type", "timestamp", "data"}
                assert request.headers["content-type"] == "application/json"
                assert request.headers["user-agent"].startswith("Relay-Webhooks/")
                assert request.headers["webhook-id"].startswith("msg_")
            with pytest.raises(WebhookVerificationError):
                Webhook(endpoints["other"]["secret"]).verify(received[0].body, received[0].headers)
        assert all(r.headers["x-team"] == "ops" for r in receiver.at("custom"))
        assert sorted(r.json["data"]["n"] for r in receiver.at("all")) == list(range(10))

        # The record: every delivery DELIVERED with one scheduled attempt.
        hook = endpoints["exact"]["id"]
        page = (await http.get(f"/v1/webhooks/{hook}/deliveries")).json()["data"]
        assert len(page) == 10 and {d["status"] for d in page} == {"DELIVERED"}
        detail = (await http.get(f"/v1/deliveries/{page[0]['id']}")).json()["data"]
        assert detail["messageId"] in receiver.ids("exact")
        [attempt] = detail["attempts"]
        assert attempt["attempt"] == 1 and attempt["trigger"] == "scheduled"
        assert attempt["statusCode"] == 200 and attempt["responseBody"] == "ok"
        assert attempt["durationMs"] >= 0 and attempt["startedAt"]


async def test_idempotency_key_returns_the_first_event(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        await create(http, receiver, "idem", ["user.created"])
        body = {"type": "user.created", "data": {"id": 1}, "idempotencyKey": "user-1-created"}
        first = (await http.post("/v1/events", json=body)).json()["data"]
        again = await http.post("/v1/events", json=body | {"data": {"id": 2}})
        assert again.status_code == 202
        second = again.json()["data"]
        assert second["eventId"] == first["eventId"]
        assert second["duplicate"] is True and first["duplicate"] is False
        await eventually(lambda: receiver.at("idem"))
        await asyncio.sleep(1.0)
        assert len(receiver.at("idem")) == 1
        assert receiver.at("idem")[0].json["data"] == {"id": 1}


async def test_concurrent_publishes_with_one_key_make_one_event(
    stack: Stack, receiver: Receiver
) -> None:
    async with stack.http() as http:
        await create(http, receiver, "race", ["race.test"])
        body = {"type": "race.test", "data": {}, "idempotencyKey": f"k-{uuid.uuid4()}"}
        responses = await asyncio.gather(*(http.post("/v1/events", json=body) for _ in range(8)))
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["data"]["eventId"] for r in responses}) == 1
        await eventually(lambda: receiver.at("race"))
        await asyncio.sleep(1.0)
        assert len(receiver.at("race")) == 1


# --- rotation ----------------------------------------------------------------------------


async def test_rotation_signs_with_both_secrets(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        created = await create(http, receiver, "rot", ["rot.test"])
        old_secret = created["secret"]
        rotated = await http.post(f"/v1/webhooks/{created['id']}/rotate-secret")
        assert rotated.status_code == 200
        data = rotated.json()["data"]
        new_secret = data["secret"]
        assert new_secret != old_secret and new_secret.startswith("whsec_")
        expires = datetime.fromisoformat(data["previousSecretExpiresAt"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)

        await http.post("/v1/events", json={"type": "rot.test", "data": {}})
        await eventually(lambda: receiver.at("rot"))
        request = receiver.at("rot")[0]
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        # A receiver holding either secret verifies it, unmodified.
        Webhook(old_secret).verify(request.body, request.headers)
        Webhook(new_secret).verify(request.body, request.headers)


# --- failures through the stack ----------------------------------------------------------


async def test_gone_disables_at_once_and_publishes_endpoint_disabled(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.behave("gone", always(410))
    async with stack.http() as http:
        gone = await create(http, receiver, "gone", ["thing.*"])
        await create(http, receiver, "watch", ["endpoint.disabled"])
        await http.post("/v1/events", json={"type": "thing.happened", "data": {}})

        async def disabled() -> dict | None:
            data = (await http.get(f"/v1/webhooks/{gone['id']}")).json()["data"]
            return data if not data["isActive"] else None

        data = await eventually(disabled)
        assert "410" in data["disabledReason"]
        await eventually(lambda: receiver.at("watch"))
        event = receiver.at("watch")[0].json
        assert event["type"] == "endpoint.disabled"
        assert event["data"]["endpointId"] == gone["id"]
        assert len(receiver.at("gone")) == 1  # never retried, never sent its own disable event
        deliveries = (await http.get(f"/v1/webhooks/{gone['id']}/deliveries")).json()["data"]
        assert [d["status"] for d in deliveries] == ["FAILED"]

        # Re-enabling clears the failure clock.
        receiver.behave("gone", always(200))
        enabled = await http.patch(f"/v1/webhooks/{gone['id']}", json={"isActive": True})
        body = enabled.json()["data"]
        assert body["isActive"] is True and body["failingSince"] is None
        assert body["disabledReason"] is None

        # Recover re-delivers the failed delivery.
        recovered = await http.post(
            f"/v1/webhooks/{gone['id']}/recover",
            json={"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()},
        )
        assert recovered.status_code == 202
        assert recovered.json()["data"]["requeued"] == 1
        await eventually(lambda: len(receiver.at("gone")) == 2)

        async def delivered() -> bool:
            items = (await http.get(f"/v1/webhooks/{gone['id']}/deliveries")).json()["data"]
            return [d["status"] for d in items] == ["DELIVERED"]

        await eventually(delivered)


async def test_retry_after_is_honoured_and_redirects_are_failures(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.behave("busy", lambda n: (429, {"Retry-After": "120"}, "slow down"))
    receiver.behave("moved", always(301))
    async with stack.http() as http:
        busy = await create(http, receiver, "busy", ["load.test"])
        moved = await create(http, receiver, "moved", ["load.test"])
        await http.post("/v1/events", json={"type": "load.test", "data": {}})

        async def retrying(hook: str) -> dict | None:
            items = (await http.get(f"/v1/webhooks/{hook}/deliveries")).json()["data"]
            return items[0] if items and items[0]["status"] == "RETRYING" else None

        busy_delivery = await eventually(lambda: retrying(busy["id"]))
        detail = (await http.get(f"/v1/deliveries/{busy_delivery['id']}")).json()["data"]
        started = datetime.fromisoformat(detail["attempts"][0]["startedAt"])
        wait = datetime.fromisoformat(detail["nextAttemptAt"]) - started
        # The schedule says 5 s ± 20 %; Retry-After asked for 120 s.
        assert wait >= timedelta(seconds=119)
        assert detail["attempts"][0]["statusCode"] == 429
        assert detail["attempts"][0]["responseBody"] == "slow down"

        moved_delivery = await eventually(lambda: retrying(moved["id"]))
        assert moved_delivery["lastStatusCode"] == 301
        assert receiver.at("redirected-moved") == []


async def test_manual_retry_runs_one_attempt_now(stack: Stack, receiver: Receiver) -> None:
    receiver.behave("manual", sequence(500, 200))
    async with stack.http() as http:
        hook = await create(http, receiver, "manual", ["manual.test"])
        await http.post("/v1/events", json={"type": "manual.test", "data": {}})

        async def first() -> dict | None:
            items = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
            return items[0] if items and items[0]["status"] == "RETRYING" else None

        delivery = await eventually(first)
        response = await http.post(f"/v1/deliveries/{delivery['id']}/retry")
        assert response.status_code == 200, response.text
        attempt = response.json()["data"]
        assert attempt["trigger"] == "manual" and attempt["statusCode"] == 200
        assert attempt["attempt"] == 2 and attempt["status"] == "DELIVERED"
        detail = (await http.get(f"/v1/deliveries/{delivery['id']}")).json()["data"]
        assert [(a["attempt"], a["trigger"]) for a in detail["attempts"]] == [
            (1, "scheduled"),
            (2, "manual"),
        ]
        assert detail["status"] == "DELIVERED"
        # The same webhook-id on both attempts: receivers dedupe on it.
        assert len(receiver.ids("manual")) == 1


async def test_delivery_filters(stack: Stack, receiver: Receiver) -> None:
    receiver.behave("mixed", lambda n: (200 if n % 2 == 0 else 500, {}, ""))
    async with stack.http() as http:
        hook = await create(http, receiver, "mixed", ["mix"])
        start = datetime.now(UTC)
        for n in range(4):
            await http.post("/v1/events", json={"type": "mix", "data": {"n": n}})
        await eventually(lambda: len(receiver.at("mixed")) >= 4)

        async def listed(**params) -> list[dict]:
            return (await http.get(f"/v1/webhooks/{hook['id']}/deliveries", params=params)).json()[
                "data"
            ]

        await eventually(lambda: _settled(listed))
        delivered = await listed(status="DELIVERED")
        retrying = await listed(status="RETRYING")
        assert len(delivered) + len(retrying) == 4 and delivered and retrying
        assert await listed(until=start.isoformat()) == []
        assert len(await listed(since=start.isoformat())) == 4


async def _settled(listed) -> bool:
    return all(d["status"] != "PENDING" for d in await listed())


async def test_rate_limit_caps_attempts_per_second(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        await create(http, receiver, "limited", ["rate.test"], rateLimit=5)
        await create(http, receiver, "free", ["rate.test"])
        for n in range(20):
            await http.post("/v1/events", json={"type": "rate.test", "data": {"n": n}})
        await eventually(lambda: len(receiver.at("limited")) >= 20, timeout=60)
    times = sorted(r.at for r in receiver.at("limited"))
    # At most 5 attempts per second (calendar seconds): 20 need 4 distinct seconds.
    assert times[-1] - times[0] > 2.0
    assert len(receiver.at("free")) == 20  # other endpoints are not held back


async def test_secrets_and_header_values_are_sealed_at_rest(
    stack: Stack, receiver: Receiver
) -> None:
    async with stack.http() as http:
        created = await create(
            http, receiver, "sealed", ["seal.test"], headers={"Authorization": "Bearer rcv-123"}
        )
        await http.post(f"/v1/webhooks/{created['id']}/rotate-secret")
    from sqlalchemy import text

    with stack.engine.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM webhook_endpoints WHERE url = :url"), {"url": created["url"]}
        ).one()
    stored = " ".join(str(value) for value in row)
    assert created["secret"] not in stored and "whsec_" not in stored
    assert "rcv-123" not in stored


async def test_deleting_an_endpoint_fails_its_waiting_deliveries(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.behave("doomed", always(500))
    async with stack.http() as http:
        hook = await create(http, receiver, "doomed", ["doom.test"])
        await http.post("/v1/events", json={"type": "doom.test", "data": {}})

        async def retrying() -> dict | None:
            items = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
            return items[0] if items and items[0]["status"] == "RETRYING" else None

        delivery = await eventually(retrying)
        await http.delete(f"/v1/webhooks/{hook['id']}")
        detail = (await http.get(f"/v1/deliveries/{delivery['id']}")).json()["data"]
        assert detail["status"] == "FAILED"
        retry = await http.post(f"/v1/deliveries/{delivery['id']}/retry")
        assert retry.status_code == 409 and retry.json()["error"]["code"] == "CONFLICT"
        published = (await http.post("/v1/events", json={"type": "doom.test", "data": {}})).json()
        assert published["data"]["endpoints"] == 0


async def test_dispatcher_state_is_visible_as_a_run(stack: Stack, receiver: Receiver) -> None:
    from relay.webhooks.contracts import dispatcher_workflow_id

    async with stack.http() as http:
        await create(http, receiver, "seen", ["seen.test"])
        await http.post("/v1/events", json={"type": "seen.test", "data": {}})
        await eventually(lambda: receiver.at("seen"))
        workflow_id = dispatcher_workflow_id(stack.settings.temporal_task_queue)
        run = (await http.get(f"/v1/runs/{workflow_id}")).json()["data"]
    assert run["workflowType"] == "WebhookDispatchWorkflow"
    assert run["status"] == "Running"
    assert {"pumps", "delivered", "heldRetries", "nextRetryAt"} <= set(run["state"])


async def test_sweep_finds_a_retry_whose_timer_was_lost(stack: Stack, receiver: Receiver) -> None:
    """A crash between recording a failure and handing it to a timer strands nothing."""
    from sqlalchemy import update

    from relay.db import utcnow
    from relay.webhooks.publish import deliveries_table, publish_in

    async with stack.http() as http:
        await create(http, receiver, "orphan", ["orphan.test"])
    grace = stack.settings.webhook_sweep_grace
    with stack.engine.begin() as connection:
        now = utcnow()
        published = publish_in(
            connection,
            "orphan.test",
            {},
            idempotency_key=None,
            exclude_endpoint_id=None,
            now=now,
        )
        # As if attempt 1 failed and was recorded, and the worker died before the
        # hand-over: RETRYING, held by a timer nobody has, well overdue.
        connection.execute(
            update(deliveries_table)
            .where(deliveries_table.c.event_id == published.event_id)
            .values(
                status="RETRYING",
                attempts=1,
                scheduled_attempts=1,
                timer_held=True,
                next_attempt_at=now - 2 * grace,
            )
        )
    await eventually(lambda: receiver.at("orphan"))
    assert receiver.at("orphan")[0].json["type"] == "orphan.test"
