"""The provider-call ledger: each side effect at a provider happens at most once per key.

Temporal retries an activity after a crash, a timeout or a lost worker, so an
activity that charges a card or sends an SMS must not act twice. Where the
provider honours an idempotency key (Stripe), Relay sends one; the ledger covers
every provider, whether it does or not:

1. **Reserve** the business key (`payment-123:charge`) in `provider_calls`, with a lease.
2. **Call** the provider.
3. **Record** the result (SUCCEEDED with its JSON result, or FAILED with a Relay code).

A retry with the same key then finds:

- SUCCEEDED → the recorded result, without calling again;
- FAILED → the recorded permanent failure, raised again (non-retryable);
- RESERVED, lease still running → another attempt is calling right now: a
  retryable failure that waits out the lease;
- RESERVED, lease expired → an attempt crashed between reserve and record, so
  the outcome is unknown. A *repeatable* call (the provider deduplicates on the
  key Relay sends, or the operation is naturally idempotent) takes the
  reservation over and calls again. Any other call is marked UNKNOWN and raises
  a non-retryable `UNKNOWN_OUTCOME` failure: the workflow reconciles with the
  provider or an operator decides; Relay never guesses that a charge did not happen.
- UNKNOWN (or an expired lease) for a call given a `reconcile` function → the next
  attempt asks the provider what happened (Zoom's meeting list, say): the result it
  finds is recorded as the call's, and only a provider that shows no trace is called
  again. An ambiguous failure of such a call is retried after `IN_PROGRESS_RETRY`
  instead of ending the run, so a request still in flight has landed before the
  provider is asked.

`run_many` does the same for a batch of calls (the notification pump's): one transaction
reserves every key that is new, the calls run concurrently, and one transaction records
every outcome; a key seen before takes `run`'s path for that key alone.

Transient failures release the reservation when the provider answered (429, 5xx:
it did not act) or the connection was never opened (refused, DNS, TLS), so
Temporal's retry calls again. A timeout or a dropped connection of a
non-repeatable call is ambiguous and is recorded UNKNOWN. An attempt that finds
the call in progress is retried after at most `IN_PROGRESS_RETRY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from relay.db import utcnow
from relay.errors import ErrorCode
from relay.models.platform import ProviderCall, ProviderCallStatus
from relay.provider_errors import translate

DEFAULT_LEASE = timedelta(minutes=5)
# How soon an attempt that found the call in progress looks again: the holder usually
# finishes in well under a second, so waiting out the whole lease would stall the run.
IN_PROGRESS_RETRY = timedelta(seconds=2)
_RESERVE_ATTEMPTS = 3

log = logging.getLogger("relay.ledger")
_CALLS = ProviderCall.__table__  # type: ignore[attr-defined]

JSON = Any
# Reads the provider for the call's effect since the first attempt was reserved: its
# result when the call took effect, None when the provider shows no trace of it. It
# raises when the provider's answer is ambiguous (two candidates): UNKNOWN it stays.
Reconcile = Callable[[datetime], Awaitable[JSON | None]]


class Ledger:
    """Runs provider calls under the reserve / call / record protocol above."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease: timedelta = DEFAULT_LEASE,
        in_progress_retry: timedelta = IN_PROGRESS_RETRY,
    ) -> None:
        self._engine = engine
        self._lease = lease
        self._in_progress_retry = in_progress_retry

    async def run(
        self,
        key: str,
        call: Callable[[], Awaitable[JSON]],
        *,
        provider: str,
        operation: str,
        repeatable: bool = False,
        reconcile: Reconcile | None = None,
    ) -> JSON:
        reserved = await self._reserve_shielded(
            key, provider, operation, repeatable, reconciles=reconcile is not None
        )
        if isinstance(reserved, _Recorded):
            return reserved.value
        if isinstance(reserved, _Reconciling):
            assert reconcile is not None
            found = await self._reconcile(key, reserved, reconcile, provider)
            if not isinstance(found, _NoTrace):
                return found
            attempt = reserved.attempt
        else:
            attempt = reserved
        try:
            result = await call()
        except BaseException as exc:
            failure = translate(provider, exc)
            if failure.non_retryable:
                await asyncio.to_thread(
                    self._finish, key, attempt, ProviderCallStatus.FAILED, None, failure
                )
            elif repeatable or _provider_did_not_act(failure):
                await asyncio.to_thread(self._release, key, attempt)
            else:
                await asyncio.to_thread(
                    self._finish, key, attempt, ProviderCallStatus.UNKNOWN, None, failure
                )
                if isinstance(exc, Exception):
                    if reconcile is not None:
                        raise self._reconcile_later(key, provider, operation) from exc
                    raise _unknown(key) from exc
            # Cancellation and interpreter exits propagate as themselves.
            if not isinstance(exc, Exception) or failure is exc:
                raise
            raise failure from exc
        await asyncio.to_thread(
            self._finish, key, attempt, ProviderCallStatus.SUCCEEDED, result, None
        )
        return result

    async def run_many(
        self,
        calls: Sequence[tuple[str, Callable[[], Awaitable[JSON]]]],
        *,
        provider: str,
        operation: str,
    ) -> list[JSON | ApplicationError]:
        """`run` for many keys at once, one result (or the failure `run` would raise) per
        call in order. Reserving and recording are one transaction each for the batch."""
        keys = [key for key, _ in calls]
        reserved = await asyncio.to_thread(self._reserve_new, keys, provider, operation)

        async def one(key: str, call: Callable[[], Awaitable[JSON]]) -> JSON | ApplicationError:
            try:
                return await call()
            except Exception as exc:  # classified below, as `run` does
                return _Raised(exc)

        pending = [(key, call) for key, call in calls if key in reserved]
        answers = await asyncio.gather(*(one(key, call) for key, call in pending))
        outcomes: dict[str, JSON | ApplicationError] = {}
        writes: list[tuple[str, ProviderCallStatus | None, JSON, ApplicationError | None]] = []
        for (key, _), answer in zip(pending, answers, strict=True):
            if not isinstance(answer, _Raised):
                writes.append((key, ProviderCallStatus.SUCCEEDED, answer, None))
                outcomes[key] = answer
                continue
            failure = translate(provider, answer.exc)
            if failure.non_retryable:
                writes.append((key, ProviderCallStatus.FAILED, None, failure))
                outcomes[key] = failure
            elif _provider_did_not_act(failure):
                writes.append((key, None, None, None))  # released
                outcomes[key] = failure
            else:
                writes.append((key, ProviderCallStatus.UNKNOWN, None, failure))
                outcomes[key] = _unknown(key)
        if writes:
            await asyncio.to_thread(self._finish_many, writes)
        # Keys seen before: each on `run`'s own path (recorded result, in progress, unknown).
        for key, call in calls:
            if key in reserved:
                continue
            try:
                outcomes[key] = await self.run(key, call, provider=provider, operation=operation)
            except ApplicationError as exc:
                outcomes[key] = exc
        return [outcomes[key] for key in keys]

    def _reserve_new(self, keys: list[str], provider: str, operation: str) -> set[str]:
        """Insert a reservation for every key not yet in the ledger; the keys inserted."""
        if not keys:
            return set()
        now = utcnow()
        rows = [
            {
                "id": uuid.uuid4(),
                "idempotency_key": key,
                "provider": provider,
                "operation": operation,
                "status": ProviderCallStatus.RESERVED.value,
                "attempts": 1,
                "reserved_until": now + self._lease,
                "created_at": now,
            }
            for key in keys
        ]
        with self._engine.begin() as connection:
            dialect = connection.dialect.name
            upsert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            statement = (
                upsert(_CALLS)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(_CALLS.c.idempotency_key)
            )
            return set(connection.execute(statement).scalars())

    def _finish_many(
        self, writes: list[tuple[str, ProviderCallStatus | None, JSON, ApplicationError | None]]
    ) -> None:
        """Record (or, status None, release) the batch's first attempts in one transaction."""
        now = utcnow()
        with self._engine.begin() as connection:
            released = [key for key, status, _, _ in writes if status is None]
            if released:
                connection.execute(
                    delete(_CALLS)
                    .where(_CALLS.c.idempotency_key.in_(released))
                    .where(_CALLS.c.attempts == 1)
                    .where(_CALLS.c.status == ProviderCallStatus.RESERVED.value)
                )
            recorded = [
                {
                    "key": key,
                    "new_status": status.value,
                    "new_result": result,
                    "new_error_code": failure.type if failure else None,
                    "new_error_message": failure.message[:1000] if failure else None,
                    "now": now,
                }
                for key, status, result, failure in writes
                if status is not None
            ]
            if recorded:
                connection.execute(
                    update(_CALLS)
                    .where(_CALLS.c.idempotency_key == bindparam("key"))
                    .where(_CALLS.c.attempts == 1)
                    .where(_CALLS.c.status == ProviderCallStatus.RESERVED.value)
                    .values(
                        status=bindparam("new_status"),
                        result=bindparam("new_result"),
                        error_code=bindparam("new_error_code"),
                        error_message=bindparam("new_error_message"),
                        completed_at=bindparam("now"),
                    ),
                    recorded,
                )

    async def _reconcile(
        self, key: str, reserved: _Reconciling, reconcile: Reconcile, provider: str
    ) -> JSON | _NoTrace:
        """Ask the provider what the earlier attempt did, holding the reservation: the
        recorded result when it acted, `_NoTrace` when it did not (the caller calls)."""
        try:
            found = await reconcile(reserved.since)
        except BaseException as exc:
            # Still unknown: back to UNKNOWN for the next attempt (or an operator).
            await asyncio.to_thread(self._mark_unknown, key, reserved.attempt)
            if not isinstance(exc, Exception):
                raise
            failure = exc if isinstance(exc, ApplicationError) else translate(provider, exc)
            raise failure from exc
        if found is None:
            log.info("provider call %s left no trace at the provider; calling again", key)
            return _NoTrace()
        log.info("provider call %s had taken effect; its result is recorded", key)
        await asyncio.to_thread(
            self._finish, key, reserved.attempt, ProviderCallStatus.SUCCEEDED, found, None
        )
        return found

    def _reconcile_later(self, key: str, provider: str, operation: str) -> ApplicationError:
        return ApplicationError(
            f"{provider} {operation} has an unknown outcome; the next attempt reconciles",
            {"idempotencyKey": key},
            type=_IN_PROGRESS,
            next_retry_delay=self._in_progress_retry,
        )

    def _mark_unknown(self, key: str, attempt: int) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(ProviderCall)
                .where(ProviderCall.idempotency_key == key)  # type: ignore[arg-type]
                .where(ProviderCall.attempts == attempt)  # type: ignore[arg-type]
                .where(ProviderCall.status == ProviderCallStatus.RESERVED)  # type: ignore[arg-type]
                .values(status=ProviderCallStatus.UNKNOWN)
            )
            session.commit()

    async def _reserve_shielded(
        self,
        key: str,
        provider: str,
        operation: str,
        repeatable: bool,
        *,
        reconciles: bool = False,
    ) -> _Recorded | _Reconciling | int:
        """Reserve; if cancelled meanwhile, hand back a reservation nobody will use (the
        thread runs to the end regardless), so a later attempt calls instead of seeing
        an unknown outcome for a call that never happened."""
        reserving = asyncio.ensure_future(
            asyncio.to_thread(self._reserve, key, provider, operation, repeatable, reconciles)
        )
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                reserved = await reserving
                if isinstance(reserved, int):
                    await asyncio.to_thread(self._release, key, reserved)
                elif isinstance(reserved, _Reconciling):
                    await asyncio.to_thread(self._mark_unknown, key, reserved.attempt)
            raise

    def lookup(self, key: str) -> ProviderCall | None:
        with Session(self._engine) as session:
            return session.exec(
                select(ProviderCall).where(ProviderCall.idempotency_key == key)
            ).first()

    # Each step is its own short transaction, so a crash leaves a readable row behind.
    # `attempts` fences them: only the attempt holding the reservation records or releases.

    def _reserve(
        self, key: str, provider: str, operation: str, repeatable: bool, reconciles: bool = False
    ) -> _Recorded | _Reconciling | int:
        for _ in range(_RESERVE_ATTEMPTS):
            now = utcnow()
            with Session(self._engine) as session:
                session.add(
                    ProviderCall(
                        idempotency_key=key,
                        provider=provider,
                        operation=operation,
                        reserved_until=now + self._lease,
                    )
                )
                try:
                    session.commit()
                    return 1
                except IntegrityError:
                    session.rollback()
                row = session.exec(
                    select(ProviderCall).where(ProviderCall.idempotency_key == key)
                ).first()
                if row is None:  # released between our insert and this read: try again
                    continue
                return self._existing(
                    session, row, now, provider, operation, repeatable, reconciles
                )
        raise ApplicationError(
            f"{provider} {operation} is contended",
            {"idempotencyKey": key},
            type=_IN_PROGRESS,
            next_retry_delay=self._in_progress_retry,
        )

    def _existing(
        self,
        session: Session,
        row: ProviderCall,
        now: datetime,
        provider: str,
        operation: str,
        repeatable: bool,
        reconciles: bool = False,
    ) -> _Recorded | _Reconciling | int:
        key = row.idempotency_key
        if row.status == ProviderCallStatus.SUCCEEDED:
            return _Recorded(row.result)
        if row.status == ProviderCallStatus.FAILED:
            raise ApplicationError(
                row.error_message or f"{provider} {operation} failed earlier",
                {"provider": provider, "idempotencyKey": key},
                type=row.error_code or ErrorCode.PROVIDER_ERROR.value,
                non_retryable=True,
            )
        if row.status == ProviderCallStatus.UNKNOWN and not reconciles:
            raise _unknown(key)
        if row.status == ProviderCallStatus.RESERVED and row.reserved_until > now:
            raise ApplicationError(
                f"{provider} {operation} is already in progress",
                {"idempotencyKey": key},
                type=_IN_PROGRESS,
                next_retry_delay=min(row.reserved_until - now, self._in_progress_retry),
            )
        # The lease ran out (an earlier attempt crashed between reserve and record), or
        # the outcome is UNKNOWN and this call can reconcile it.
        attempt = row.attempts + 1
        taken = session.execute(
            update(ProviderCall)
            .where(ProviderCall.idempotency_key == key)  # type: ignore[arg-type]
            .where(ProviderCall.attempts == row.attempts)  # type: ignore[arg-type]
            .where(ProviderCall.status == row.status)  # type: ignore[arg-type]
            .values(
                status=(
                    ProviderCallStatus.RESERVED
                    if repeatable or reconciles
                    else ProviderCallStatus.UNKNOWN
                ),
                reserved_until=now + self._lease,
                attempts=attempt,
            )
        )
        session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise ApplicationError(
                f"{provider} {operation} was taken over by another attempt",
                {"idempotencyKey": key},
                type=_IN_PROGRESS,
                next_retry_delay=self._in_progress_retry,
            )
        if reconciles:
            return _Reconciling(attempt, row.created_at)
        if not repeatable:
            log.warning("provider call %s has an unknown outcome", key)
            raise _unknown(key)
        return attempt

    def _finish(
        self,
        key: str,
        attempt: int,
        status: ProviderCallStatus,
        result: JSON,
        failure: ApplicationError | None,
    ) -> None:
        with Session(self._engine) as session:
            recorded = session.execute(
                update(ProviderCall)
                .where(ProviderCall.idempotency_key == key)  # type: ignore[arg-type]
                .where(ProviderCall.attempts == attempt)  # type: ignore[arg-type]
                .where(ProviderCall.status == ProviderCallStatus.RESERVED)  # type: ignore[arg-type]
                .values(
                    status=status,
                    result=result,
                    error_code=failure.type if failure else None,
                    error_message=failure.message[:1000] if failure else None,
                    completed_at=utcnow(),
                )
            )
            session.commit()
        if recorded.rowcount != 1:  # type: ignore[attr-defined]
            # The lease ran out while calling and another attempt took the key over.
            log.warning("provider call %s finished after its lease; not recorded", key)

    def _release(self, key: str, attempt: int) -> None:
        with Session(self._engine) as session:
            session.execute(
                delete(ProviderCall)
                .where(ProviderCall.idempotency_key == key)  # type: ignore[arg-type]
                .where(ProviderCall.attempts == attempt)  # type: ignore[arg-type]
                .where(ProviderCall.status == ProviderCallStatus.RESERVED)  # type: ignore[arg-type]
            )
            session.commit()


_IN_PROGRESS = "CALL_IN_PROGRESS"


class _Raised:
    """A call's exception, carried out of `gather` to be classified."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class _Recorded:
    def __init__(self, value: JSON) -> None:
        self.value = value


class _Reconciling:
    """The reservation, taken over to ask the provider what the earlier attempt did."""

    def __init__(self, attempt: int, since: datetime) -> None:
        self.attempt = attempt
        self.since = since


class _NoTrace:
    """The provider shows no trace of the earlier attempt."""


def _provider_did_not_act(failure: ApplicationError) -> bool:
    """It answered with a transient status (429, 5xx), or the connection never opened."""
    details = failure.details[0] if failure.details else None
    if not isinstance(details, dict):
        return False
    return "status" in details or details.get("connected") is False


def _unknown(key: str) -> ApplicationError:
    return ApplicationError(
        "the outcome of an earlier attempt is unknown; reconcile with the provider",
        {"idempotencyKey": key},
        type=ErrorCode.UNKNOWN_OUTCOME.value,
        non_retryable=True,
    )
