"""The file workflow: `file-{id}`, the single writer of one file's state, from upload to
processed or rejected.

- Started by `POST /v1/files` (update-with-start of `open`, which answers once the read
  model holds the file): PENDING_UPLOAD, with a durable timer of UPLOAD_EXPIRY.
- `complete` (POST /v1/files/{id}/complete) checks the upload is in the bucket and starts
  processing; the `uploaded` signal (an S3 ObjectCreated event, POST /webhooks/s3) checks
  the same way and starts it too (an event for an upload that is not there does nothing).
  Either may come twice, or both: the first starts processing, the others read the state.
- The inbox forwards S3 events by signal-with-start: a run such an event starts (its input
  `started_by_event`: the file's own run had ended) processes nothing and ends at once.
- Processing is one activity that reads the upload from S3 and writes the original to its
  final key and the renditions (`activities.files`); the workflow holds keys and metadata
  only, never bytes. READY publishes `file.ready`; a rejection (its reason named) deletes
  whatever the file wrote and publishes `file.rejected`; so does a step failing past its
  retries (`processing_failed`): nothing is left behind.
- The timer firing before the upload was completed deletes the upload (REJECTED,
  `upload_expired`).
- `delete` removes every object and marks the file DELETED. On a run that has ended, the
  API starts a new run of the same id with the file's last view (update-with-start), whose
  only job is that update.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.files import FileActivities
    from relay.errors import ErrorCode
    from relay.files.contracts import (
        ENDED,
        FILE_WORKFLOW,
        UPLOADED_SIGNAL,
        CompleteUpload,
        FileInput,
        FileStatus,
        FileView,
        FinishInput,
        ProcessInput,
        ProcessResult,
        RejectReason,
        file_event,
        processing_task_queue,
    )

S3_TIMEOUT = timedelta(seconds=60)
S3_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# Processing a 12 MP image takes about a second; the activity heartbeats every 2 s while
# it works, so a worker that died is noticed (and the step retried elsewhere) within 15 s.
PROCESS_TIMEOUT = timedelta(minutes=10)
PROCESS_HEARTBEAT = timedelta(seconds=15)
# S3 or the worker failing: a few attempts, then the file is rejected (processing_failed)
# and cleaned up rather than left PROCESSING for ever.
PROCESS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=[ErrorCode.PROVIDER_NOT_CONFIGURED.value],
)
# process_upload on its own task queue (relay.files.contracts.processing_task_queue).
PROCESSING_QUEUE_PATCH = "process-upload-own-queue"
LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
# A run started for DELETE after the file's own run ended waits this long for it.
DELETE_WAIT = timedelta(minutes=10)
# The `uploaded` signal HEADs the upload before processing starts (runs before it did not).
UPLOADED_CHECK_PATCH = "uploaded-signal-checks-upload"


@workflow.defn(name=FILE_WORKFLOW)
class FileWorkflow:
    """One file: its upload, checks, renditions, events and deletion; no bytes in history."""

    @workflow.init
    def __init__(self, params: FileInput) -> None:
        self._view = params.view
        self._lock = asyncio.Lock()
        # A run an S3 event started (signal-with-start after the file's run ended).
        self._stray = params.started_by_event
        self._saved = self._view.status in ENDED or self._stray
        self._start = False

    @workflow.run
    async def run(self, params: FileInput) -> FileView:
        if self._stray:
            # Nothing to process: the event's file already ended. A `delete` that landed
            # here in the meantime (update-with-start) still completes.
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._view
        if self._view.status in ENDED:
            # Started by DELETE after the file's run ended: only the `delete` update.
            try:
                await workflow.wait_condition(
                    lambda: self._view.status == FileStatus.DELETED, timeout=DELETE_WAIT
                )
            except TimeoutError:
                pass
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._view
        if self._view.upload_expires_at is None:
            self._view.upload_expires_at = workflow.now() + timedelta(
                seconds=params.upload_expiry_seconds
            )
        await self._save()
        self._saved = True
        try:
            await workflow.wait_condition(
                lambda: self._start or self._view.status != FileStatus.PENDING_UPLOAD,
                timeout=max(self._view.upload_expires_at - workflow.now(), timedelta(seconds=1)),
            )
        except TimeoutError:
            pass
        async with self._lock:
            if self._view.status == FileStatus.PENDING_UPLOAD and not self._start:
                # Never completed: the upload (if any) goes, nothing else was written.
                await self._reject(RejectReason.UPLOAD_EXPIRED.value)
            elif self._start and self._view.status in (
                FileStatus.PENDING_UPLOAD,
                FileStatus.PROCESSING,
            ):
                await self._process()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    # --- steps -------------------------------------------------------------------------------

    async def _save(self) -> None:
        self._view.writes += 1
        await workflow.execute_activity_method(
            FileActivities.save_file,
            self._view,
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
        )

    async def _finish(
        self,
        *,
        remove_keys: list[str] | None = None,
        remove_all: bool = False,
        event: str | None = None,
    ) -> None:
        # Cleanup must happen: retried until S3 and the database answer.
        self._view.writes += 1
        await workflow.execute_activity_method(
            FileActivities.finish_file,
            FinishInput(
                view=self._view,
                remove_keys=remove_keys or [],
                remove_all=remove_all,
                event=file_event(self._view, event) if event else None,
            ),
            start_to_close_timeout=S3_TIMEOUT,
            retry_policy=S3_RETRY,
        )

    async def _begin(self) -> bool:
        """HEAD the upload; when it is there, record PROCESSING (one activity) and start.
        Called under the lock, while PENDING_UPLOAD and not yet started."""
        processing = dataclasses.replace(
            self._view, status=FileStatus.PROCESSING, writes=self._view.writes + 1
        )
        check = await workflow.execute_activity_method(
            FileActivities.begin_processing,
            processing,
            start_to_close_timeout=S3_TIMEOUT,
            retry_policy=S3_RETRY,
        )
        if not check.exists:
            return False
        self._view = processing
        self._start = True
        return True

    async def _process(self) -> None:
        if self._view.status != FileStatus.PROCESSING:
            self._view.status = FileStatus.PROCESSING
            await self._save()
        try:
            # Runs started before processing had a queue of its own keep the file's queue
            # (their histories replay as written); the main worker still serves it.
            queue = (
                processing_task_queue(workflow.info().task_queue)
                if workflow.patched(PROCESSING_QUEUE_PATCH)
                else None
            )
            result: ProcessResult = await workflow.execute_activity_method(
                FileActivities.process_upload,
                ProcessInput(self._view),
                task_queue=queue,
                start_to_close_timeout=PROCESS_TIMEOUT,
                heartbeat_timeout=PROCESS_HEARTBEAT,
                retry_policy=PROCESS_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.warning("processing failed for good: %s", exc.cause)
            await self._reject(RejectReason.PROCESSING_FAILED.value)
            return
        self._view.size = result.size or self._view.size
        self._view.sha256 = result.sha256
        if result.reason is not None:
            await self._reject(result.reason)
            return
        self._view.object_key = result.object_key
        self._view.detected_type = result.detected_type
        self._view.metadata = result.metadata
        self._view.renditions = result.renditions
        self._view.status = FileStatus.READY
        # The original now lives at its final key: the upload goes before READY is told.
        await self._finish(remove_keys=[self._view.upload_key], event="file.ready")

    async def _reject(self, reason: str) -> None:
        # Everything the file may have written, whichever step got how far.
        self._view.status = FileStatus.REJECTED
        self._view.reason = reason
        self._view.renditions = []
        self._view.object_key = None
        await self._finish(remove_all=True, event="file.rejected")

    # --- messages ----------------------------------------------------------------------------

    @workflow.query
    def state(self) -> FileView:
        return self._view

    @workflow.update
    async def open(self) -> FileView:
        """Answers once the read model holds the file (POST /v1/files)."""
        if self._stray:
            # A retried create meeting the run an S3 event started: that file has ended.
            raise ApplicationError(
                "a file with this idempotencyKey already ended", type=ErrorCode.CONFLICT.value
            )
        await workflow.wait_condition(lambda: self._saved)
        return self._view

    @workflow.update
    async def complete(self, request: CompleteUpload) -> FileView:
        """Start processing when the upload is in the bucket; CONFLICT when it is not yet.
        Idempotent: once started, it answers the file's state."""
        await workflow.wait_condition(lambda: self._saved)
        if self._stray:
            return self._view  # the file ended: the API answers from the read model
        async with self._lock:
            if self._view.status != FileStatus.PENDING_UPLOAD or self._start:
                return self._view
            if not await self._begin():
                raise ApplicationError(
                    "nothing has been uploaded for this file yet: POST the file to uploadUrl "
                    "with uploadFields first",
                    type=ErrorCode.CONFLICT.value,
                )
            return self._view

    @workflow.signal(name=UPLOADED_SIGNAL)
    async def uploaded(self, request: CompleteUpload) -> None:
        """S3 says the upload landed (an ObjectCreated event): check it is there, as
        `complete` does, and start processing. An event for an upload that is not (yet)
        in the bucket, or for a file past PENDING_UPLOAD, does nothing."""
        if self._stray:
            return
        if not workflow.patched(UPLOADED_CHECK_PATCH):
            # Runs from before the check: the signal started processing unchecked.
            if self._view.status == FileStatus.PENDING_UPLOAD:
                self._start = True
            return
        await workflow.wait_condition(lambda: self._saved)
        async with self._lock:
            if self._view.status != FileStatus.PENDING_UPLOAD or self._start:
                return
            if not await self._begin():
                # The inbox id, not the event id: that one carries the user's filename.
                workflow.logger.info(
                    "S3 event (inbox %s): no upload at the file's key yet", request.inbox_id
                )

    @workflow.update
    async def delete(self) -> FileView:
        """Delete the original, every rendition and the upload; the file is DELETED."""
        await workflow.wait_condition(lambda: self._saved)
        async with self._lock:
            if self._view.status == FileStatus.DELETED:
                return self._view
            self._view.status = FileStatus.DELETED
            await self._finish(remove_all=True)
            return self._view


WORKFLOWS = (FileWorkflow,)
