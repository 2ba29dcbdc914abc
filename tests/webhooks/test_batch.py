"""POST /v1/events/batch: many events in one request, each with its own result."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.conftest import Stack, eventually
from tests.webhooks.conftest import Receiver
from tests.webhooks.helpers import D


async def _endpoint(stack: Stack, receiver: Receiver, name: str, events: list[str]) -> str:
    async with stack.http() as http:
        response = await http.post(
            "/v1/webhooks", json={"url": receiver.url(name), "events": events}
        )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def test_each_event_is_stored_or_refused_on_its_own(stack: Stack, receiver: Receiver) -> None:
    await _endpoint(stack, receiver, "orders", ["order.*"])
    await _endpoint(stack, receiver, "all", ["*"])
    limit = stack.settings.webhook_max_payload_bytes
    events = [
        {"type": "order.created", "data": {"n": 0}, "idempotencyKey": "batch-order-0"},
        {"type": "order created", "data": {}},  # refused: the type
        {"type": "order.paid", "data": [1]},  # refused: data is not an object
        {"type": "order.paid", "data": {"blob": "x" * limit}},  # refused: too large
        {"type": "order.created", "data": {"n": 1}, "idempotencyKey": "batch-order-0"},
        {"type": "invoice.sent", "data": {"n": 2}},
        {"data": {}},  # refused: no type
    ]
    async with stack.http() as http:
        response = await http.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    answer = response.json()["data"]
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert (answer["accepted"], answer["refused"]) == (3, 4)
    refused = {r["index"]: r["error"] for r in results if r["error"]}
    assert refused[1]["code"] == refused[2]["code"] == refused[6]["code"] == "VALIDATION_ERROR"
    assert refused[1]["details"][0]["field"] == "type"
    assert refused[2]["details"][0]["field"] == "data"
    assert refused[6]["details"][0]["field"] == "type"
    assert refused[3]["code"] == "PAYLOAD_TOO_LARGE"
    first, repeat, invoice = results[0], results[4], results[5]
    assert first["endpoints"] == 2 and first["duplicate"] is False
    # The same key later in the batch lands on its first event, as two requests would.
    assert repeat["eventId"] == first["eventId"] and repeat["duplicate"] is True
    assert invoice["endpoints"] == 1 and invoice["duplicate"] is False

    await eventually(lambda: len(receiver.at("all")) == 2 and len(receiver.at("orders")) == 1)
    assert sorted(r.json["data"]["n"] for r in receiver.at("all")) == [0, 2]
    with stack.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(D)).scalar_one() == 3

    # A later batch with a key the first one stored is a duplicate, nothing delivered again.
    async with stack.http() as http:
        again = await http.post(
            "/v1/events/batch",
            json={
                "events": [{"type": "order.created", "data": {}, "idempotencyKey": "batch-order-0"}]
            },
        )
    assert again.json()["data"]["results"][0]["eventId"] == first["eventId"]
    assert again.json()["data"]["results"][0]["duplicate"] is True


async def test_a_batch_of_a_thousand_is_delivered(stack: Stack, receiver: Receiver) -> None:
    await _endpoint(stack, receiver, "bulk", ["bulk.*"])
    events = [{"type": "bulk.item", "data": {"n": n}} for n in range(1000)]
    async with stack.http() as http:
        response = await http.post("/v1/events/batch", json={"events": events})
        assert response.status_code == 202, response.text
        assert response.json()["data"]["accepted"] == 1000
        too_many = await http.post("/v1/events/batch", json={"events": [*events, events[0]]})
        assert too_many.status_code == 422
        assert too_many.json()["error"]["details"][0]["field"] == "events"
        empty = await http.post("/v1/events/batch", json={"events": []})
        assert empty.status_code == 422
    await eventually(lambda: len(receiver.ids("bulk")) == 1000, timeout=120)
    assert sorted(r.json["data"]["n"] for r in receiver.at("bulk")) == list(range(1000))
