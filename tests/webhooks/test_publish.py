"""publish_event / publish_many against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import RelayError
from relay.webhooks.patterns import matches
from relay.webhooks.publish import (
    EventRequest,
    events_table,
    publish_event,
    publish_many,
)
from tests.webhooks.helpers import D, create_endpoint, deliveries_of


def count(engine: Engine, table) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_patterns() -> None:
    assert matches("*", "anything.at.all")
    assert matches("order.*", "order.created") and matches("order.*", "order.item.added")
    assert not matches("order.*", "orders.created") and not matches("order.*", "order")
    assert matches("order.created", "order.created") and not matches("order.created", "order.paid")


def test_event_and_deliveries_in_one_transaction(engine: Engine, keyring: Keyring) -> None:
    a = create_endpoint(engine, keyring, "https://a.example/h", ["order.*"])
    b = create_endpoint(engine, keyring, "https://b.example/h", ["*"])
    off = create_endpoint(engine, keyring, "https://c.example/h", ["*"], is_active=False)
    create_endpoint(engine, keyring, "https://d.example/h", ["invoice.*"])
    result = publish_event(engine, "order.created", {"id": 1}, exclude_endpoint_id=b)
    assert result.endpoints == 1 and not result.duplicate
    assert [d.status for d in deliveries_of(engine, a)] == ["PENDING"]
    assert deliveries_of(engine, b) == [] and deliveries_of(engine, off) == []


def test_invalid_events_write_nothing(engine: Engine) -> None:
    for event_type, data in [("bad type", {}), ("ok.type", [1]), ("", {}), ("a..b", {})]:
        with pytest.raises(RelayError) as raised:
            publish_event(engine, event_type, data)  # type: ignore[arg-type]
        assert raised.value.code == "VALIDATION_ERROR"
    assert count(engine, events_table) == 0


def test_idempotency_key_window_is_24_hours(engine: Engine, keyring: Keyring) -> None:
    endpoint = create_endpoint(engine, keyring, "https://a.example/h", ["*"])
    first = publish_event(engine, "user.created", {"n": 1}, idempotency_key="k1")
    again = publish_event(engine, "user.created", {"n": 2}, idempotency_key="k1")
    assert again.event_id == first.event_id and again.duplicate
    assert len(deliveries_of(engine, endpoint)) == 1
    with engine.begin() as connection:
        connection.execute(
            update(events_table)
            .where(events_table.c.id == first.event_id)
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    later = publish_event(engine, "user.created", {"n": 3}, idempotency_key="k1")
    assert later.event_id != first.event_id and not later.duplicate
    assert len(deliveries_of(engine, endpoint)) == 2


def test_publish_many_matches_publish_event(engine: Engine, keyring: Keyring) -> None:
    endpoint = create_endpoint(engine, keyring, "https://a.example/h", ["batch.*"])
    publish_event(engine, "batch.one", {}, idempotency_key="old")
    results = publish_many(
        engine,
        [
            EventRequest("batch.one", {"n": 1}, "new"),
            EventRequest("batch.two", {"n": 2}, "new"),  # same key in the batch
            EventRequest("batch.three", {"n": 3}, "old"),  # key already used
            EventRequest("other.type", {"n": 4}),
        ],
    )
    assert [r.duplicate for r in results] == [False, True, True, False]
    assert results[1].event_id == results[0].event_id
    assert [r.endpoints for r in results] == [1, 1, 1, 0]
    assert len(deliveries_of(engine, endpoint)) == 2  # "old" and "new"
    assert count(engine, D) == 2
