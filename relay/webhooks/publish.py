"""Publishing an event: the event and its deliveries, in one transaction.

`publish_event` is the one way events enter Relay (POST /v1/events, the OAuth
activities, the dispatcher's own operational events). It writes the event and one
PENDING delivery per subscribed, active endpoint in a single transaction, so a
crash either loses the whole publish (the caller saw an error) or nothing; the
dispatcher then claims the deliveries from the database. No Temporal call is made
per event.

An `idempotency_key` seen within the last 24 hours returns the first event
(`duplicate=True`) and creates no delivery. Older keys are released: the stale
event keeps its record but gives up the key, so the unique index stays small.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from relay.webhooks.patterns import is_valid_type, matches_any

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
# A concurrent publish with the same key makes the insert fail once; then it is found.
_KEY_RACE_ATTEMPTS = 3

endpoints_table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
events_table = WebhookEvent.__table__  # type: ignore[attr-defined]
deliveries_table = WebhookDelivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PublishResult:
    event_id: uuid.UUID
    endpoints: int
    duplicate: bool


def validate_event(event_type: str, data: object, idempotency_key: str | None) -> None:
    problems = []
    if not isinstance(event_type, str) or not is_valid_type(event_type):
        problems.append(
            {
                "field": "type",
                "in": "body",
                "message": "dot-separated words of letters, digits, _ or - (at most 200 characters)",
            }
        )
    if not isinstance(data, dict):
        problems.append({"field": "data", "in": "body", "message": "must be a JSON object"})
    if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY):
        problems.append({"field": "idempotencyKey", "in": "body", "message": "1 to 255 characters"})
    if problems:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "the event is invalid", problems)


def publish_event(
    engine: Engine,
    event_type: str,
    data: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    exclude_endpoint_id: uuid.UUID | None = None,
) -> PublishResult:
    """Record `event_type` with `data` and a delivery for every subscribed endpoint.

    Synchronous (call it with `asyncio.to_thread` from async code). Raises
    `RelayError(VALIDATION_ERROR)` for a malformed type or non-object data.
    """
    validate_event(event_type, data, idempotency_key)
    for attempt in range(_KEY_RACE_ATTEMPTS):
        try:
            with engine.begin() as connection:
                return publish_in(
                    connection,
                    event_type,
                    data,
                    idempotency_key=idempotency_key,
                    exclude_endpoint_id=exclude_endpoint_id,
                    now=utcnow(),
                )
        except IntegrityError:
            if idempotency_key is None or attempt == _KEY_RACE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def publish_in(
    connection: Connection,
    event_type: str,
    data: dict[str, Any],
    *,
    idempotency_key: str | None,
    exclude_endpoint_id: uuid.UUID | None,
    now: datetime,
) -> PublishResult:
    """`publish_event` inside the caller's transaction (the dispatcher's own events)."""
    if idempotency_key is not None:
        found = connection.execute(
            select(events_table.c.id, events_table.c.endpoints, events_table.c.created_at).where(
                events_table.c.idempotency_key == idempotency_key
            )
        ).first()
        if found is not None:
            created = as_utc(found.created_at)
            if created is not None and created > now - IDEMPOTENCY_WINDOW:
                return PublishResult(found.id, found.endpoints, duplicate=True)
            connection.execute(
                update(events_table)
                .where(events_table.c.id == found.id)
                .values(idempotency_key=None)
            )

    subscribed = [
        row.id
        for row in connection.execute(
            select(endpoints_table.c.id, endpoints_table.c.events).where(
                endpoints_table.c.is_active.is_(True), endpoints_table.c.deleted_at.is_(None)
            )
        )
        if row.id != exclude_endpoint_id and matches_any(row.events or [], event_type)
    ]
    event_id = uuid.uuid4()
    connection.execute(
        insert(events_table).values(
            id=event_id,
            type=event_type,
            data=data,
            idempotency_key=idempotency_key,
            endpoints=len(subscribed),
            created_at=now,
        )
    )
    if subscribed:
        connection.execute(
            insert(deliveries_table),
            [
                {
                    "id": uuid.uuid4(),
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "scheduled_attempts": 0,
                    "next_attempt_at": now,
                    "timer_held": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for endpoint_id in subscribed
            ],
        )
    return PublishResult(event_id, len(subscribed), duplicate=False)


@dataclass(frozen=True)
class EventRequest:
    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None


def publish_many(engine: Engine, requests: list[EventRequest]) -> list[PublishResult]:
    """Publish several validated events in ONE transaction (the API's group commit).

    Same results as calling `publish_event` for each in order: a key repeated within
    the batch returns the first event. If another process races on a key, the batch
    is rolled back and published one by one.
    """
    try:
        with engine.begin() as connection:
            return _publish_many_in(connection, requests, utcnow())
    except IntegrityError:
        return [
            publish_event(engine, r.type, r.data, idempotency_key=r.idempotency_key)
            for r in requests
        ]


def _publish_many_in(
    connection: Connection, requests: list[EventRequest], now: datetime
) -> list[PublishResult]:
    keys = {r.idempotency_key for r in requests if r.idempotency_key is not None}
    known: dict[str, PublishResult] = {}
    if keys:
        stale = []
        for row in connection.execute(
            select(
                events_table.c.id,
                events_table.c.endpoints,
                events_table.c.created_at,
                events_table.c.idempotency_key,
            ).where(events_table.c.idempotency_key.in_(keys))
        ):
            created = as_utc(row.created_at)
            if created is not None and created > now - IDEMPOTENCY_WINDOW:
                known[row.idempotency_key] = PublishResult(row.id, row.endpoints, duplicate=True)
            else:
                stale.append(row.id)
        if stale:
            connection.execute(
                update(events_table)
                .where(events_table.c.id.in_(stale))
                .values(idempotency_key=None)
            )
    endpoints = [
        (row.id, row.events or [])
        for row in connection.execute(
            select(endpoints_table.c.id, endpoints_table.c.events).where(
                endpoints_table.c.is_active.is_(True), endpoints_table.c.deleted_at.is_(None)
            )
        )
    ]
    matched: dict[str, list[uuid.UUID]] = {}
    results: list[PublishResult] = []
    events: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    for request in requests:
        key = request.idempotency_key
        if key is not None and key in known:
            results.append(known[key])
            continue
        if request.type not in matched:
            matched[request.type] = [
                endpoint_id
                for endpoint_id, patterns in endpoints
                if matches_any(patterns, request.type)
            ]
        subscribed = matched[request.type]
        event_id = uuid.uuid4()
        events.append(
            {
                "id": event_id,
                "type": request.type,
                "data": request.data,
                "idempotency_key": key,
                "endpoints": len(subscribed),
                "created_at": now,
            }
        )
        deliveries.extend(
            {
                "id": uuid.uuid4(),
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "event_type": request.type,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "scheduled_attempts": 0,
                "next_attempt_at": now,
                "timer_held": False,
                "created_at": now,
                "updated_at": now,
            }
            for endpoint_id in subscribed
        )
        result = PublishResult(event_id, len(subscribed), duplicate=False)
        results.append(result)
        if key is not None:
            known[key] = PublishResult(event_id, len(subscribed), duplicate=True)
    if events:
        connection.execute(insert(events_table), events)
    if deliveries:
        connection.execute(insert(deliveries_table), deliveries)
    return results
