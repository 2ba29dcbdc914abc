"""Notifications' database access: the send queue, results, provider events, suppressions.

The queue is the `notifications` table (docs/notifications.md): `enqueue` writes PENDING
rows (content sealed) in one transaction; the pump `claim`s due rows under a lease,
sends them and `record`s the results in one transaction per batch; provider callbacks
are `apply`ed with statuses that only move forward.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.notifications import Notification, NotificationEvent, Suppression
from relay.notifications.contracts import (
    FAILED_STATES,
    FINAL,
    Channel,
    NotificationStatus,
    ProviderEvent,
    SuppressionChannel,
    advances,
    behind,
    suppression_channel,
)

notifications = Notification.__table__  # type: ignore[attr-defined]
events = NotificationEvent.__table__  # type: ignore[attr-defined]
suppressions = Suppression.__table__  # type: ignore[attr-defined]


def new_id() -> str:
    return str(uuid.uuid4())


def _context(notification_id: str) -> str:
    return f"notification:{notification_id}"


def seal_content(keyring: Keyring, notification_id: str, content: dict[str, Any]) -> str:
    return keyring.seal(json.dumps(content, separators=(",", ":")), _context(notification_id))


def open_content(keyring: Keyring, notification_id: str, sealed: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(keyring.open(sealed, _context(notification_id)))
    return value


@dataclass
class NewMessage:
    """A notification to queue. `channel` None with `channels` set is a multi-channel
    notification (its workflow queues one message per channel, `parent_id` = its id)."""

    channel: Channel | None
    content: dict[str, Any]
    to: str | None = None
    user_id: str | None = None
    idempotency_key: str | None = None
    critical: bool = False
    parent_id: str | None = None
    channels: list[str] | None = None
    batch_id: str | None = None
    batch_chunk: int | None = None
    id: str = field(default_factory=new_id)


@dataclass
class Queued:
    id: str
    status: str
    duplicate: bool = False


def _row(keyring: Keyring, message: NewMessage, now: datetime) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel.value if message.channel else None,
        "channels": message.channels,
        "parent_id": message.parent_id,
        "status": NotificationStatus.PENDING.value,
        "user_id": message.user_id,
        "to_address": message.to,
        "content": seal_content(keyring, message.id, message.content),
        "request_hash": _fingerprint(message),
        "critical": message.critical,
        "idempotency_key": message.idempotency_key,
        "batch_id": message.batch_id,
        "batch_chunk": message.batch_chunk,
        "attempts": 0,
        # A multi-channel notification's own row is never sent: its workflow sends.
        "next_attempt_at": now if message.channel is not None else None,
        "created_at": now,
        "updated_at": now,
    }


def _fingerprint(message: NewMessage) -> str:
    """What the message asks for (not its id): one idempotencyKey, one request."""
    asked = {
        "channel": message.channel,
        "channels": message.channels,
        "to": message.to,
        "userId": message.user_id,
        "critical": message.critical,
        "content": message.content,
    }
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def enqueue(
    engine: Engine, keyring: Keyring, messages: list[NewMessage], *, now: datetime | None = None
) -> list[Queued]:
    """Queue `messages` in one transaction. A message whose idempotency key is taken lands
    on the existing notification (`duplicate`), and the others are queued all the same."""
    now = now or utcnow()
    rows = [_row(keyring, message, now) for message in messages]
    try:
        with engine.begin() as connection:
            connection.execute(insert(notifications), rows)
        return [Queued(m.id, NotificationStatus.PENDING.value) for m in messages]
    except IntegrityError:
        if not any(m.idempotency_key for m in messages):
            raise
    # Some key was seen before. A key reused for another request is refused before anything
    # of this one is queued; then one transaction per message tells which are duplicates.
    for message, row in zip(messages, rows, strict=True):
        existing = find_by_key(engine, message.idempotency_key) if message.idempotency_key else None
        if existing is not None and existing.request_hash not in (None, row["request_hash"]):
            raise RelayError(
                ErrorCode.CONFLICT,
                "this idempotencyKey was used for a different request",
                [{"field": "idempotencyKey", "in": "body", "message": "already used"}],
            )
    queued: list[Queued] = []
    for message, row in zip(messages, rows, strict=True):
        try:
            with engine.begin() as connection:
                connection.execute(insert(notifications), [row])
            queued.append(Queued(message.id, NotificationStatus.PENDING.value))
        except IntegrityError:
            existing = find_by_key(engine, message.idempotency_key or "")
            if existing is None:
                raise
            queued.append(Queued(existing.id, existing.status, duplicate=True))
    return queued


def find_by_key(engine: Engine, key: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(notifications.c.id, notifications.c.status, notifications.c.request_hash).where(
                notifications.c.idempotency_key == key
            )
        ).first()


def load(engine: Engine, notification_id: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(notifications).where(notifications.c.id == notification_id)
        ).first()


def load_events(engine: Engine, notification_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(events)
                .where(events.c.notification_id == notification_id)
                .order_by(events.c.id)
            )
        )


# --- suppressions -----------------------------------------------------------------------------


def suppressed(engine: Engine, channel: SuppressionChannel, addresses: Iterable[str]) -> set[str]:
    """Which of `addresses` are on the suppression list for `channel`."""
    wanted = sorted(set(addresses))
    if not wanted:
        return set()
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(suppressions.c.address).where(
                    suppressions.c.channel == channel.value, suppressions.c.address.in_(wanted)
                )
            ).scalars()
        )


def suppress(
    engine: Engine,
    channel: SuppressionChannel,
    address: str,
    reason: str,
    source: str,
    *,
    now: datetime | None = None,
) -> bool:
    """Add `address` to the list; False when it was there already (the first reason stays)."""
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(suppressions).values(
                    channel=channel.value,
                    address=address,
                    reason=reason,
                    source=source,
                    created_at=now or utcnow(),
                )
            )
        return True
    except IntegrityError:
        return False


def unsuppress(engine: Engine, channel: SuppressionChannel, address: str) -> bool:
    with engine.begin() as connection:
        result = connection.execute(
            delete(suppressions).where(
                suppressions.c.channel == channel.value, suppressions.c.address == address
            )
        )
    return bool(result.rowcount)


# --- the send queue ---------------------------------------------------------------------------


@dataclass
class Claimed:
    """A queued message leased for one send attempt."""

    id: str
    channel: Channel
    to: str | None
    user_id: str | None
    content: str  # sealed
    attempts: int  # this attempt's number
    parent_id: str | None
    batch_id: str | None
    batch_chunk: int | None


_CLAIM_COLUMNS = (
    notifications.c.id,
    notifications.c.channel,
    notifications.c.to_address,
    notifications.c.user_id,
    notifications.c.content,
    notifications.c.attempts,
    notifications.c.parent_id,
    notifications.c.batch_id,
    notifications.c.batch_chunk,
)


def _due(now: datetime) -> Any:
    return and_(
        notifications.c.status == NotificationStatus.PENDING.value,
        notifications.c.next_attempt_at <= now,
        or_(notifications.c.lease_until.is_(None), notifications.c.lease_until < now),
    )


def claim(engine: Engine, *, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
    """Lease up to `limit` due messages, oldest first. A bulk chunk is leased whole (its
    recipients go out in one SendGrid request), even past `limit`."""
    with engine.begin() as connection:
        query = (
            select(notifications.c.id, notifications.c.batch_id, notifications.c.batch_chunk)
            .where(_due(now))
            .order_by(notifications.c.next_attempt_at)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        picked = list(connection.execute(query))
        ids = [row.id for row in picked if row.batch_id is None]
        chunks = {(row.batch_id, row.batch_chunk) for row in picked if row.batch_id is not None}
        condition = or_(
            notifications.c.id.in_(ids),
            *(
                and_(notifications.c.batch_id == batch, notifications.c.batch_chunk == chunk)
                for batch, chunk in chunks
            ),
        )
        if not ids and not chunks:
            return []
        rows = connection.execute(
            update(notifications)
            .where(condition, _due(now))
            .values(lease_until=now + lease, attempts=notifications.c.attempts + 1, updated_at=now)
            .returning(*_CLAIM_COLUMNS)
        ).all()
    return [
        Claimed(
            id=row.id,
            channel=Channel(row.channel),
            to=row.to_address,
            user_id=row.user_id,
            content=row.content,
            attempts=row.attempts,
            parent_id=row.parent_id,
            batch_id=row.batch_id,
            batch_chunk=row.batch_chunk,
        )
        for row in rows
    ]


@dataclass
class Outcome:
    """What one send attempt came to. Exactly one of: `status` (SENT, FAILED or UNKNOWN),
    or `retry_at` (the provider did not act; the message goes back to the queue)."""

    id: str
    attempt: int
    status: NotificationStatus | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_at: datetime | None = None
    result: dict[str, Any] | None = None


@dataclass
class Change:
    """A notification whose status moved: for outgoing webhooks and a parent's workflow."""

    id: str
    status: NotificationStatus
    provider: str | None
    parent_id: str | None
    channel: str | None
    error_code: str | None = None


def _current(connection: Any, ids: Iterable[str]) -> dict[str, Any]:
    rows = connection.execute(
        select(
            notifications.c.id,
            notifications.c.status,
            notifications.c.parent_id,
            notifications.c.channel,
            notifications.c.provider,
        ).where(notifications.c.id.in_(sorted(set(ids))))
    )
    return {row.id: row for row in rows}


def record(engine: Engine, outcomes: list[Outcome], *, now: datetime) -> list[Change]:
    """Record send attempts in one transaction: statuses only move forward (a callback
    may have beaten the result here), a retry goes back to the queue, and every attempt
    that reached the provider becomes an event of its notification."""
    changes: list[Change] = []
    with engine.begin() as connection:
        current = _current(connection, (o.id for o in outcomes))
        event_rows: list[dict[str, Any]] = []
        for outcome in outcomes:
            row = current.get(outcome.id)
            if row is None:
                continue
            this = update(notifications).where(notifications.c.id == outcome.id)
            if outcome.retry_at is not None:
                connection.execute(
                    this.where(notifications.c.status == NotificationStatus.PENDING.value).values(
                        lease_until=None,
                        updated_at=now,
                        next_attempt_at=outcome.retry_at,
                        error_code=outcome.error_code,
                        error_message=_short(outcome.error_message),
                    )
                )
                continue
            status = outcome.status or NotificationStatus.FAILED
            # What the send said is kept whatever the status is now (a callback may have
            # moved it on already); the status itself only moves forward.
            connection.execute(
                this.values(
                    lease_until=None,
                    updated_at=now,
                    next_attempt_at=None,
                    provider=outcome.provider,
                    provider_message_id=outcome.provider_message_id,
                    result=outcome.result,
                    sent_at=now if status is NotificationStatus.SENT else None,
                )
            )
            moved = connection.execute(
                this.where(notifications.c.status.in_(behind(status))).values(
                    status=status.value,
                    error_code=outcome.error_code,
                    error_message=_short(outcome.error_message),
                    final_at=now if status in FINAL else None,
                )
            )
            if moved.rowcount:
                changes.append(
                    Change(
                        outcome.id,
                        status,
                        outcome.provider,
                        row.parent_id,
                        row.channel,
                        outcome.error_code,
                    )
                )
            event_rows.append(
                {
                    "notification_id": outcome.id,
                    "provider": "relay",
                    "event_id": f"{outcome.id}:attempt:{outcome.attempt}",
                    "event": "send",
                    "status": status.value,
                    "error_code": outcome.error_code,
                    "error_message": _short(outcome.error_message),
                    "occurred_at": now,
                    "received_at": now,
                }
            )
        if event_rows:
            connection.execute(insert(events), event_rows)
    return changes


def _short(message: str | None) -> str | None:
    return message[:1000] if message else message


def apply(
    engine: Engine, provider_events: list[ProviderEvent], *, now: datetime
) -> tuple[list[Change], int]:
    """Apply provider callbacks once each, in one transaction: the event is kept (unique per
    provider and event id, so a duplicate does nothing), the status moves only forward, and
    a suppression it asks for is added. Returns the changes and how many were new."""
    changes: list[Change] = []
    applied = 0
    with engine.begin() as connection:
        known = {e.notification_id for e in provider_events if e.notification_id}
        rows = {key: row._asdict() for key, row in _current(connection, known).items()}
        for event in provider_events:
            notification_id = event.notification_id or _by_provider_id(
                connection, event.provider_message_id
            )
            if notification_id and notification_id not in rows:
                found = _current(connection, [notification_id]).get(notification_id)
                if found is not None:
                    rows[notification_id] = found._asdict()
            row = rows.get(notification_id or "")
            if row is None:
                continue  # not a message Relay sent (or deleted): nothing to apply
            if not _insert_once(connection, _event_row(row["id"], event, now)):
                continue  # seen before
            applied += 1
            if event.status is not None and advances(row["status"], event.status):
                values: dict[str, Any] = {
                    "status": event.status.value,
                    "updated_at": now,
                    # The callback may beat the pump's record of the send: it names both.
                    "provider": func.coalesce(notifications.c.provider, event.provider.value),
                    "provider_message_id": func.coalesce(
                        notifications.c.provider_message_id, event.provider_message_id
                    ),
                }
                if event.status in FINAL:
                    values["final_at"] = now
                if event.status in FAILED_STATES:
                    values["error_code"] = event.error_code
                    values["error_message"] = _short(event.error_message)
                connection.execute(
                    update(notifications)
                    .where(notifications.c.id == row["id"])
                    .where(notifications.c.status.in_(behind(event.status)))
                    .values(**values)
                )
                row["status"] = event.status.value  # a later event of the batch sees it
                changes.append(
                    Change(
                        row["id"],
                        event.status,
                        row["provider"] or event.provider.value,
                        row["parent_id"],
                        row["channel"],
                        event.error_code,
                    )
                )
            kind = suppression_channel(row["channel"]) if row["channel"] else None
            if event.suppress is not None and event.address and kind is not None:
                _insert_once(
                    connection,
                    {
                        "table": suppressions,
                        "channel": kind.value,
                        "address": event.address,
                        "reason": event.suppress.value,
                        "source": event.provider.value,
                        "created_at": now,
                    },
                )
    return changes, applied


def _event_row(notification_id: str, event: ProviderEvent, now: datetime) -> dict[str, Any]:
    return {
        "table": events,
        "notification_id": notification_id,
        "provider": event.provider.value,
        "event_id": event.event_id[:255],
        "event": event.event[:64],
        "status": event.status.value if event.status else None,
        "error_code": event.error_code,
        "error_message": _short(event.error_message),
        "occurred_at": event.occurred_at,
        "received_at": now,
    }


def _insert_once(connection: Any, values: dict[str, Any]) -> bool:
    """Insert under a savepoint; False when a unique key says it is there already."""
    table = values.pop("table")
    try:
        with connection.begin_nested():
            connection.execute(insert(table).values(**values))
    except IntegrityError:
        return False
    return True


def _by_provider_id(connection: Any, provider_message_id: str | None) -> str | None:
    if not provider_message_id:
        return None
    value: str | None = connection.execute(
        select(notifications.c.id).where(notifications.c.provider_message_id == provider_message_id)
    ).scalar()
    return value


def finish_parent(engine: Engine, params: Any, *, now: datetime) -> list[Change]:
    """A multi-channel notification's own status, set once by its workflow at the end:
    `params` is a FinishNotificationInput."""
    status = NotificationStatus(params.status)
    with engine.begin() as connection:
        row = _current(connection, [params.notification_id]).get(params.notification_id)
        if row is None or not advances(row.status, status):
            return []
        connection.execute(
            update(notifications)
            .where(notifications.c.id == params.notification_id)
            .values(
                status=status.value,
                provider=_provider_of(connection, params.message_id),
                provider_message_id=None,
                error_code=params.error_code,
                final_at=now if status in FINAL else None,
                sent_at=now,
                updated_at=now,
                result={"channel": params.channel, "messageId": params.message_id},
            )
        )
    return [Change(params.notification_id, status, None, None, None, params.error_code)]


def _provider_of(connection: Any, message_id: str | None) -> str | None:
    if message_id is None:
        return None
    value: str | None = connection.execute(
        select(notifications.c.provider).where(notifications.c.id == message_id)
    ).scalar()
    if value is None:
        # The provider's callback can settle the message before the pump records its send
        # (SendGrid answers at once in the sandbox): the callback names the provider too.
        value = connection.execute(
            select(events.c.provider)
            .where(events.c.notification_id == message_id, events.c.provider != "relay")
            .limit(1)
        ).scalar()
    return value
