"""Delivering webhooks: the outbox pump, timer-fired retries and manual retries.

`WebhookActivities` holds the one aiohttp `ClientSession` of the worker process
(created on first use, closed through `WorkerContext.closers`): every attempt of
every delivery shares its connection pool. aiohttp was chosen by measurement: on
this machine it posts ~25x more requests per second than httpx at the same
concurrency (docs/benchmarks.md).

Guarantees:
- every attempt is recorded (`webhook_attempts`) before the delivery's next
  attempt is scheduled, in one transaction per batch;
- a delivery is attempted only under a lease, so two workers never attempt it at
  once; a worker that dies loses its leases and the deliveries are claimed again
  (at least once; receivers dedupe on `webhook-id`);
- a pump's leases name it (`LeaseOwner`: its activity and attempt). When its worker
  dies, Temporal retries the pump once its heartbeat times out, and the new attempt
  first takes back the leases of the lost one: their deliveries are sent again at
  once (not when the lease runs out), each once, and the lost attempt is listed as
  one whose outcome is unknown. Each recovery is logged as a warning and counted in
  the worker's metrics (`relay_webhook_*`, see docs/webhooks.md);
- retries are handed to the dispatcher workflow's durable timers (a signal); when
  that hand-over is lost the database sweep still finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode
from relay.settings import Settings
from relay.webhooks import outbox
from relay.webhooks.contracts import (
    HOLD_RETRIES_SIGNAL,
    AttemptResult,
    HeldRetry,
    HoldRetries,
    ManualRetryInput,
    PumpInput,
    PumpResult,
    RetryBatchInput,
    RetryBatchResult,
)
from relay.webhooks.endpoints import open_headers
from relay.webhooks.outbox import Claim, LeaseOwner, Outcome, Recorded, Reschedule
from relay.webhooks.policy import RetryPolicy
from relay.webhooks.sender import attempt, event_body, make_session
from relay.webhooks.signing import signing_keys
from relay.webhooks.ssrf import SsrfGuard
from relay.worker_context import WorkerContext

# A slow endpoint may hold at most this many of a worker's concurrent requests, so
# one endpoint that times out cannot starve the others.
PER_ENDPOINT_CONCURRENCY = 64
# How long finished attempts may wait before they are recorded in one batch.
FLUSH_INTERVAL_SECONDS = 0.05
HAND_OVER_INTERVAL_SECONDS = 1.0
# The pump records its liveness this often (Temporal throttles what it sends to 0.8x the
# heartbeat timeout); a loop later than half the timeout is logged, as it risks a false
# "lost" verdict.
HEARTBEAT_EVERY_SECONDS = 0.25

# Counters in the worker's metrics (the Temporal runtime's; WORKER_METRICS_PORT serves them).
METRIC_LEASES_RECLAIMED = "relay_webhook_leases_reclaimed"
METRIC_PUMP_HEARTBEAT_LOST = "relay_webhook_pump_heartbeat_lost"
METRIC_DELIVERIES_RESENT = "relay_webhook_deliveries_resent"
# The longest the running pump's loop went between two heartbeats: the headroom left
# under the heartbeat timeout on a loaded machine.
METRIC_HEARTBEAT_GAP = "relay_webhook_pump_heartbeat_gap_seconds"


RESENT_DESCRIPTION = "Deliveries sent again because a lost worker never recorded their attempt"


def _count(name: str, description: str, value: int) -> None:
    if value > 0:
        activity.metric_meter().create_counter(name, description).add(value)


def _lease_owner() -> LeaseOwner:
    """This activity attempt: `{workflow id}/{run id}/{activity id}` and the attempt."""
    info = activity.info()
    return LeaseOwner(f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}", info.attempt)


class WebhookActivities:
    """Webhook delivery over one shared aiohttp session per worker process."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        client: Client,
        clock: Callable[[], datetime] = utcnow,
        guard: SsrfGuard | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._keyring = keyring
        self._client = client
        self._clock = clock
        self._guard = guard or SsrfGuard(
            settings.webhook_allowed_networks, require_https=settings.requires_https_webhooks
        )
        self._policy = RetryPolicy(settings.webhook_retry_schedule, settings.webhook_disable_after)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_context(cls, context: WorkerContext, **options: Any) -> WebhookActivities:
        """The worker's instance; its HTTP session is closed with the worker."""
        activities = cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            client=context.client,
            **options,
        )
        context.closers.append(activities.close)
        return activities

    def activities(self) -> list[Callable[..., Any]]:
        return [self.pump_deliveries, self.deliver_retries, self.retry_delivery]

    def session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession binds to the running event loop.
        if self._session is None or self._session.closed:
            self._session = make_session(self._guard, limit=self._settings.webhook_concurrency)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    # --- attempts ------------------------------------------------------------------

    def _prepare(self, claim: Claim) -> dict[uuid.UUID, tuple[bytes, list[bytes]]]:
        """Bodies per event (serialized once) and signing keys per endpoint."""
        now = self._clock()
        bodies = {event_id: event_body(event) for event_id, event in claim.events.items()}
        keys: dict[uuid.UUID, list[bytes]] = {}
        prepared: dict[uuid.UUID, tuple[bytes, list[bytes]]] = {}
        for job in claim.jobs:
            endpoint = job.endpoint
            if endpoint.id not in keys:
                endpoint.headers = open_headers(self._keyring, endpoint.id, endpoint.headers)
                keys[endpoint.id] = signing_keys(
                    self._keyring, endpoint.id, endpoint.secret, endpoint.old_secrets, now
                )
            prepared[job.delivery_id] = (bodies[job.event_id], keys[endpoint.id])
        return prepared

    async def _attempt(self, job: outbox.Job, body: bytes, keys: list[bytes]) -> Outcome:
        return await attempt(
            self.session(),
            self._guard,
            job,
            body,
            keys,
            timeout=self._settings.webhook_timeout,
            clock=self._clock,
        )

    async def _record(self, outcomes: list[Outcome], *, timer_held: bool) -> Recorded:
        return await asyncio.to_thread(
            outbox.record_outcomes,
            self._engine,
            outcomes,
            now=self._clock(),
            policy=self._policy,
            timer_held=timer_held,
        )

    async def _hand_over(self, reschedules: list[Reschedule]) -> None:
        """Give recorded retries to the dispatcher's timers; on failure, to the sweep."""
        if not reschedules:
            return
        held = [HeldRetry(str(r.delivery_id), r.scheduled_attempts, r.due) for r in reschedules]
        info = activity.info()
        try:
            handle = self._client.get_workflow_handle(info.workflow_id or "")
            await handle.signal(HOLD_RETRIES_SIGNAL, HoldRetries(held))
        except Exception:
            activity.logger.warning("retry hand-over failed; the database sweep takes them")
            await asyncio.to_thread(
                outbox.release_timers, self._engine, [r.delivery_id for r in reschedules]
            )

    async def _take_over(self, owner: LeaseOwner) -> int:
        """A retried pump: report the lost attempt and take back the leases it held."""
        info = activity.info()
        last_beat = info.heartbeat_details[0] if info.heartbeat_details else None
        timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else None
        silent = time.time() - last_beat if isinstance(last_beat, int | float) else None
        if timeout and silent is not None and silent >= timeout:
            activity.logger.warning(
                "webhook pump attempt %d lost its heartbeat (silent %.1fs, timeout %.1fs); "
                "taking over its leases",
                info.attempt - 1,
                silent,
                timeout,
            )
            _count(METRIC_PUMP_HEARTBEAT_LOST, "Webhook pump attempts that lost their heartbeat", 1)
        reclaimed = await asyncio.to_thread(outbox.take_over_leases, self._engine, owner)
        if reclaimed:
            activity.logger.warning(
                "webhook pump attempt %d reclaimed %d leases of earlier attempts; "
                "their deliveries are sent again now",
                owner.attempt,
                reclaimed,
            )
            _count(
                METRIC_LEASES_RECLAIMED,
                "Delivery leases a retried pump took back from its lost attempt",
                reclaimed,
            )
            _count(METRIC_DELIVERIES_RESENT, RESENT_DESCRIPTION, reclaimed)
        return reclaimed

    # --- activities ------------------------------------------------------------------

    @activity.defn
    async def pump_deliveries(self, params: PumpInput) -> PumpResult:
        """Claim due deliveries, attempt them concurrently, record them in bulk; repeat.

        Runs for `budget_seconds` (heartbeating), then drains its in-flight requests
        and returns so the workflow can continue-as-new. Retries are handed to the
        workflow's timers by signal as they are recorded.
        """
        settings = self._settings
        result = PumpResult()
        owner = _lease_owner()
        if owner.attempt > 1:
            await self._take_over(owner)
        deadline = time.monotonic() + params.budget_seconds
        last_beat = time.monotonic() - HEARTBEAT_EVERY_SECONDS
        info = activity.info()
        late_after = info.heartbeat_timeout.total_seconds() / 2 if info.heartbeat_timeout else None
        longest_gap = 0.0
        gap_gauge = activity.metric_meter().create_gauge_float(
            METRIC_HEARTBEAT_GAP, "Longest wait between two heartbeats of the running pump", "s"
        )
        in_flight: dict[asyncio.Task[None], uuid.UUID] = {}
        per_endpoint: Counter[uuid.UUID] = Counter()
        finished: list[Outcome] = []
        last_flush = time.monotonic()
        concurrency = settings.webhook_concurrency
        # Set whenever a request or a recording finishes: the loop then looks again.
        wake = asyncio.Event()
        recording: asyncio.Task[None] | None = None
        # Recorded retries wait here and go to the workflow in one signal a second at
        # most (the shortest retry is seconds away), not one signal per batch.
        held_back: list[Reschedule] = []
        last_hand_over = time.monotonic()

        async def hand_over() -> None:
            nonlocal last_hand_over
            batch = held_back[:]
            held_back.clear()
            last_hand_over = time.monotonic()
            await self._hand_over(batch)

        async def run(job: outbox.Job, body: bytes, keys: list[bytes]) -> None:
            try:
                finished.append(await self._attempt(job, body, keys))
            finally:
                per_endpoint[job.endpoint.id] -= 1
                wake.set()

        async def record(batch: list[Outcome]) -> None:
            try:
                recorded = await self._record(batch, timer_held=True)
                result.delivered += recorded.delivered
                result.failed += recorded.failed
                result.rescheduled += len(recorded.reschedules)
                held_back.extend(recorded.reschedules)
            finally:
                wake.set()

        try:
            while True:
                since_beat = time.monotonic() - last_beat
                if since_beat >= HEARTBEAT_EVERY_SECONDS:
                    if since_beat > longest_gap:
                        longest_gap = since_beat
                        gap_gauge.set(since_beat)
                    if late_after and since_beat >= late_after:
                        activity.logger.warning(
                            "webhook pump heartbeat %.1fs late (the heartbeat timeout is %.1fs)",
                            since_beat,
                            2 * late_after,
                        )
                    # The wall-clock time of the beat: a retried attempt reads it to tell
                    # how long its predecessor was silent.
                    activity.heartbeat(time.time())
                    last_beat = time.monotonic()
                claiming = time.monotonic() < deadline and not activity.is_worker_shutdown()
                free = concurrency - len(in_flight)
                claimed = 0
                if claiming and (free >= max(1, concurrency // 4) or not in_flight):
                    busy = [e for e, n in per_endpoint.items() if n >= PER_ENDPOINT_CONCURRENCY]
                    claim = await asyncio.to_thread(
                        outbox.claim_due,
                        self._engine,
                        now=self._clock(),
                        lease=settings.webhook_lease,
                        limit=min(settings.webhook_batch_size, free),
                        sweep_grace=settings.webhook_sweep_grace,
                        busy_endpoints=busy,
                        owner=owner,
                    )
                    if claim.resent:
                        # Leases that ran out on a worker that never recorded them.
                        activity.logger.warning(
                            "webhook pump re-sends %d deliveries whose lease ran out unrecorded",
                            claim.resent,
                        )
                    _count(METRIC_DELIVERIES_RESENT, RESENT_DESCRIPTION, claim.resent)
                    prepared = self._prepare(claim)
                    for job in claim.jobs:
                        per_endpoint[job.endpoint.id] += 1
                        task = asyncio.create_task(run(job, *prepared[job.delivery_id]))
                        in_flight[task] = job.delivery_id
                        task.add_done_callback(lambda done: in_flight.pop(done, None))
                    claimed = len(claim.jobs)
                if recording is not None and recording.done():
                    recording.result()  # a failed recording fails the pump (Temporal retries it)
                    recording = None
                # One recording at a time, in the background: claiming and sending go on
                # while a batch is written.
                if (
                    finished
                    and recording is None
                    and (
                        len(finished) >= settings.webhook_batch_size
                        or time.monotonic() - last_flush >= FLUSH_INTERVAL_SECONDS
                        or not in_flight
                    )
                ):
                    batch = finished[:]
                    finished.clear()
                    last_flush = time.monotonic()
                    recording = asyncio.create_task(record(batch))
                settled = not in_flight and not finished and recording is None
                if held_back and (
                    settled or time.monotonic() - last_hand_over >= HAND_OVER_INTERVAL_SECONDS
                ):
                    await hand_over()
                if settled:
                    if not claiming:
                        return result
                    if params.return_when_idle and not claimed:
                        result.idle = True
                        return result
                if in_flight or recording is not None:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=FLUSH_INTERVAL_SECONDS)
                elif not claimed:
                    await asyncio.sleep(params.poll_seconds)
        except Exception:
            # A failed pump (a recording that failed, say) stops its requests too: the next
            # attempt takes their leases over at once, and nothing may still be sending them.
            abandoned = [delivery for task, delivery in in_flight.items() if not task.done()]
            for task in list(in_flight):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(outbox.release_lost, self._engine, owner, abandoned)
            raise
        except asyncio.CancelledError:
            # Cancelled (worker shutdown past its grace, or Temporal gave this attempt up):
            # what finished is recorded; what is still in flight may or may not have
            # reached its endpoint, so it is recorded as such and its lease freed for the
            # next claim.
            abandoned = [delivery for task, delivery in in_flight.items() if not task.done()]
            for task in list(in_flight):
                task.cancel()
            if recording is not None:
                await asyncio.shield(asyncio.wait([recording]))
            if finished:
                await asyncio.shield(self._record(finished[:], timer_held=False))
            if abandoned:
                await asyncio.shield(
                    asyncio.to_thread(outbox.release_lost, self._engine, owner, abandoned)
                )
            if held_back:
                # Nobody will signal these: the sweep takes them as soon as they are due.
                await asyncio.shield(
                    asyncio.to_thread(
                        outbox.release_timers, self._engine, [r.delivery_id for r in held_back]
                    )
                )
            gone = activity.cancellation_details()
            if gone is not None and (gone.not_found or gone.timed_out):
                # The run was terminated, or Temporal already gave this attempt up: nobody
                # reads this attempt's outcome, so it ends quietly rather than as a failure
                # with a traceback in the log.
                activity.logger.info("webhook pump stopped: its run or attempt is gone")
                return result
            raise

    @activity.defn
    async def deliver_retries(self, params: RetryBatchInput) -> RetryBatchResult:
        """Attempt the retries a dispatcher timer fired for; return the next ones to hold."""
        held = [(uuid.UUID(r.delivery_id), r.scheduled_attempts) for r in params.retries]
        claim, _deferred = await asyncio.to_thread(
            outbox.claim_retries,
            self._engine,
            held,
            now=self._clock(),
            lease=self._settings.webhook_lease,
        )
        if not claim.jobs:
            return RetryBatchResult()
        prepared = self._prepare(claim)
        limit = asyncio.Semaphore(self._settings.webhook_concurrency)

        async def run(job: outbox.Job) -> Outcome:
            async with limit:
                return await self._attempt(job, *prepared[job.delivery_id])

        heartbeat = asyncio.create_task(_heartbeat_every(5.0))
        try:
            outcomes = list(await asyncio.gather(*(run(job) for job in claim.jobs)))
        finally:
            heartbeat.cancel()
        recorded = await self._record(outcomes, timer_held=True)
        return RetryBatchResult(
            attempted=len(outcomes),
            delivered=recorded.delivered,
            retries=[
                HeldRetry(str(r.delivery_id), r.scheduled_attempts, r.due)
                for r in recorded.reschedules
            ],
        )

    @activity.defn
    async def retry_delivery(self, params: ManualRetryInput) -> AttemptResult:
        """One manual attempt of a delivery, now, whatever its status; returns the attempt."""
        try:
            delivery_id = uuid.UUID(params.delivery_id)
        except ValueError:
            delivery_id = None
        claim = (
            await asyncio.to_thread(
                outbox.claim_manual, self._engine, delivery_id, now=self._clock()
            )
            if delivery_id
            else None
        )
        if claim is None:
            raise ApplicationError(
                "no delivery with that id",
                type=ErrorCode.DELIVERY_NOT_FOUND.value,
                non_retryable=True,
            )
        job = claim.jobs[0]
        outcome = await self._attempt(job, *self._prepare(claim)[job.delivery_id])
        await self._record([outcome], timer_held=False)
        status = await asyncio.to_thread(outbox.delivery_status, self._engine, job.delivery_id)
        return AttemptResult(
            delivery_id=str(job.delivery_id),
            attempt=job.attempt,
            trigger=job.trigger.value,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            response_body=outcome.response_body,
            error=outcome.error,
            status=status,
        )


async def _heartbeat_every(seconds: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(seconds)


ACTIVITIES = WebhookActivities
