"""One publication's workflow, `publication-{id}`: the single writer of one publication.

    start ──► SCHEDULED: a durable timer until scheduledAt ──cancel (update)──► CANCELED
                 │
                 ▼
             PUBLISHING: every target at once, each on its own:
                 publish_target ──► PUBLISHED | SKIPPED | FAILED
                        └─► PROCESSING ── poll_target on workflow timers ──► PUBLISHED | FAILED
                 │
                 ▼
             PUBLISHED (every attempted target published; SKIPPED ones do not count
             against it) | PARTIAL | FAILED, and its publication.* event
                 │
             unpublish (update): delete_target per published target ──► UNPUBLISHED
                                 (what a platform cannot delete stays DELETE_FAILED, named)

A target's failure never stops the others: its activity records a 4xx as that target's
FAILED, Temporal retries 429s (after Retry-After, or after the shared limit's window) and
5xx, and a target whose retries run out is recorded FAILED by `record_target_failure`.

Unpublish after the run has ended starts a new run of the same id (`unpublish=True`,
update-with-start from workflows.clients.publishing) that loads the targets and waits for
the update. History carries ids and statuses only: the text, the platforms' answers and
the tokens stay in the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.publishing import PublishingActivities
    from relay.errors import ErrorCode
    from relay.publishing.contracts import (
        PUBLICATION_WORKFLOW,
        CancelPublication,
        LoadPublication,
        PublicationInput,
        PublicationState,
        PublicationStatus,
        SetStatus,
        TargetCall,
        TargetFailure,
        TargetOutcome,
        TargetRef,
        TargetState,
        TargetStatus,
        UnpublishPublication,
    )

DATABASE_TIMEOUT = timedelta(seconds=15)
DATABASE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# A publish uploads media: minutes, not seconds. Transient failures (429 with Retry-After,
# the shared limit's wait, 5xx) are retried up to PUBLISH_ATTEMPTS, then the target FAILED.
PUBLISH_TIMEOUT = timedelta(minutes=10)
PUBLISH_ATTEMPTS = 8
PUBLISH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=PUBLISH_ATTEMPTS,
)
POLL_TIMEOUT = timedelta(seconds=60)
# The activities heartbeat every few seconds: a lost worker's attempt is retried this soon.
HEARTBEAT_TIMEOUT = timedelta(seconds=20)
# Polls of a post still processing start at PublicationInput.poll_interval_seconds and
# back off to MAX_POLL_INTERVAL: a 12-hour processing costs ~150 polls, not thousands.
POLL_BACKOFF = 1.5
MAX_POLL_INTERVAL = timedelta(minutes=5)
# A platform processing one post for longer than this (YouTube's longest videos take
# hours) leaves the target FAILED; the post itself may still appear.
MAX_PROCESSING = timedelta(hours=12)
# Deleting is the compensation: retried until the platform answers for good.
DELETE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=PUBLISH_ATTEMPTS,
)
# Runs from before this patch finished with a (remote) activity; later ones, locally.
LOCAL_FINISH_PATCH = "publication-local-finish"
# A run started only to take a publication down waits this long for its update.
UNPUBLISH_WAIT = timedelta(minutes=10)


def _failure(exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause
    return ApplicationError("the platform call did not finish", type=ErrorCode.PROVIDER_ERROR.value)


def _initial(target: TargetRef) -> TargetState:
    if target.skip_code is not None:  # the API found the platform cannot take it
        return TargetState(
            target.integration_id, target.provider, TargetStatus.SKIPPED.value, target.skip_code
        )
    return TargetState(target.integration_id, target.provider)


@workflow.defn(name=PUBLICATION_WORKFLOW)
class PublicationWorkflow:
    """One publication across its platforms (see the module docstring). Guarantees: each
    target is posted at most once (the provider-call ledger); one target's failure leaves
    the others going; a publication canceled before its time posts nothing; unpublishing
    reports every target it could not delete."""

    @workflow.init
    def __init__(self, params: PublicationInput) -> None:
        self._input = params
        self._state = PublicationState(
            publication_id=params.publication_id,
            # Due now: the API wrote PUBLISHING, and a cancel is refused as the row says.
            status=(
                PublicationStatus.PUBLISHING
                if params.status_written
                else PublicationStatus.SCHEDULED
            ).value,
            targets=[_initial(t) for t in params.targets],
        )
        self._cancel_requested = False
        self._published = False
        self._unpublished = False
        self._lock = asyncio.Lock()

    @workflow.run
    async def run(self, params: PublicationInput) -> PublicationState:
        if params.unpublish:
            loaded = await workflow.execute_activity_method(
                PublishingActivities.load_publication,
                LoadPublication(params.publication_id),
                start_to_close_timeout=DATABASE_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
            self._state.status = loaded.status
            self._state.targets = loaded.targets
            self._published = True
            try:
                await workflow.wait_condition(lambda: self._unpublished, timeout=UNPUBLISH_WAIT)
            except TimeoutError:
                pass
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._view()
        if params.scheduled_at is not None:
            at = datetime.fromisoformat(params.scheduled_at)
            if at.tzinfo is None:  # Relay stores UTC
                at = at.replace(tzinfo=UTC)
            delay = at - workflow.now()
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self._cancel_requested, timeout=delay)
                except TimeoutError:
                    pass
        async with self._lock:
            if self._cancel_requested and self._state.status == PublicationStatus.SCHEDULED:
                await workflow.execute_activity_method(
                    PublishingActivities.cancel_publication,
                    LoadPublication(params.publication_id),
                    start_to_close_timeout=DATABASE_TIMEOUT,
                    retry_policy=DATABASE_RETRY,
                )
                self._state.status = PublicationStatus.CANCELED.value
                for target in self._state.targets:
                    if target.status == TargetStatus.PENDING:
                        target.status = TargetStatus.CANCELED.value
                self._published = True
            else:
                self._state.status = PublicationStatus.PUBLISHING.value
        if self._state.status == PublicationStatus.PUBLISHING:
            if not params.status_written:
                await workflow.execute_activity_method(
                    PublishingActivities.set_publication_status,
                    SetStatus(params.publication_id, PublicationStatus.PUBLISHING.value),
                    start_to_close_timeout=DATABASE_TIMEOUT,
                    retry_policy=DATABASE_RETRY,
                )
            await asyncio.gather(
                *(
                    self._publish(target)
                    for target in self._state.targets
                    if target.status == TargetStatus.PENDING
                )
            )
            self._state.status = await self._finish(params.publication_id)
            self._published = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _finish(self, publication_id: str) -> str:
        if workflow.patched(LOCAL_FINISH_PATCH):
            # A few database writes: run in the worker's own workflow task, sparing the
            # server a schedule/start/complete round trip at the end of every publication.
            return await workflow.execute_local_activity_method(
                PublishingActivities.finish_publication,
                LoadPublication(publication_id),
                start_to_close_timeout=DATABASE_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
        return await workflow.execute_activity_method(
            PublishingActivities.finish_publication,
            LoadPublication(publication_id),
            start_to_close_timeout=DATABASE_TIMEOUT,
            retry_policy=DATABASE_RETRY,
        )

    async def _publish(self, target: TargetState) -> None:
        call = TargetCall(self._input.publication_id, target.integration_id, target.provider)
        target.status = TargetStatus.PUBLISHING.value
        try:
            outcome = await workflow.execute_activity_method(
                PublishingActivities.publish_target,
                call,
                start_to_close_timeout=PUBLISH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=PUBLISH_RETRY,
            )
        except ActivityError as exc:
            outcome = await self._record_failure(call, _failure(exc))
        target.status, target.error_code = outcome.status, outcome.code
        waited = timedelta(0)
        interval = timedelta(seconds=max(0.1, self._input.poll_interval_seconds))
        while target.status == TargetStatus.PROCESSING:
            if waited >= MAX_PROCESSING:
                outcome = await self._record_failure(
                    call,
                    ApplicationError(
                        f"{target.provider} was still processing the post after {MAX_PROCESSING}",
                        type=ErrorCode.PROVIDER_ERROR.value,
                    ),
                )
            else:
                await workflow.sleep(interval)
                waited += interval
                # Backing off keeps a long processing (hours) to a bounded history.
                interval = min(interval * POLL_BACKOFF, MAX_POLL_INTERVAL)
                try:
                    outcome = await workflow.execute_activity_method(
                        PublishingActivities.poll_target,
                        call,
                        start_to_close_timeout=POLL_TIMEOUT,
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=PUBLISH_RETRY,
                    )
                except ActivityError as exc:
                    outcome = await self._record_failure(call, _failure(exc))
            target.status, target.error_code = outcome.status, outcome.code

    async def _record_failure(self, call: TargetCall, cause: ApplicationError) -> TargetOutcome:
        return await workflow.execute_activity_method(
            PublishingActivities.record_target_failure,
            TargetFailure(
                call.publication_id,
                call.integration_id,
                call.provider,
                cause.type or ErrorCode.PROVIDER_ERROR.value,
                cause.message,
            ),
            start_to_close_timeout=DATABASE_TIMEOUT,
            retry_policy=DATABASE_RETRY,
        )

    # --- updates -----------------------------------------------------------------------------

    @workflow.update
    async def cancel(self, request: CancelPublication) -> PublicationState:
        """Before it runs: the publication is CANCELED and nothing is posted."""
        async with self._lock:
            if self._state.status != PublicationStatus.SCHEDULED:
                raise ApplicationError(
                    f"the publication is {self._state.status}; only a SCHEDULED one can be "
                    "canceled (DELETE unpublishes one that ran)",
                    {"publicationId": self._input.publication_id, "status": self._state.status},
                    type=ErrorCode.CONFLICT.value,
                    non_retryable=True,
                )
            self._cancel_requested = True
        await workflow.wait_condition(lambda: self._state.status == PublicationStatus.CANCELED)
        return self._view()

    @workflow.update
    async def unpublish(self, request: UnpublishPublication) -> PublicationState:
        """Deletes every published target's post once publishing is over; a scheduled
        publication is canceled instead (nothing was posted)."""
        if not self._input.unpublish and self._state.status == PublicationStatus.SCHEDULED:
            async with self._lock:
                if self._state.status == PublicationStatus.SCHEDULED:
                    self._cancel_requested = True
            await workflow.wait_condition(lambda: self._published)
            return self._view()
        await workflow.wait_condition(lambda: self._published)
        async with self._lock:
            if self._state.status in (
                PublicationStatus.CANCELED,
                PublicationStatus.UNPUBLISHED,
            ):
                self._unpublished = True
                return self._view()
            await asyncio.gather(*(self._delete(target) for target in self._state.targets))
            self._state.status = await workflow.execute_activity_method(
                PublishingActivities.finish_unpublish,
                LoadPublication(self._input.publication_id),
                start_to_close_timeout=DATABASE_TIMEOUT,
                retry_policy=DATABASE_RETRY,
            )
            self._unpublished = True
            return self._view()

    async def _delete(self, target: TargetState) -> None:
        if target.status not in (
            TargetStatus.PUBLISHED,
            TargetStatus.PROCESSING,
            TargetStatus.DELETE_FAILED,
        ):
            return
        call = TargetCall(self._input.publication_id, target.integration_id, target.provider)
        try:
            outcome = await workflow.execute_activity_method(
                PublishingActivities.unpublish_target,
                call,
                start_to_close_timeout=POLL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=DELETE_RETRY,
            )
        except ActivityError:
            # Retries ran out (the platform kept failing): the post is still up.
            target.status = TargetStatus.DELETE_FAILED.value
            return
        target.status, target.error_code = outcome.status, outcome.code

    # --- queries -----------------------------------------------------------------------------

    @workflow.query
    def state(self) -> PublicationState:
        return self._view()

    def _view(self) -> PublicationState:
        return dataclasses.replace(
            self._state, targets=[dataclasses.replace(t) for t in self._state.targets]
        )


WORKFLOWS = (PublicationWorkflow,)
