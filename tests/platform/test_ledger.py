"""The provider-call ledger on SQLite and PostgreSQL, against a real local provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.db import utcnow
from relay.ledger import Ledger
from relay.models.platform import ProviderCall, ProviderCallStatus
from relay.provider_errors import raise_for_status
from tests.conftest import eventually, free_port, task_queue
from tests.platform.conftest import FakeProvider, Reply
from tests.support.ledger import ChargeActivities, ChargeInput, ChargeWorkflow


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def _key() -> str:
    return f"payment-{uuid.uuid4().hex[:8]}:charge"


def _charge(http: httpx.AsyncClient, url: str, *, timeout: float | None = None) -> Any:
    async def call() -> Any:
        response = await http.post(url, timeout=timeout or 5)
        raise_for_status("acme", response.status_code, headers=response.headers)
        return response.json()

    return call


async def test_records_the_result_and_a_retry_does_not_call_again(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    call = _charge(http, provider.url_for("ok"))

    first = await ledger.run(key, call, provider="acme", operation="charge")
    second = await ledger.run(key, call, provider="acme", operation="charge")

    assert first == second == {"id": "ok-1"}
    assert provider.hits["ok"] == 1
    row = ledger.lookup(key)
    assert row is not None
    assert row.status == ProviderCallStatus.SUCCEEDED
    assert row.result == {"id": "ok-1"}
    assert (row.provider, row.operation, row.attempts) == ("acme", "charge", 1)
    assert row.completed_at is not None and row.completed_at.tzinfo is not None


async def test_a_recorded_none_is_still_a_recorded_result(
    engine: Engine, provider: FakeProvider
) -> None:
    ledger, key, calls = Ledger(engine), _key(), []

    async def call() -> None:
        calls.append(1)

    assert await ledger.run(key, call, provider="acme", operation="notify") is None
    assert await ledger.run(key, call, provider="acme", operation="notify") is None
    assert calls == [1]


async def test_permanent_4xx_is_recorded_failed_and_raised_again_without_calling(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    provider.plan("declined", Reply(402, body={"error": "card_declined"}))
    call = _charge(http, provider.url_for("declined"))

    with pytest.raises(ApplicationError) as first:
        await ledger.run(key, call, provider="acme", operation="charge")
    with pytest.raises(ApplicationError) as again:
        await ledger.run(key, call, provider="acme", operation="charge")

    for failure in (first.value, again.value):
        assert failure.non_retryable is True
        assert failure.type == "PROVIDER_ERROR"
        assert "HTTP 402" in failure.message
    assert provider.hits["declined"] == 1
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.FAILED
    assert row.error_code == "PROVIDER_ERROR"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_answers_release_the_reservation(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient, status: int
) -> None:
    ledger, key, name = Ledger(engine), _key(), f"flaky{status}"
    provider.plan(name, Reply(status, {"Retry-After": "3"}))
    call = _charge(http, provider.url_for(name))

    with pytest.raises(ApplicationError) as caught:
        await ledger.run(key, call, provider="acme", operation="charge")
    assert caught.value.non_retryable is False
    assert caught.value.type == ("RATE_LIMITED" if status == 429 else "PROVIDER_ERROR")
    assert caught.value.next_retry_delay == timedelta(seconds=3)
    assert ledger.lookup(key) is None

    assert await ledger.run(key, call, provider="acme", operation="charge") == {"id": f"{name}-2"}
    assert provider.hits[name] == 2


async def test_connection_refused_releases_even_a_non_repeatable_call(
    engine: Engine, http: httpx.AsyncClient, provider: FakeProvider
) -> None:
    ledger, key = Ledger(engine), _key()
    closed = f"http://127.0.0.1:{free_port()}/charge"

    with pytest.raises(ApplicationError) as caught:
        await ledger.run(key, _charge(http, closed), provider="acme", operation="charge")

    assert caught.value.non_retryable is False
    assert ledger.lookup(key) is None
    result = await ledger.run(
        key, _charge(http, provider.url_for("later")), provider="acme", operation="charge"
    )
    assert result == {"id": "later-1"}


async def test_timeout_of_a_non_repeatable_call_is_an_unknown_outcome(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    provider.plan("hang", Reply(delay=2))
    call = _charge(http, provider.url_for("hang"), timeout=0.2)

    with pytest.raises(ApplicationError) as first:
        await ledger.run(key, call, provider="acme", operation="charge")
    with pytest.raises(ApplicationError) as again:
        await ledger.run(key, call, provider="acme", operation="charge")

    for failure in (first.value, again.value):
        assert failure.type == "UNKNOWN_OUTCOME"
        assert failure.non_retryable is True
    assert provider.hits["hang"] == 1
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.UNKNOWN
    assert row.error_message == "call to acme timed out"


async def test_timeout_of_a_repeatable_call_is_retried(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    provider.plan("hang-once", Reply(delay=2))
    call = _charge(http, provider.url_for("hang-once"), timeout=0.2)

    with pytest.raises(ApplicationError) as caught:
        await ledger.run(key, call, provider="acme", operation="get", repeatable=True)
    assert caught.value.non_retryable is False
    assert ledger.lookup(key) is None
    result = await ledger.run(key, call, provider="acme", operation="get", repeatable=True)
    assert result == {"id": "hang-once-2"}


def _crashed_reservation(engine: Engine, key: str, *, expired: bool) -> None:
    """What an attempt leaves behind when its worker dies between reserve and record."""
    offset = timedelta(minutes=-1) if expired else timedelta(minutes=4)
    with Session(engine) as session:
        session.add(
            ProviderCall(
                idempotency_key=key,
                provider="acme",
                operation="charge",
                reserved_until=utcnow() + offset,
            )
        )
        session.commit()


async def test_crash_between_reserve_and_record_repeatable_calls_again(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    _crashed_reservation(engine, key, expired=True)

    result = await ledger.run(
        key,
        _charge(http, provider.url_for("again")),
        provider="acme",
        operation="charge",
        repeatable=True,
    )

    assert result == {"id": "again-1"}
    row = ledger.lookup(key)
    assert row is not None
    assert (row.status, row.attempts) == (ProviderCallStatus.SUCCEEDED, 2)


async def test_crash_between_reserve_and_record_non_repeatable_is_unknown_outcome(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    _crashed_reservation(engine, key, expired=True)
    call = _charge(http, provider.url_for("never"))

    for _ in range(2):
        with pytest.raises(ApplicationError) as caught:
            await ledger.run(key, call, provider="acme", operation="charge")
        assert caught.value.type == "UNKNOWN_OUTCOME"
        assert caught.value.non_retryable is True

    assert provider.hits["never"] == 0
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.UNKNOWN


async def test_an_unanswered_call_is_reconciled_from_the_provider_not_made_again(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    provider.plan("lost", Reply(delay=1))
    call = _charge(http, provider.url_for("lost"), timeout=0.2)
    asked: list[object] = []

    async def reconcile(since: Any) -> Any:
        # What the provider shows: the charge the unanswered request made.
        asked.append(since)
        return {"id": "lost-1"} if provider.hits["lost"] else None

    with pytest.raises(ApplicationError) as first:
        await ledger.run(key, call, provider="acme", operation="charge", reconcile=reconcile)
    # Not the end of the run: the next attempt asks the provider.
    assert first.value.non_retryable is False
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.UNKNOWN

    result = await ledger.run(key, call, provider="acme", operation="charge", reconcile=reconcile)

    assert result == {"id": "lost-1"}
    assert provider.hits["lost"] == 1
    assert asked == [row.created_at]
    row = ledger.lookup(key)
    assert row is not None
    assert (row.status, row.result, row.attempts) == (
        ProviderCallStatus.SUCCEEDED,
        {"id": "lost-1"},
        2,
    )
    # Recorded: a later attempt neither reconciles nor calls.
    again = await ledger.run(key, call, provider="acme", operation="charge", reconcile=reconcile)
    assert again == {"id": "lost-1"} and len(asked) == 1


async def test_a_crashed_call_the_provider_shows_no_trace_of_is_made_again(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    _crashed_reservation(engine, key, expired=True)

    async def nothing_there(since: Any) -> None:
        return None

    result = await ledger.run(
        key,
        _charge(http, provider.url_for("fresh")),
        provider="acme",
        operation="charge",
        reconcile=nothing_there,
    )

    assert result == {"id": "fresh-1"}
    row = ledger.lookup(key)
    assert row is not None
    assert (row.status, row.attempts) == (ProviderCallStatus.SUCCEEDED, 2)


async def test_a_reconciliation_that_cannot_tell_leaves_the_outcome_unknown(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    _crashed_reservation(engine, key, expired=True)
    call = _charge(http, provider.url_for("unsure"))

    async def two_candidates(since: Any) -> None:
        raise ApplicationError("2 candidates", type="UNKNOWN_OUTCOME", non_retryable=True)

    async def unreachable(since: Any) -> None:
        raise httpx.ConnectError("refused")

    with pytest.raises(ApplicationError) as caught:
        await ledger.run(key, call, provider="acme", operation="charge", reconcile=two_candidates)
    assert (caught.value.type, caught.value.non_retryable) == ("UNKNOWN_OUTCOME", True)
    with pytest.raises(ApplicationError) as transient:
        await ledger.run(key, call, provider="acme", operation="charge", reconcile=unreachable)
    assert transient.value.non_retryable is False

    assert provider.hits["unsure"] == 0
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.UNKNOWN


async def test_live_lease_is_retryable_call_in_progress(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine, in_progress_retry=timedelta(seconds=2)), _key()
    _crashed_reservation(engine, key, expired=False)

    with pytest.raises(ApplicationError) as caught:
        await ledger.run(
            key,
            _charge(http, provider.url_for("busy")),
            provider="acme",
            operation="charge",
            repeatable=True,
        )

    assert caught.value.type == "CALL_IN_PROGRESS"
    assert caught.value.non_retryable is False
    assert caught.value.next_retry_delay == timedelta(seconds=2)
    assert provider.hits["busy"] == 0
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.RESERVED


async def test_concurrent_attempts_call_once(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key, answer = Ledger(engine), _key(), asyncio.Event()
    provider.plan("contended", Reply(body={"id": "ch_1"}, gate=answer))
    call = _charge(http, provider.url_for("contended"))

    attempts = [
        asyncio.create_task(ledger.run(key, call, provider="acme", operation="charge"))
        for _ in range(5)
    ]
    # Every attempt but the one calling the provider gives way while it calls.
    await eventually(lambda: sum(task.done() for task in attempts) == 4)
    answer.set()
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)

    assert provider.hits["contended"] == 1
    assert outcomes.count({"id": "ch_1"}) == 1
    failures = [o for o in outcomes if isinstance(o, ApplicationError)]
    assert len(failures) == 4
    assert all(f.type == "CALL_IN_PROGRESS" and not f.non_retryable for f in failures)
    assert await ledger.run(key, call, provider="acme", operation="charge") == {"id": "ch_1"}


async def test_a_late_attempt_cannot_release_or_record_over_its_successor(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    """The first attempt outlives its lease; the second takes over; the first's late
    503 must not delete the second's reservation."""
    ledger, key = Ledger(engine, lease=timedelta(milliseconds=200)), _key()
    answer_first, answer_second = asyncio.Event(), asyncio.Event()
    provider.plan(
        "late", Reply(503, gate=answer_first), Reply(body={"id": "ch_2"}, gate=answer_second)
    )
    call = _charge(http, provider.url_for("late"))

    def run() -> asyncio.Task[Any]:
        return asyncio.create_task(
            ledger.run(key, call, provider="acme", operation="charge", repeatable=True)
        )

    first = run()
    await eventually(lambda: provider.hits["late"] == 1)
    await asyncio.sleep(0.3)  # the first attempt's lease has run out; it is still calling
    second = run()
    await eventually(lambda: provider.hits["late"] == 2)

    answer_first.set()
    with pytest.raises(ApplicationError):
        await first
    row = ledger.lookup(key)
    assert row is not None and (row.status, row.attempts) == (ProviderCallStatus.RESERVED, 2)

    answer_second.set()
    assert await second == {"id": "ch_2"}
    row = ledger.lookup(key)
    assert row is not None and (row.status, row.attempts) == (ProviderCallStatus.SUCCEEDED, 2)


async def test_cancellation_propagates_and_leaves_the_outcome_unknown(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    provider.plan("cancelled", Reply(gate=asyncio.Event()))  # never answers
    task = asyncio.create_task(
        ledger.run(
            key, _charge(http, provider.url_for("cancelled")), provider="acme", operation="charge"
        )
    )
    await eventually(lambda: provider.hits["cancelled"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = ledger.lookup(key)
    assert row is not None and row.status == ProviderCallStatus.UNKNOWN


async def test_cancellation_while_reserving_gives_the_reservation_back(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    ledger, key = Ledger(engine), _key()
    call = _charge(http, provider.url_for("reserved-then-cancelled"))
    task = asyncio.create_task(ledger.run(key, call, provider="acme", operation="charge"))
    await asyncio.sleep(0)  # the reservation is under way in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert provider.hits["reserved-then-cancelled"] == 0
    assert ledger.lookup(key) is None
    # The next attempt calls: nothing was ever sent.
    assert await ledger.run(key, call, provider="acme", operation="charge") == {
        "id": "reserved-then-cancelled-1"
    }


async def test_an_application_error_raised_by_the_call_is_not_its_own_cause(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    """Temporal's failure converter walks __cause__; a self-cause recursed forever."""
    ledger, key = Ledger(engine), _key()
    provider.plan("gone", Reply(404))
    with pytest.raises(ApplicationError) as caught:
        await ledger.run(
            key, _charge(http, provider.url_for("gone")), provider="acme", operation="charge"
        )
    assert caught.value.__cause__ is not caught.value


async def test_concurrent_workflow_runs_with_one_key_call_the_provider_once(
    engine: Engine,
    provider: FakeProvider,
    http: httpx.AsyncClient,
    temporal_env: WorkflowEnvironment,
) -> None:
    queue, key = task_queue(), _key()
    provider.plan("workflow-charge", Reply(body={"id": "ch_wf"}, delay=1.0))
    activities = ChargeActivities(
        Ledger(engine, in_progress_retry=timedelta(milliseconds=200)), http
    )
    params = ChargeInput(key, provider.url_for("workflow-charge"))

    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[ChargeWorkflow],
        activities=[activities.charge],
    ):
        results = await asyncio.gather(
            *(
                temporal_env.client.execute_workflow(
                    ChargeWorkflow.run,
                    params,
                    id=f"charge-{uuid.uuid4().hex[:8]}",
                    task_queue=queue,
                )
                for _ in range(3)
            )
        )

    assert results == [{"id": "ch_wf"}] * 3
    assert provider.hits["workflow-charge"] == 1


async def test_run_many_reserves_and_records_a_batch_and_a_retry_calls_nothing_twice(
    engine: Engine, provider: FakeProvider, http: httpx.AsyncClient
) -> None:
    """Each outcome `run` would give, for a whole batch: a success recorded, a refusal
    recorded FAILED, a transient answer released, a timeout UNKNOWN; then the same batch
    again calls only the released one."""
    ledger = Ledger(engine)
    provider.plan("refused", Reply(402, body={"error": "no"}))
    provider.plan("busy", Reply(503))
    provider.plan("hang", Reply(delay=2))
    names = ["ok", "refused", "busy", "hang"]
    keys = {name: _key() for name in names}
    timeouts = {"hang": 0.2}

    def batch() -> list[tuple[str, Any]]:
        return [
            (keys[name], _charge(http, provider.url_for(name), timeout=timeouts.get(name)))
            for name in names
        ]

    first = await ledger.run_many(batch(), provider="acme", operation="charge")
    assert first[0] == {"id": "ok-1"}
    assert isinstance(first[1], ApplicationError) and first[1].non_retryable
    assert isinstance(first[2], ApplicationError) and not first[2].non_retryable
    assert isinstance(first[3], ApplicationError) and first[3].type == "UNKNOWN_OUTCOME"
    statuses = {name: getattr(ledger.lookup(keys[name]), "status", None) for name in names}
    assert statuses == {
        "ok": ProviderCallStatus.SUCCEEDED,
        "refused": ProviderCallStatus.FAILED,
        "busy": None,  # released: the provider did not act
        "hang": ProviderCallStatus.UNKNOWN,
    }

    again = await ledger.run_many(batch(), provider="acme", operation="charge")
    assert again[0] == {"id": "ok-1"}  # the recorded result
    assert isinstance(again[1], ApplicationError) and again[1].non_retryable
    assert again[2] == {"id": "busy-2"}
    assert isinstance(again[3], ApplicationError) and again[3].type == "UNKNOWN_OUTCOME"
    assert dict(provider.hits) == {"ok": 1, "refused": 1, "busy": 2, "hang": 1}
