"""The inbox's database reads and writes (synchronous; async callers use `asyncio.to_thread`).

- `record` inserts one event once: the unique (provider, event id) makes a duplicate
  delivery, even a concurrent one, a no-op that reports the row already there.
- A row is forwarded under a lease (`claimed_until`): the route that recorded it holds
  the first lease, the forwarder's pump claims rows whose lease ran out, so the two
  never signal one event at once and a crashed holder's rows are taken up again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError

from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.inbound.contracts import ForwardTarget, InboundEventSignal, InboundStatus
from relay.models.inbound import InboundCursor, InboundEvent

T = InboundEvent.__table__  # type: ignore[attr-defined]
CURSORS = InboundCursor.__table__  # type: ignore[attr-defined]

# The route's own lease on a row it just recorded: long enough to forward it once.
ROUTE_LEASE = timedelta(seconds=30)
MAX_ERROR = 1000


@dataclass
class Recorded:
    id: uuid.UUID
    duplicate: bool
    status: InboundStatus
    target: ForwardTarget | None
    object_id: str | None = None
    # The lease the recording caller holds (None for a duplicate or an ignored event).
    lease_until: datetime | None = None


@dataclass
class Claimed:
    """A row leased for forwarding: enough to signal-with-start without the payload."""

    id: uuid.UUID
    provider: str
    event_id: str
    type: str
    object_id: str | None
    target: ForwardTarget
    replay: bool = False
    lease_until: datetime | None = None

    def signal(self) -> InboundEventSignal:
        return InboundEventSignal(
            inbox_id=str(self.id),
            provider=self.provider,
            event_id=self.event_id,
            type=self.type,
            object_id=self.object_id,
            replay=self.replay,
        )


def _context(provider: str, event_id: str) -> str:
    return f"inbound:{provider}:{event_id}"


def _target(stored: dict[str, Any] | None) -> ForwardTarget | None:
    return ForwardTarget(**stored) if stored else None


@dataclass
class Incoming:
    """One event to record (see `record`)."""

    provider: str
    event_id: str
    type: str
    payload: bytes
    target: ForwardTarget | None
    object_id: str | None = None


def _values(keyring: Keyring, incoming: Incoming, now: datetime) -> dict[str, Any]:
    target = incoming.target
    status = InboundStatus.PENDING if target else InboundStatus.IGNORED
    provider, event_id = incoming.provider, incoming.event_id
    return {
        "id": uuid.uuid4(),
        "provider": provider,
        "event_id": event_id,
        "type": incoming.type[:200],
        "object_id": incoming.object_id[:255] if incoming.object_id else None,
        "status": status.value,
        "payload": keyring.seal(incoming.payload.decode("utf-8"), _context(provider, event_id)),
        "target": asdict(target) if target else None,
        "attempts": 0,
        "replays": 0,
        "claimed_until": now + ROUTE_LEASE if target else None,
        "created_at": now,
        "updated_at": now,
    }


def _recorded(values: dict[str, Any], target: ForwardTarget | None) -> Recorded:
    return Recorded(
        values["id"],
        False,
        InboundStatus(values["status"]),
        target,
        values["object_id"],
        values["claimed_until"],
    )


def record(
    engine: Engine,
    keyring: Keyring,
    *,
    provider: str,
    event_id: str,
    type: str,
    payload: bytes,
    target: ForwardTarget | None,
    object_id: str | None = None,
    now: datetime | None = None,
) -> Recorded:
    """Insert the event once, leased to the caller for forwarding; a duplicate is found,
    not inserted, and never leased (it is not forwarded again)."""
    incoming = Incoming(provider, event_id, type, payload, target, object_id)
    values = _values(keyring, incoming, now or utcnow())
    try:
        with engine.begin() as connection:
            connection.execute(insert(T).values(**values))
    except IntegrityError:
        with engine.connect() as connection:
            existing = connection.execute(
                select(T.c.id, T.c.status, T.c.target).where(
                    T.c.provider == provider, T.c.event_id == event_id
                )
            ).first()
        if existing is None:  # not the unique constraint after all
            raise
        return Recorded(existing.id, True, InboundStatus(existing.status), _target(existing.target))
    return _recorded(values, target)


def record_many(
    engine: Engine, keyring: Keyring, events: list[Incoming]
) -> list[Recorded | DataError]:
    """`record` for several events in one transaction (group commit): every event is
    committed when this returns. When one of them is already there (a duplicate, even
    within the batch) or has a value the database refuses, the transaction is rolled
    back and each is recorded on its own, so one event never fails another: an event the
    database refuses gets its `DataError` in its place (422 for its request alone)."""
    now = utcnow()
    rows = [_values(keyring, incoming, now) for incoming in events]
    try:
        with engine.begin() as connection:
            connection.execute(insert(T), rows)
    except (IntegrityError, DataError):
        results: list[Recorded | DataError] = []
        for e in events:
            try:
                results.append(
                    record(
                        engine,
                        keyring,
                        provider=e.provider,
                        event_id=e.event_id,
                        type=e.type,
                        payload=e.payload,
                        target=e.target,
                        object_id=e.object_id,
                        now=now,
                    )
                )
            except DataError as exc:
                results.append(exc)
        return results
    return [_recorded(values, e.target) for values, e in zip(rows, events, strict=True)]


def _claimed(row: Row[Any], *, replay: bool = False) -> Claimed:
    target = _target(row.target)
    assert target is not None
    return Claimed(row.id, row.provider, row.event_id, row.type, row.object_id, target, replay)


def claim_pending(engine: Engine, *, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
    """Lease up to `limit` PENDING rows whose lease ran out, oldest first.

    Each row is taken by a conditional update, so of two pumps (or a pump and a route)
    only one wins it, on SQLite as on PostgreSQL.
    """
    free = or_(T.c.claimed_until.is_(None), T.c.claimed_until < now)
    with engine.connect() as connection:
        candidates = list(
            connection.execute(
                select(T.c.id, T.c.claimed_until)
                .where(T.c.status == InboundStatus.PENDING.value, free)
                .order_by(T.c.created_at, T.c.id)
                .limit(limit)
            )
        )
    claimed: list[Claimed] = []
    with engine.begin() as connection:
        for candidate in candidates:
            same_lease = (
                T.c.claimed_until.is_(None)
                if candidate.claimed_until is None
                else T.c.claimed_until == candidate.claimed_until
            )
            taken = connection.execute(
                update(T)
                .where(T.c.id == candidate.id, T.c.status == InboundStatus.PENDING.value)
                .where(same_lease)
                .values(claimed_until=now + lease, updated_at=now)
            ).rowcount
            if taken:
                row = connection.execute(select(T).where(T.c.id == candidate.id)).one()
                claimed.append(_claimed(row))
    return claimed


def mark_forwarded(engine: Engine, row_ids: list[uuid.UUID], *, now: datetime) -> None:
    if not row_ids:
        return
    with engine.begin() as connection:
        connection.execute(
            update(T)
            .where(T.c.id.in_(row_ids))
            .values(
                status=InboundStatus.FORWARDED.value,
                forwarded_at=now,
                claimed_until=None,
                attempts=T.c.attempts + 1,
                last_error=None,
                updated_at=now,
            )
        )


def mark_forwarded_leased(
    engine: Engine, leased: list[tuple[uuid.UUID, datetime]], *, now: datetime
) -> int:
    """Mark rows FORWARDED in one transaction, each only while it still holds the lease
    its forwarder took (a replay, a release or a pump's claim since then wins); the
    number of rows marked."""
    if not leased:
        return 0
    statement = (
        update(T)
        .where(T.c.id == bindparam("row_id"), T.c.claimed_until == bindparam("lease"))
        .values(
            status=InboundStatus.FORWARDED.value,
            forwarded_at=now,
            claimed_until=None,
            attempts=T.c.attempts + 1,
            last_error=None,
            updated_at=now,
        )
    )
    with engine.begin() as connection:
        result = connection.execute(
            statement, [{"row_id": row_id, "lease": lease} for row_id, lease in leased]
        )
    return max(result.rowcount, 0)


def release(engine: Engine, row_id: uuid.UUID, error: str, *, now: datetime) -> None:
    """Forwarding failed (Temporal unreachable): the row stays PENDING for the pump."""
    with engine.begin() as connection:
        connection.execute(
            update(T)
            .where(T.c.id == row_id)
            .values(
                claimed_until=None,
                attempts=T.c.attempts + 1,
                last_error=error[:MAX_ERROR],
                updated_at=now,
            )
        )


def replay(engine: Engine, row_id: uuid.UUID, *, now: datetime | None = None) -> Claimed:
    """Lease an event for forwarding once more, whatever its status (it goes back to
    PENDING until Temporal accepts it again); CONFLICT when no workflow takes it."""
    now = now or utcnow()
    with engine.begin() as connection:
        row = connection.execute(select(T).where(T.c.id == row_id)).first()
        if row is None:
            raise RelayError(ErrorCode.NOT_FOUND, "no inbound event with that id")
        if not row.target:
            raise RelayError(
                ErrorCode.CONFLICT, "no workflow takes this event type; there is nothing to replay"
            )
        connection.execute(
            update(T)
            .where(T.c.id == row_id)
            .values(
                status=InboundStatus.PENDING.value,
                claimed_until=now + ROUTE_LEASE,
                replays=T.c.replays + 1,
                updated_at=now,
            )
        )
    return _claimed(row, replay=True)


def load(engine: Engine, row_id: uuid.UUID) -> Row[Any]:
    with engine.connect() as connection:
        row = connection.execute(select(T).where(T.c.id == row_id)).first()
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no inbound event with that id")
    return row


def open_payload(keyring: Keyring, row: Row[Any]) -> Any:
    """The event as the provider sent it (for operators and reconciliation)."""
    return json.loads(keyring.open(row.payload, _context(row.provider, row.event_id)))


def events_query(
    *, provider: str | None = None, type: str | None = None, status: str | None = None
) -> Select[Any]:
    query = select(T)
    if provider:
        query = query.where(T.c.provider == provider)
    if type:
        query = query.where(T.c.type == type)
    if status:
        query = query.where(T.c.status == status)
    return query


def known_event_ids(engine: Engine, provider: str, event_ids: list[str]) -> set[str]:
    """Which of these provider event ids the inbox holds already."""
    if not event_ids:
        return set()
    with engine.connect() as connection:
        rows = connection.execute(
            select(T.c.event_id).where(T.c.provider == provider, T.c.event_id.in_(event_ids))
        )
        return {row.event_id for row in rows}


def watermark(engine: Engine, provider: str) -> int | None:
    with engine.connect() as connection:
        return connection.execute(
            select(CURSORS.c.watermark).where(CURSORS.c.provider == provider)
        ).scalar_one_or_none()


def advance_watermark(engine: Engine, provider: str, value: int) -> None:
    """Move the cursor forward (never back)."""
    now = utcnow()
    with engine.begin() as connection:
        updated = connection.execute(
            update(CURSORS)
            .where(CURSORS.c.provider == provider, CURSORS.c.watermark < value)
            .values(watermark=value, updated_at=now)
        ).rowcount
        if updated:
            return
        exists = connection.execute(
            select(CURSORS.c.provider).where(CURSORS.c.provider == provider)
        ).first()
    if exists is None:
        try:
            with engine.begin() as connection:
                connection.execute(
                    insert(CURSORS).values(provider=provider, watermark=value, updated_at=now)
                )
        except IntegrityError:
            advance_watermark(engine, provider, value)
