"""The API's group commits, on SQLite and PostgreSQL.

Events (relay/inbound/group_record.py): concurrent deliveries share one transaction and
each is committed when its caller resumes; duplicates, even within one batch, make one
row; a database that fails the batch fails every caller. FORWARDED marks
(relay/inbound/marks.py): marks queued together are written together, a mark never
written leaves the row PENDING for the forwarder, and a late mark never overrides a
newer lease."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, OperationalError

from relay.crypto import Keyring
from relay.db import utcnow
from relay.inbound import repository
from relay.inbound.contracts import InboundStatus
from relay.inbound.group_record import GroupRecorder
from relay.inbound.marks import ForwardedMarks
from relay.inbound.repository import Incoming
from tests.inbound.test_repository import TARGET, count, record


def incoming(event_id: str) -> Incoming:
    return Incoming("test", event_id, "thing.happened", b'{"secret": "x"}', TARGET, "obj_1")


async def test_concurrent_events_are_recorded_together_and_committed(
    engine: Engine, keyring: Keyring
) -> None:
    recorder = GroupRecorder(engine, keyring)
    recorded = await asyncio.gather(*(recorder.record(incoming(f"evt_g{i}")) for i in range(40)))
    assert len({r.id for r in recorded}) == 40 and not any(r.duplicate for r in recorded)
    assert all(r.lease_until is not None and r.status == InboundStatus.PENDING for r in recorded)
    assert count(engine) == 40
    for r in recorded:
        assert repository.load(engine, r.id).status == InboundStatus.PENDING


async def test_duplicates_within_and_across_batches_make_one_row(
    engine: Engine, keyring: Keyring
) -> None:
    recorder = GroupRecorder(engine, keyring)
    first = await recorder.record(incoming("evt_dup"))
    again = await asyncio.gather(
        *(recorder.record(incoming(e)) for e in ["evt_dup", "evt_new", "evt_new", "evt_dup"])
    )
    assert [r.duplicate for r in again] == [True, False, True, True]
    assert again[0].id == again[3].id == first.id and again[1].id == again[2].id
    assert again[2].lease_until is None  # a duplicate is never leased
    assert count(engine) == 2


async def test_a_value_the_database_refuses_fails_only_its_own_event(
    engine: Engine, keyring: Keyring
) -> None:
    """PostgreSQL refuses a NUL character (DataError, 422): the other events of the batch
    are recorded all the same. SQLite stores it."""
    recorder = GroupRecorder(engine, keyring)
    outcomes = await asyncio.gather(
        *(recorder.record(incoming(e)) for e in ["evt_ok1", "evt_\x00nul", "evt_ok2"]),
        return_exceptions=True,
    )
    ok1, nul, ok2 = outcomes
    assert isinstance(ok1, repository.Recorded) and isinstance(ok2, repository.Recorded)
    assert not ok1.duplicate and not ok2.duplicate
    refused = engine.dialect.name == "postgresql"
    assert isinstance(nul, DataError) if refused else isinstance(nul, repository.Recorded)
    assert count(engine) == (2 if refused else 3)


async def test_a_database_that_fails_the_batch_fails_every_caller(
    engine: Engine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> list[repository.Recorded]:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr("relay.inbound.group_record.record_many", refuse)
    recorder = GroupRecorder(engine, keyring)
    outcomes = await asyncio.gather(
        *(recorder.record(incoming(f"evt_f{i}")) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, OperationalError) for o in outcomes)  # 503 for each
    assert count(engine) == 0


async def test_marks_queued_together_are_written_in_one_flush(
    engine: Engine, keyring: Keyring
) -> None:
    recorded = [record(engine, keyring, f"evt_batch_{i}") for i in range(30)]
    marks = ForwardedMarks(engine)
    for one in recorded:
        assert one.lease_until is not None
        marks.add(one.id, one.lease_until)
    assert marks.pending == 30  # nothing written while the requests answer
    await marks.flush()
    assert marks.pending == 0
    for one in recorded:
        row = repository.load(engine, one.id)
        assert row.status == InboundStatus.FORWARDED
        assert row.claimed_until is None and row.attempts == 1 and row.forwarded_at


async def test_marks_lost_before_the_flush_leave_the_event_to_the_forwarder(
    engine: Engine, keyring: Keyring
) -> None:
    """The API dies between its 2xx and the flush: the row keeps the route's lease, stays
    PENDING, and the forwarder claims it once the lease ran out (it forwards it again)."""
    recorded = record(engine, keyring, "evt_crash")
    assert recorded.lease_until is not None
    marks = ForwardedMarks(engine, interval=60)
    marks.add(recorded.id, recorded.lease_until)
    writer = marks._writer
    assert writer is not None
    writer.cancel()  # the process is gone before the flush
    await asyncio.wait({writer})
    await marks.flush()
    assert repository.load(engine, recorded.id).status == InboundStatus.PENDING

    now = utcnow()
    lease = timedelta(seconds=30)
    # While the route's lease holds, the forwarder leaves the row alone…
    assert repository.claim_pending(engine, now=now, lease=lease, limit=10) == []
    # …and takes it up once it ran out.
    later = now + repository.ROUTE_LEASE + timedelta(seconds=1)
    claimed = repository.claim_pending(engine, now=later, lease=lease, limit=10)
    assert [c.event_id for c in claimed] == ["evt_crash"]


async def test_a_late_mark_never_overrides_a_newer_lease(engine: Engine, keyring: Keyring) -> None:
    """A replay (or a pump's claim after the lease ran out) took the row since: the old
    mark does not apply; the new holder marks it."""
    recorded = record(engine, keyring, "evt_late")
    assert recorded.lease_until is not None
    repository.release(engine, recorded.id, "Temporal is not reachable", now=utcnow())
    replayed = repository.replay(engine, recorded.id)
    marked = repository.mark_forwarded_leased(
        engine, [(recorded.id, recorded.lease_until)], now=utcnow()
    )
    assert marked == 0
    assert repository.load(engine, recorded.id).status == InboundStatus.PENDING
    assert replayed.id == recorded.id


async def test_a_failed_flush_is_logged_and_leaves_rows_pending(
    engine: Engine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = record(engine, keyring, "evt_refused")
    assert recorded.lease_until is not None

    def refuse(*_: object, **__: object) -> int:
        raise RuntimeError("database is locked")

    marks = ForwardedMarks(engine)
    monkeypatch.setattr(repository, "mark_forwarded_leased", refuse)
    marks.add(recorded.id, recorded.lease_until)
    await marks.flush()  # does not raise: the forwarder has the row
    assert repository.load(engine, recorded.id).status == InboundStatus.PENDING
