"""Lease ownership against a real database (SQLite and PostgreSQL): a retried pump takes
back only its own lost attempt's leases, and every numbered attempt stays listed."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.db import utcnow
from relay.webhooks import outbox
from relay.webhooks.outbox import LOST_ATTEMPT_ERROR, Claim, LeaseOwner, Outcome
from relay.webhooks.policy import RetryPolicy
from relay.webhooks.publish import publish_event
from tests.webhooks.helpers import D, attempts_of, create_endpoint

LEASE = timedelta(seconds=60)
POLICY = RetryPolicy([timedelta(seconds=5)], timedelta(days=5))
SHARD = LeaseOwner("webhook-dispatch/run-1/1", 1)


def claim(engine: Engine, owner: LeaseOwner | None, limit: int, *, later: float = 0) -> Claim:
    return outbox.claim_due(
        engine,
        now=utcnow() + timedelta(seconds=later),
        lease=LEASE,
        limit=limit,
        sweep_grace=timedelta(seconds=60),
        owner=owner,
    )


def record(engine: Engine, claimed: Claim, status: int) -> None:
    outcomes = [
        Outcome(job, started_at=utcnow(), duration_ms=1, status_code=status) for job in claimed.jobs
    ]
    outbox.record_outcomes(engine, outcomes, now=utcnow(), policy=POLICY, timer_held=True)


def delivery(engine: Engine, delivery_id: uuid.UUID):  # noqa: ANN201
    with engine.connect() as connection:
        return connection.execute(select(D).where(D.c.id == delivery_id)).one()


def publish(engine: Engine, keyring: Keyring, count: int) -> None:
    create_endpoint(engine, keyring, "https://hooks.example/h", ["lease.*"])
    for n in range(count):
        publish_event(engine, "lease.created", {"n": n})


def test_next_attempt_takes_back_only_its_predecessors_leases(
    engine: Engine, keyring: Keyring
) -> None:
    publish(engine, keyring, 6)
    lost = claim(engine, SHARD, 2)  # attempt 1 dies with these in flight
    other_shard = claim(engine, LeaseOwner("webhook-dispatch-1/run-9/1", 1), 2)
    later_attempt = claim(engine, LeaseOwner(SHARD.key, 3), 2)
    assert len(lost.jobs) == len(other_shard.jobs) == len(later_attempt.jobs) == 2

    assert outbox.take_over_leases(engine, LeaseOwner(SHARD.key, 1)) == 0  # a first attempt
    assert outbox.take_over_leases(engine, LeaseOwner(SHARD.key, 2)) == 2

    for job in lost.jobs:
        row = delivery(engine, job.delivery_id)
        assert row.claimed_until is None and row.attempts == 1
        [unknown] = attempts_of(engine, job.delivery_id)
        assert (unknown.attempt, unknown.status_code, unknown.error) == (
            1,
            None,
            LOST_ATTEMPT_ERROR,
        )
    for job in other_shard.jobs + later_attempt.jobs:  # someone alive may hold these
        assert delivery(engine, job.delivery_id).claimed_until is not None
        assert attempts_of(engine, job.delivery_id) == []

    # Sent again at once (no waiting for the lease), and the record tells both attempts.
    again = claim(engine, LeaseOwner(SHARD.key, 2), 10)
    assert {j.delivery_id for j in again.jobs} == {j.delivery_id for j in lost.jobs}
    assert again.resent == 0  # already counted by the take-over
    record(engine, again, 200)
    for job in lost.jobs:
        row = delivery(engine, job.delivery_id)
        attempts = attempts_of(engine, job.delivery_id)
        assert row.status == "DELIVERED" and row.attempts == 2
        assert [(a.attempt, a.status_code) for a in attempts] == [(1, None), (2, 200)]


def test_a_lost_worker_that_was_alive_records_the_truth_over_unknown(
    engine: Engine, keyring: Keyring
) -> None:
    publish(engine, keyring, 2)
    zombie = claim(engine, SHARD, 2)
    outbox.take_over_leases(engine, LeaseOwner(SHARD.key, 2))
    successor = claim(engine, LeaseOwner(SHARD.key, 2), 10)
    record(engine, successor, 200)
    record(engine, zombie, 500)  # late, and a failure: it replaces "unknown", not the success
    for job in zombie.jobs:
        row = delivery(engine, job.delivery_id)
        attempts = attempts_of(engine, job.delivery_id)
        assert row.status == "DELIVERED" and row.attempts == 2
        assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
            (1, 500, None),
            (2, 200, None),
        ]


def test_a_lease_that_ran_out_unrecorded_is_listed_as_lost_when_claimed_again(
    engine: Engine, keyring: Keyring
) -> None:
    publish(engine, keyring, 3)
    first = claim(engine, None, 3)
    again = claim(engine, None, 3, later=LEASE.total_seconds() + 1)
    assert again.resent == 3
    record(engine, again, 204)
    for job in first.jobs:
        attempts = attempts_of(engine, job.delivery_id)
        assert delivery(engine, job.delivery_id).attempts == len(attempts) == 2
        assert attempts[0].error == LOST_ATTEMPT_ERROR and attempts[1].status_code == 204


def test_a_cancelled_pump_releases_only_leases_still_its_own(
    engine: Engine, keyring: Keyring
) -> None:
    publish(engine, keyring, 2)
    first = claim(engine, SHARD, 2)
    abandoned, taken = (job.delivery_id for job in first.jobs)
    # Attempt 2 took both over and sends them again, while attempt 1 was still stopping.
    successor = LeaseOwner(SHARD.key, 2)
    outbox.take_over_leases(engine, successor)
    assert len(claim(engine, successor, 10).jobs) == 2
    # Attempt 1, cancelled, gives up what it had in flight: nothing of it is its own now.
    assert outbox.release_lost(engine, SHARD, [abandoned, taken]) == 0
    # Attempt 2, cancelled with one of them in flight, frees that one for the next claim.
    assert outbox.release_lost(engine, successor, [abandoned]) == 1
    assert delivery(engine, abandoned).claimed_until is None
    assert delivery(engine, taken).lease_attempt == 2
    assert [a.error for a in attempts_of(engine, abandoned)] == [LOST_ATTEMPT_ERROR] * 2
    assert [j.delivery_id for j in claim(engine, LeaseOwner(SHARD.key, 3), 10).jobs] == [abandoned]
