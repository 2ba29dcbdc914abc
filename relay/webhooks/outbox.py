"""The delivery outbox: claiming due deliveries and recording their attempts, in bulk.

Claims are leases (`claimed_until`): a worker that dies mid-delivery loses its
lease and another worker claims the delivery again, so every delivery completes at
least once. A lease names its owner (`lease_owner`: the activity that claimed it,
`lease_attempt`: which Temporal attempt of it), so the next attempt of that same
activity takes back a lost attempt's leases at once (`take_over_leases`) instead of
waiting for them to run out. An attempt that was numbered but never recorded (its
worker died with the request in flight) is recorded as an attempt whose outcome is
unknown (`LOST_ATTEMPT_ERROR`) when its delivery is taken over, so a delivery's
attempts always list every number its `attempts` count gave out. A claim is one guarded `UPDATE … WHERE <still claimable> RETURNING`,
which is race-free on both databases; on PostgreSQL the candidates are picked
`FOR UPDATE SKIP LOCKED` so concurrent dispatchers never wait on each other.

Recording a batch of attempts is one transaction: the attempts, the deliveries'
new states, the endpoints' failure clocks, disabling, and the operational events
(`webhook.failed`, `endpoint.disabled`) that follow from them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.engine import Connection, Engine

from relay.db import as_utc
from relay.models.webhooks import AttemptTrigger, DeliveryStatus, WebhookAttempt
from relay.webhooks.policy import GONE, RetryPolicy
from relay.webhooks.publish import (
    deliveries_table as D,
)
from relay.webhooks.publish import (
    endpoints_table as E,
)
from relay.webhooks.publish import (
    events_table as V,
)
from relay.webhooks.publish import (
    publish_in,
)

A = WebhookAttempt.__table__  # type: ignore[attr-defined]

WEBHOOK_FAILED = "webhook.failed"
ENDPOINT_DISABLED = "endpoint.disabled"
# Events about delivery itself never cause more of themselves (no failure ping-pong).
OPERATIONAL_EVENTS = frozenset({WEBHOOK_FAILED, ENDPOINT_DISABLED})
# The error of an attempt whose request may or may not have reached the endpoint: its
# worker was lost before recording it. The real outcome replaces it if that worker
# turns out to be alive and records it after all.
LOST_ATTEMPT_ERROR = "outcome unknown: the worker making this attempt was lost"
RESPONSE_BODY_LIMIT = 4096
ERROR_LIMIT = 1000
_RATE_RESERVE_TRIES = 3


@dataclass
class EndpointInfo:
    id: uuid.UUID
    url: str
    headers: dict[str, str]
    secret: str
    old_secrets: list[dict[str, str]]
    active: bool
    rate_limit: int | None


@dataclass
class Job:
    """A claimed delivery, ready to be attempted."""

    delivery_id: uuid.UUID
    endpoint: EndpointInfo
    event_id: uuid.UUID
    event_type: str
    attempt: int
    scheduled_attempts: int
    trigger: AttemptTrigger
    status: str


@dataclass
class EventBody:
    type: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease: one activity (`key`, the same for all its attempts) and its attempt.

    Temporal runs one attempt of an activity at a time and starts attempt n+1 only once
    it has given attempt n up, so attempt n+1 may take attempt n's leases back.
    """

    key: str
    attempt: int


@dataclass
class Claim:
    jobs: list[Job] = field(default_factory=list)
    events: dict[uuid.UUID, EventBody] = field(default_factory=dict)
    # Claimed deliveries whose previous attempt was never recorded (a lost worker): this
    # claim sends them again.
    resent: int = 0


@dataclass
class Outcome:
    job: Job
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Reschedule:
    """A failed delivery waiting for its next scheduled attempt."""

    delivery_id: uuid.UUID
    scheduled_attempts: int
    due: datetime


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as connection:
        yield connection


# What an attempt needs of a delivery it has just numbered (claimed or manual).
_ATTEMPT_COLUMNS = (
    D.c.id,
    D.c.endpoint_id,
    D.c.event_id,
    D.c.event_type,
    D.c.attempts,
    D.c.scheduled_attempts,
    D.c.status,
)


def _lease_free(now: datetime) -> Any:
    return or_(D.c.claimed_until.is_(None), D.c.claimed_until < now)


def _load_endpoints(connection: Connection, ids: set[uuid.UUID]) -> dict[uuid.UUID, EndpointInfo]:
    rows = connection.execute(
        select(
            E.c.id,
            E.c.url,
            E.c.headers,
            E.c.secret,
            E.c.old_secrets,
            E.c.is_active,
            E.c.deleted_at,
            E.c.rate_limit,
        ).where(E.c.id.in_(ids))
    )
    return {
        row.id: EndpointInfo(
            row.id,
            row.url,
            dict(row.headers or {}),
            row.secret,
            list(row.old_secrets or []),
            bool(row.is_active) and row.deleted_at is None,
            row.rate_limit,
        )
        for row in rows
    }


def _load_events(connection: Connection, ids: set[uuid.UUID]) -> dict[uuid.UUID, EventBody]:
    rows = connection.execute(
        select(V.c.id, V.c.type, V.c.data, V.c.created_at).where(V.c.id.in_(ids))
    )
    return {row.id: EventBody(row.type, row.data, as_utc(row.created_at)) for row in rows}  # type: ignore[arg-type]


def _reserve_rate(
    connection: Connection, endpoint: EndpointInfo, wanted: int, now: datetime
) -> int:
    """Take up to `wanted` of the endpoint's attempts for the current second, atomically."""
    if endpoint.rate_limit is None:
        return wanted
    window = int(now.timestamp())
    used_now = case((E.c.rate_window == window, E.c.rate_count), else_=0)
    take = min(wanted, endpoint.rate_limit)
    for _ in range(_RATE_RESERVE_TRIES):
        if take <= 0:
            return 0
        done = connection.execute(
            update(E)
            .where(E.c.id == endpoint.id, used_now + take <= E.c.rate_limit)
            .values(rate_count=used_now + take, rate_window=window)
        ).rowcount
        if done:
            return take
        row = connection.execute(
            select(E.c.rate_window, E.c.rate_count, E.c.rate_limit).where(E.c.id == endpoint.id)
        ).one()
        used = row.rate_count if row.rate_window == window else 0
        take = min(wanted, (row.rate_limit or 0) - used)
    return 0


def _fail_inactive(connection: Connection, ids: Sequence[uuid.UUID], now: datetime) -> None:
    if ids:
        connection.execute(
            update(D)
            .where(
                D.c.id.in_(ids),
                D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
            )
            .values(
                status=DeliveryStatus.FAILED.value,
                last_error="the endpoint is disabled",
                claimed_until=None,
                timer_held=False,
                updated_at=now,
            )
        )


def _record_lost(connection: Connection, ids: Sequence[uuid.UUID]) -> int:
    """Record every numbered attempt of these deliveries that has no record yet as lost.

    Returns how many deliveries had one. The lost attempt's start is the delivery's last
    change, which is when it was claimed.
    """
    if not ids:
        return 0
    rows = connection.execute(
        select(D.c.id, D.c.attempts, D.c.updated_at, E.c.url)
        .join(E, E.c.id == D.c.endpoint_id)
        .where(D.c.id.in_(ids))
    ).all()
    recorded = {
        (row.delivery_id, row.attempt)
        for row in connection.execute(
            select(A.c.delivery_id, A.c.attempt).where(A.c.delivery_id.in_(ids))
        )
    }
    lost: list[dict[str, Any]] = []
    deliveries = 0
    for row in rows:
        missing = [n for n in range(1, row.attempts + 1) if (row.id, n) not in recorded]
        deliveries += bool(missing)
        lost.extend(
            {
                "id": uuid.uuid4(),
                "delivery_id": row.id,
                "attempt": n,
                "trigger": AttemptTrigger.SCHEDULED.value,
                "url": row.url,
                "started_at": as_utc(row.updated_at),
                "duration_ms": 0,
                "status_code": None,
                "response_body": None,
                "error": LOST_ATTEMPT_ERROR,
            }
            for n in missing
        )
    if lost:
        connection.execute(insert(A), lost)
    return deliveries


def take_over_leases(engine: Engine, owner: LeaseOwner) -> int:
    """Free the leases earlier attempts of `owner`'s activity still hold; returns how many.

    Only the same activity's earlier attempts: Temporal gave them up before it started
    this one, while a lease of any other activity (another shard, a later attempt, a
    retry batch) belongs to someone who may be alive and is left to run out. Their
    unrecorded attempts are recorded as lost, and the deliveries are claimable at once.
    """
    if owner.attempt <= 1:
        return 0
    with transaction(engine) as connection:
        query = select(D.c.id).where(
            D.c.lease_owner == owner.key,
            D.c.lease_attempt < owner.attempt,
            D.c.claimed_until.is_not(None),
            D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(of=D)
        ids = [row.id for row in connection.execute(query)]
        return _release(connection, ids)


def release_lost(engine: Engine, owner: LeaseOwner, ids: Sequence[uuid.UUID]) -> int:
    """Give up `owner`'s leases whose requests were abandoned in flight (a cancelled pump).

    A lease a later attempt has taken over meanwhile is that attempt's: left alone.
    """
    if not ids:
        return 0
    with transaction(engine) as connection:
        query = select(D.c.id).where(
            D.c.id.in_(ids),
            D.c.lease_owner == owner.key,
            D.c.lease_attempt == owner.attempt,
            D.c.claimed_until.is_not(None),
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(of=D)
        return _release(connection, [row.id for row in connection.execute(query)])


def _release(connection: Connection, ids: Sequence[uuid.UUID]) -> int:
    if not ids:
        return 0
    _record_lost(connection, ids)
    return connection.execute(
        update(D)
        .where(
            D.c.id.in_(ids),
            D.c.claimed_until.is_not(None),
            D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
        )
        .values(claimed_until=None, lease_owner=None, lease_attempt=None)
    ).rowcount


def _finish_claim(
    connection: Connection,
    candidates: list[tuple[uuid.UUID, uuid.UUID]],
    condition: Any,
    *,
    now: datetime,
    lease_until: datetime,
    trigger: AttemptTrigger,
    owner: LeaseOwner | None = None,
) -> Claim:
    """Drop inactive endpoints' deliveries, apply rate limits, then take the leases."""
    if not candidates:
        return Claim()
    endpoints = _load_endpoints(connection, {endpoint_id for _, endpoint_id in candidates})
    by_endpoint: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    inactive: list[uuid.UUID] = []
    for delivery_id, endpoint_id in candidates:
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or not endpoint.active:
            inactive.append(delivery_id)
        else:
            by_endpoint[endpoint_id].append(delivery_id)
    _fail_inactive(connection, inactive, now)
    chosen: list[uuid.UUID] = []
    for endpoint_id, ids in by_endpoint.items():
        allowed = _reserve_rate(connection, endpoints[endpoint_id], len(ids), now)
        chosen.extend(ids[:allowed])
    if not chosen:
        return Claim()
    # A lease that ran out without being recorded or released: its attempt was lost.
    expired = [
        row.id
        for row in connection.execute(
            select(D.c.id).where(D.c.id.in_(chosen), D.c.claimed_until.is_not(None), condition)
        )
    ]
    resent = _record_lost(connection, expired)
    values: dict[str, Any] = {
        "claimed_until": lease_until,
        "lease_owner": owner.key if owner else None,
        "lease_attempt": owner.attempt if owner else None,
        "attempts": D.c.attempts + 1,
        "updated_at": now,
    }
    if trigger == AttemptTrigger.SCHEDULED:
        values["scheduled_attempts"] = D.c.scheduled_attempts + 1
    rows = connection.execute(
        update(D).where(D.c.id.in_(chosen), condition).values(**values).returning(*_ATTEMPT_COLUMNS)
    ).all()
    claim = Claim(resent=resent)
    claim.events = _load_events(connection, {row.event_id for row in rows})
    claim.jobs = [
        Job(
            row.id,
            endpoints[row.endpoint_id],
            row.event_id,
            row.event_type,
            row.attempts,
            row.scheduled_attempts,
            trigger,
            row.status,
        )
        for row in rows
    ]
    return claim


def claim_due(
    engine: Engine,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    sweep_grace: timedelta,
    busy_endpoints: Sequence[uuid.UUID] = (),
    owner: LeaseOwner | None = None,
) -> Claim:
    """Lease up to `limit` due deliveries: new ones, and retries nobody holds a timer for.

    A retry held on a dispatcher's Temporal timer is taken here only when it is
    `sweep_grace` overdue: that timer was lost (a crash between recording the
    failure and handing it over), and nothing may be stranded.
    """
    due = or_(
        and_(D.c.status == DeliveryStatus.PENDING.value, _lease_free(now)),
        and_(
            D.c.status == DeliveryStatus.RETRYING.value,
            _lease_free(now),
            D.c.next_attempt_at <= now,
            or_(D.c.timer_held.is_(False), D.c.next_attempt_at <= now - sweep_grace),
        ),
    )
    window = int(now.timestamp())
    saturated = select(E.c.id).where(
        E.c.rate_limit.is_not(None), E.c.rate_window == window, E.c.rate_count >= E.c.rate_limit
    )
    with transaction(engine) as connection:
        query = (
            select(D.c.id, D.c.endpoint_id)
            .where(
                D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
                due,
                D.c.endpoint_id.not_in(saturated),
            )
            .order_by(D.c.next_attempt_at)
            .limit(limit)
        )
        if busy_endpoints:
            query = query.where(D.c.endpoint_id.not_in(list(busy_endpoints)))
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=D)
        candidates = [(row.id, row.endpoint_id) for row in connection.execute(query)]
        return _finish_claim(
            connection,
            candidates,
            due,
            now=now,
            lease_until=now + lease,
            trigger=AttemptTrigger.SCHEDULED,
            owner=owner,
        )


def claim_retries(
    engine: Engine,
    held: Sequence[tuple[uuid.UUID, int]],
    *,
    now: datetime,
    lease: timedelta,
    owner: LeaseOwner | None = None,
) -> tuple[Claim, list[uuid.UUID]]:
    """Lease the retries a timer fired for: `(delivery id, scheduled attempts so far)`.

    A delivery whose count moved on (the sweep or a worker already attempted it),
    that was delivered by a manual retry, or is leased right now, is skipped. Ones
    held back by the endpoint's rate limit are returned as deferred: they are handed
    to the database sweep, due now.
    """
    by_count: dict[int, list[uuid.UUID]] = defaultdict(list)
    for delivery_id, count in held:
        by_count[count].append(delivery_id)
    claim = Claim()
    deferred: list[uuid.UUID] = []
    with transaction(engine) as connection:
        for count, ids in by_count.items():
            condition = and_(
                D.c.status == DeliveryStatus.RETRYING.value,
                D.c.scheduled_attempts == count,
                _lease_free(now),
            )
            query = select(D.c.id, D.c.endpoint_id).where(D.c.id.in_(ids), condition)
            if connection.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=D)
            candidates = [(row.id, row.endpoint_id) for row in connection.execute(query)]
            part = _finish_claim(
                connection,
                candidates,
                condition,
                now=now,
                lease_until=now + lease,
                trigger=AttemptTrigger.SCHEDULED,
                owner=owner,
            )
            claim.jobs.extend(part.jobs)
            claim.resent += part.resent
            claim.events.update(part.events)
            claimed = {job.delivery_id for job in part.jobs}
            deferred.extend(d for d, _ in candidates if d not in claimed)
        if deferred:
            connection.execute(
                update(D)
                .where(D.c.id.in_(deferred), D.c.status == DeliveryStatus.RETRYING.value)
                .values(timer_held=False, next_attempt_at=now, updated_at=now)
            )
    return claim, deferred


def claim_manual(engine: Engine, delivery_id: uuid.UUID, *, now: datetime) -> Claim | None:
    """Number a manual attempt of any delivery (no lease: it does not take the schedule's turn)."""
    with transaction(engine) as connection:
        row = connection.execute(
            update(D)
            .where(D.c.id == delivery_id)
            .values(attempts=D.c.attempts + 1, updated_at=now)
            .returning(*_ATTEMPT_COLUMNS)
        ).first()
        if row is None:
            return None
        endpoints = _load_endpoints(connection, {row.endpoint_id})
        claim = Claim(events=_load_events(connection, {row.event_id}))
        claim.jobs.append(
            Job(
                row.id,
                endpoints[row.endpoint_id],
                row.event_id,
                row.event_type,
                row.attempts,
                row.scheduled_attempts,
                AttemptTrigger.MANUAL,
                row.status,
            )
        )
        return claim


@dataclass
class Recorded:
    reschedules: list[Reschedule] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    disabled_endpoints: list[uuid.UUID] = field(default_factory=list)


def record_outcomes(
    engine: Engine,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    policy: RetryPolicy,
    timer_held: bool,
) -> Recorded:
    """Record a batch of attempts and everything that follows from them, in one transaction.

    `timer_held` says whether the caller hands the resulting retries to a
    dispatcher's Temporal timers (otherwise the database sweep takes them when due).
    """
    recorded = Recorded()
    if not outcomes:
        return recorded
    with transaction(engine) as connection:
        # A worker taken for lost that was alive after all: its real outcome replaces the
        # "outcome unknown" its successor recorded for it.
        connection.execute(
            delete(A).where(
                tuple_(A.c.delivery_id, A.c.attempt).in_(
                    [(o.job.delivery_id, o.job.attempt) for o in outcomes]
                ),
                A.c.error == LOST_ATTEMPT_ERROR,
            )
        )
        connection.execute(
            insert(A),
            [
                {
                    "id": uuid.uuid4(),
                    "delivery_id": outcome.job.delivery_id,
                    "attempt": outcome.job.attempt,
                    "trigger": outcome.job.trigger.value,
                    "url": outcome.job.endpoint.url,
                    "started_at": outcome.started_at,
                    "duration_ms": outcome.duration_ms,
                    "status_code": outcome.status_code,
                    "response_body": outcome.response_body,
                    "error": (outcome.error or None) and outcome.error[:ERROR_LIMIT],
                }
                for outcome in outcomes
            ],
        )

        # Endpoints: any success stops the failure clock; failures start it.
        succeeded = {o.job.endpoint.id for o in outcomes if o.ok}
        failing = {o.job.endpoint.id for o in outcomes if not o.ok} - succeeded
        if succeeded:
            connection.execute(
                update(E)
                .where(E.c.id.in_(succeeded))
                .values(failing_since=None, last_triggered_at=now)
            )
        disable: dict[uuid.UUID, str] = {}
        if failing:
            first_failure = min(o.started_at for o in outcomes if not o.ok)
            connection.execute(
                update(E)
                .where(E.c.id.in_(failing))
                .values(
                    failing_since=func.coalesce(E.c.failing_since, first_failure),
                    last_triggered_at=now,
                )
            )
            gone = {o.job.endpoint.id for o in outcomes if o.status_code == GONE and not o.ok}
            rows = connection.execute(
                select(E.c.id, E.c.failing_since, E.c.is_active, E.c.deleted_at).where(
                    E.c.id.in_(failing)
                )
            )
            inactive: set[uuid.UUID] = set()
            for row in rows:
                if not row.is_active or row.deleted_at is not None:
                    inactive.add(row.id)
                elif row.id in gone:
                    disable[row.id] = "the endpoint answered 410 Gone"
                elif (since := as_utc(row.failing_since)) and now - since >= policy.disable_after:
                    disable[row.id] = f"failing continuously since {since.isoformat()}"
        else:
            inactive = set()
        stopped = inactive | set(disable)

        # Deliveries.
        delivered = [o for o in outcomes if o.ok]
        for status_code in {o.status_code for o in delivered}:
            ids = [o.job.delivery_id for o in delivered if o.status_code == status_code]
            connection.execute(
                update(D)
                .where(D.c.id.in_(ids))
                .values(
                    status=DeliveryStatus.DELIVERED.value,
                    # A late duplicate success does not move the first one.
                    delivered_at=func.coalesce(D.c.delivered_at, now),
                    last_status_code=status_code,
                    last_error=None,
                    claimed_until=None,
                    timer_held=False,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
        recorded.delivered = len(delivered)

        changes: list[dict[str, Any]] = []
        exhausted: list[Outcome] = []
        for outcome in outcomes:
            if outcome.ok:
                continue
            job = outcome.job
            error = _describe(outcome)
            if job.trigger == AttemptTrigger.MANUAL:
                # A manual attempt leaves the delivery's schedule (and status) alone.
                connection.execute(
                    update(D)
                    .where(D.c.id == job.delivery_id)
                    .values(last_status_code=outcome.status_code, last_error=error, updated_at=now)
                )
                continue
            delay = None
            if job.endpoint.id not in stopped:
                delay = policy.next_delay(
                    job.scheduled_attempts, outcome.status_code, outcome.retry_after
                )
            if delay is None:
                if job.endpoint.id not in stopped:
                    exhausted.append(outcome)
                changes.append(
                    {
                        "b_id": job.delivery_id,
                        "b_status": DeliveryStatus.FAILED.value,
                        "b_next": None,
                        "b_held": False,
                        "b_code": outcome.status_code,
                        "b_error": error,
                    }
                )
                recorded.failed += 1
            else:
                due = now + delay
                changes.append(
                    {
                        "b_id": job.delivery_id,
                        "b_status": DeliveryStatus.RETRYING.value,
                        "b_next": due,
                        "b_held": timer_held,
                        "b_code": outcome.status_code,
                        "b_error": error,
                    }
                )
                recorded.reschedules.append(
                    Reschedule(job.delivery_id, job.scheduled_attempts, due)
                )
        if changes:
            # A failure never overwrites a success another attempt already recorded.
            connection.execute(
                update(D)
                .where(D.c.id == bindparam("b_id"), D.c.status != DeliveryStatus.DELIVERED.value)
                .values(
                    status=bindparam("b_status"),
                    next_attempt_at=bindparam("b_next"),
                    timer_held=bindparam("b_held"),
                    last_status_code=bindparam("b_code"),
                    last_error=bindparam("b_error"),
                    claimed_until=None,
                    updated_at=now,
                ),
                changes,
            )

        for outcome in exhausted:
            if outcome.job.event_type in OPERATIONAL_EVENTS:
                continue
            job = outcome.job
            publish_in(
                connection,
                WEBHOOK_FAILED,
                {
                    "deliveryId": str(job.delivery_id),
                    "endpointId": str(job.endpoint.id),
                    "eventId": str(job.event_id),
                    "eventType": job.event_type,
                    "attempts": job.attempt,
                    "lastStatusCode": outcome.status_code,
                    "lastError": _describe(outcome),
                },
                idempotency_key=f"{WEBHOOK_FAILED}:{job.delivery_id}",
                exclude_endpoint_id=job.endpoint.id,
                now=now,
            )
        for endpoint_id, reason in disable.items():
            disable_endpoint(connection, endpoint_id, reason, now=now)
        recorded.disabled_endpoints = list(disable)
    return recorded


def disable_endpoint(
    connection: Connection,
    endpoint_id: uuid.UUID,
    reason: str,
    *,
    now: datetime,
    publish: bool = True,
) -> None:
    """Disable an endpoint, end its waiting deliveries as FAILED, publish endpoint.disabled."""
    row = connection.execute(
        update(E)
        .where(E.c.id == endpoint_id, E.c.is_active.is_(True))
        .values(is_active=False, disabled_at=now, disabled_reason=reason[:200], updated_at=now)
        .returning(E.c.url, E.c.failing_since)
    ).first()
    if row is None:
        return
    connection.execute(
        update(D)
        .where(
            D.c.endpoint_id == endpoint_id,
            D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
        )
        .values(
            status=DeliveryStatus.FAILED.value,
            last_error="the endpoint was disabled",
            timer_held=False,
            updated_at=now,
        )
    )
    if not publish:
        return
    since = as_utc(row.failing_since)
    publish_in(
        connection,
        ENDPOINT_DISABLED,
        {
            "endpointId": str(endpoint_id),
            "url": row.url,
            "reason": reason,
            "failingSince": since.isoformat() if since else None,
            "disabledAt": now.isoformat(),
        },
        idempotency_key=f"{ENDPOINT_DISABLED}:{endpoint_id}:{now.isoformat()}",
        exclude_endpoint_id=endpoint_id,
        now=now,
    )


def requeue_failed(engine: Engine, endpoint_id: uuid.UUID, since: datetime, now: datetime) -> int:
    """Recover: every FAILED delivery of the endpoint created since `since` is PENDING again."""
    with transaction(engine) as connection:
        return connection.execute(
            update(D)
            .where(
                D.c.endpoint_id == endpoint_id,
                D.c.status == DeliveryStatus.FAILED.value,
                D.c.created_at >= since,
            )
            .values(
                status=DeliveryStatus.PENDING.value,
                scheduled_attempts=0,
                next_attempt_at=now,
                timer_held=False,
                claimed_until=None,
                updated_at=now,
            )
        ).rowcount


def release_timers(engine: Engine, ids: Sequence[uuid.UUID]) -> None:
    """Retries no timer holds after all: the sweep takes them as soon as they are due."""
    with transaction(engine) as connection:
        connection.execute(
            update(D)
            .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.RETRYING.value)
            .values(timer_held=False)
        )


def delivery_status(engine: Engine, delivery_id: uuid.UUID) -> str:
    with engine.connect() as connection:
        return str(connection.execute(select(D.c.status).where(D.c.id == delivery_id)).scalar_one())


def _describe(outcome: Outcome) -> str:
    if outcome.error:
        return outcome.error[:ERROR_LIMIT]
    return f"HTTP {outcome.status_code}"
