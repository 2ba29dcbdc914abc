"""The inbox on SQLite and PostgreSQL: one row per (provider, event id) however many
deliveries race, sealed payloads, and leases that keep two forwarders off one event."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.db import utcnow
from relay.inbound import repository
from relay.inbound.contracts import ForwardTarget, InboundStatus
from relay.inbound.repository import T

TARGET = ForwardTarget("SomeWorkflow", "some-1", "some_signal", {"id": "1"})


def record(
    engine: Engine, keyring: Keyring, event_id: str, **options: object
) -> repository.Recorded:
    payload = json.dumps({"id": event_id, "secret": "card-holder"}).encode()
    values: dict[str, object] = {"target": TARGET, "object_id": "obj_1"} | options
    return repository.record(
        engine,
        keyring,
        provider="test",
        event_id=event_id,
        type="thing.happened",
        payload=payload,
        **values,  # type: ignore[arg-type]
    )


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(T)).scalar_one())


def test_an_event_is_recorded_once_and_sealed(engine: Engine, keyring: Keyring) -> None:
    first = record(engine, keyring, "evt_1")
    again = record(engine, keyring, "evt_1")
    other_provider = repository.record(
        engine, keyring, provider="other", event_id="evt_1", type="t", payload=b"{}", target=None
    )
    assert not first.duplicate and first.status == InboundStatus.PENDING
    assert again.duplicate and again.id == first.id and again.target == TARGET
    assert not other_provider.duplicate and other_provider.status == InboundStatus.IGNORED
    assert count(engine) == 2
    row = repository.load(engine, first.id)
    assert "card-holder" not in row.payload
    assert repository.open_payload(keyring, row)["secret"] == "card-holder"


def test_concurrent_deliveries_of_one_event_record_one_row(
    engine: Engine, keyring: Keyring
) -> None:
    results: list[repository.Recorded] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.append(record(engine, keyring, "evt_race"))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.id for r in results}) == 1
    assert count(engine) == 1


def test_leases_keep_forwarders_apart_and_a_release_hands_the_event_back(
    engine: Engine, keyring: Keyring
) -> None:
    now = utcnow()
    lease = timedelta(seconds=30)
    held = record(engine, keyring, "evt_held", now=now)  # the recording route's lease
    ignored = record(engine, keyring, "evt_ignored", target=None, now=now)
    assert repository.claim_pending(engine, now=now, lease=lease, limit=10) == []

    later = now + repository.ROUTE_LEASE + timedelta(seconds=1)  # the route died
    claimed = repository.claim_pending(engine, now=later, lease=lease, limit=10)
    assert [c.id for c in claimed] == [held.id]
    assert claimed[0].signal().event_id == "evt_held" and claimed[0].target == TARGET
    # A second pump at the same moment finds it leased.
    assert repository.claim_pending(engine, now=later, lease=lease, limit=10) == []

    repository.release(engine, held.id, "RPCError: unavailable", now=later)
    again = repository.claim_pending(engine, now=later, lease=lease, limit=10)
    assert [c.id for c in again] == [held.id]
    repository.mark_forwarded(engine, [held.id], now=later)
    row = repository.load(engine, held.id)
    assert row.status == InboundStatus.FORWARDED and row.attempts == 2 and row.last_error is None

    replayed = repository.replay(engine, held.id, now=later)
    assert replayed.replay and replayed.signal().replay
    row = repository.load(engine, held.id)
    assert row.status == InboundStatus.PENDING and row.replays == 1
    assert repository.load(engine, ignored.id).status == InboundStatus.IGNORED


def test_concurrent_pumps_claim_disjoint_events(engine: Engine, keyring: Keyring) -> None:
    past = utcnow() - timedelta(minutes=5)
    for n in range(40):
        record(engine, keyring, f"evt_{n}", now=past)
    claims: list[list[repository.Claimed]] = []
    barrier = threading.Barrier(4)

    def pump() -> None:
        barrier.wait()
        claims.append(
            repository.claim_pending(engine, now=utcnow(), lease=timedelta(seconds=30), limit=40)
        )

    threads = [threading.Thread(target=pump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [c.id for claim in claims for c in claim]
    assert len(ids) == len(set(ids)) == 40
