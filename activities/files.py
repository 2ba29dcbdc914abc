"""Files' side effects: S3 reads and writes through boto3, the image work, the files' read
model, Relay's outgoing file events.

`FileActivities` holds one boto3 S3 client per worker, configured from S3_BUCKET,
S3_ENDPOINT_URL, AWS_REGION and the AWS keys (moto's server in the sandbox and the tests:
one code path), a thread pool for S3 and database calls, and a pool of image processes
(one per core, started on first use) for Pillow. Guarantees:
- a file's bytes never cross Temporal: activities take keys and return keys and metadata;
- every write is to a key derived from the file (layout.py), so a retried step overwrites
  what an earlier attempt wrote, and a cleanup can name every key a file may have written;
- Pillow runs in the image processes, so it neither holds the worker's GIL nor blocks its
  event loop: the worker keeps heartbeating, polling and running workflow tasks;
- S3's refusals (4xx) are non-retryable failures, S3 failing (5xx, throttling, no
  connection) is retried by Temporal (`relay.provider_errors.translate`).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import hashlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from typing import Any, TypeVar

from PIL import Image
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from relay.errors import ErrorCode
from relay.files import repository
from relay.files.contracts import (
    FileView,
    FinishInput,
    ProcessInput,
    ProcessResult,
    RejectReason,
    Rendition,
    UploadCheck,
    processing_task_queue,
)
from relay.files.images import (
    ImageRejected,
    ImageReport,
    is_image_type,
    normalized_type,
    process_image,
)
from relay.files.layout import every_key, final_key, possible_rendition_keys, renditions_prefix
from relay.files.storage import bucket, configured, s3_client
from relay.provider_errors import translate
from relay.settings import Settings
from relay.webhooks.publish import publish_event
from relay.worker_context import WorkerContext

T = TypeVar("T")

PROVIDER = "s3"
# Threads for S3 and database calls (they wait on the network, not on the CPU).
IO_THREADS = 8
# Renditions are served straight from the bucket (or the CDN): cache them for a day.
RENDITION_CACHE_CONTROL = "private, max-age=86400"
CHUNK = 1024 * 1024
# DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000


HEARTBEAT_EVERY = 2.0
# process_upload attempts one worker runs at once, per image process: one rendering while
# the other moves its bytes to and from S3, so the image processes never wait on S3. The
# rest of a burst waits in Temporal (on the processing task queue), where any worker with
# a free slot takes it, instead of in this worker's slots ahead of other files' short steps.
PROCESSING_SLOTS_PER_IMAGE_PROCESS = 4
# As worker.py's: in-flight processing gets this long to finish on SIGTERM.
PROCESSING_SHUTDOWN = timedelta(seconds=20)


async def _heartbeat_every(seconds: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(seconds)


def _missing(exc: BaseException) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound")


class FileActivities:
    """S3, the image work, the read model and outgoing events, for the file workflow."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        s3: Any | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        cores = os.cpu_count() or 2
        self._s3 = s3 if s3 is not None else self._client(settings, IO_THREADS)
        # Pillow: one image process per core (`_processes`): CPU work neither holds this
        # worker's GIL (its workflow tasks, polls and heartbeats keep going) nor stays on
        # one core, and at most that many images are decoded at once (memory). S3 and
        # database calls wait on the network, not the CPU: a thread pool of their own
        # here, never queued behind the event loop's default executor.
        self._cores = cores
        self._process_pool: ProcessPoolExecutor | None = None
        self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="relay-s3")

    @staticmethod
    def _client(settings: Settings, threads: int) -> Any | None:
        if not configured(settings):
            return None
        # One connection per I/O thread: renditions are uploaded side by side.
        return s3_client(settings, max_pool_connections=threads)

    @classmethod
    def from_context(cls, context: WorkerContext) -> FileActivities:
        activities = cls(settings=context.settings, engine=context.engine)
        context.closers.append(activities.close)
        return activities

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=False, cancel_futures=True)

    async def _in(self, pool: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.save_file,
            self.begin_processing,
            self.process_upload,
            self.finish_file,
        ]

    @property
    def image_processes(self) -> int:
        """How many image processes this instance runs (one per core)."""
        return self._cores

    def _bucket_client(self) -> tuple[str, Any]:
        if self._s3 is None:
            raise ApplicationError(
                "S3_BUCKET is not set",
                type=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
                non_retryable=True,
            )
        return bucket(self._settings), self._s3

    async def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return await self._in(self._io, call)
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
                raise translate(PROVIDER, exc) from None
            raise

    async def _size_of(self, key: str) -> int | None:
        name, s3 = self._bucket_client()

        def head() -> int | None:
            try:
                return int(s3.head_object(Bucket=name, Key=key)["ContentLength"])
            except Exception as exc:
                if _missing(exc):
                    return None
                raise

        return await self._call(head)  # type: ignore[no-any-return]

    # --- activities ---------------------------------------------------------------------

    @activity.defn
    async def begin_processing(self, view: FileView) -> UploadCheck:
        """Whether the upload is in the bucket (HEAD), and its size; when it is, `view`
        (PROCESSING) is recorded."""
        size = await self._size_of(view.upload_key)
        if size is not None:
            await self._in(self._io, lambda: repository.save_view(self._engine, view))
        return UploadCheck(exists=size is not None, size=size or 0)

    @activity.defn
    async def process_upload(self, params: ProcessInput) -> ProcessResult:
        """Check the upload and, when it passes, write the original to its final key (an
        S3 copy: byte for byte) and an image's renditions; a rejection writes nothing that
        the workflow's cleanup does not name. Idempotent: every key is the file's own, a
        retry overwrites. Heartbeats while it works."""
        view = params.view
        name, s3 = self._bucket_client()
        size = await self._size_of(view.upload_key)
        if size is None:
            raise ApplicationError(
                "the upload is no longer in the bucket",
                type=ErrorCode.CONFLICT.value,
                non_retryable=True,
            )
        if size > self._settings.file_max_bytes:
            return ProcessResult(reason=RejectReason.TOO_LARGE.value, size=size)
        if size != view.declared_size:
            return ProcessResult(reason=RejectReason.SIZE_MISMATCH.value, size=size)
        beating = asyncio.create_task(_heartbeat_every(HEARTBEAT_EVERY))
        try:
            if is_image_type(view.content_type):
                return await self._process_image(view, name, s3, size)
            return await self._process_other(view, name, s3, size)
        finally:
            beating.cancel()

    async def _process_image(self, view: FileView, name: str, s3: Any, size: int) -> ProcessResult:
        target = final_key(view)
        detected = normalized_type(view.content_type)
        # S3 copies the original while the image is read and rendered; a rejection
        # deletes it with everything else (the workflow's cleanup names the final key).
        copied = asyncio.ensure_future(
            self._call(lambda: _copy(s3, name, view.upload_key, target, detected))
        )
        try:
            data: bytes = await self._call(
                lambda: s3.get_object(Bucket=name, Key=view.upload_key)["Body"].read()
            )
            sha256 = await self._in(self._io, lambda: hashlib.sha256(data).hexdigest())
            report, reason = await self._render(view, data)
        except BaseException:
            await asyncio.gather(copied, return_exceptions=True)
            raise
        if report is None:
            await asyncio.gather(copied, return_exceptions=True)
            activity.logger.info("file %s rejected: %s", view.id, reason)
            return ProcessResult(reason=reason, size=size, sha256=sha256)
        prefix = renditions_prefix(view)

        def put(key: str, body: bytes, content_type: str) -> None:
            s3.put_object(
                Bucket=name,
                Key=key,
                Body=body,
                ContentType=content_type,
                CacheControl=RENDITION_CACHE_CONTROL,
            )

        await asyncio.gather(
            copied,
            *(
                self._call(lambda r=r: put(prefix + r.name, r.data, r.content_type))  # type: ignore[misc]
                for r in report.renditions
            ),
        )
        return ProcessResult(
            object_key=target,
            size=size,
            sha256=sha256,
            detected_type=report.mime,
            metadata=report.metadata,
            renditions=[
                Rendition(
                    name=r.name,
                    key=prefix + r.name,
                    width=r.width,
                    height=r.height,
                    bytes=len(r.data),
                    content_type=r.content_type,
                )
                for r in report.renditions
            ],
        )

    async def _render(self, view: FileView, data: bytes) -> tuple[ImageReport | None, str]:
        """`process_image` in a child process: the report, or None and the reason."""
        call = functools.partial(
            _render_in_child,
            data,
            filename=view.filename,
            declared_type=view.content_type,
            sizes=list(self._settings.thumbnail_sizes),
            max_pixels=self._settings.image_max_pixels,
        )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._processes(), call)
        except BrokenProcessPool:
            # A child died (killed, out of memory): a new pool, and Temporal retries.
            self._process_pool = None
            raise ApplicationError(
                "the image process died", type=ErrorCode.INTERNAL_ERROR.value
            ) from None

    async def _process_other(self, view: FileView, name: str, s3: Any, size: int) -> ProcessResult:
        """Not an image: described (type, size, checksum), stored, no renditions."""

        def checksum() -> str:
            digest = hashlib.sha256()
            body = s3.get_object(Bucket=name, Key=view.upload_key)["Body"]
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
            return digest.hexdigest()

        sha256: str = await self._call(checksum)
        target = final_key(view)
        detected = normalized_type(view.content_type)
        await self._call(lambda: _copy(s3, name, view.upload_key, target, detected))
        return ProcessResult(
            object_key=target, size=size, sha256=sha256, detected_type=detected, metadata={}
        )

    def _processes(self) -> ProcessPoolExecutor:
        """The image processes, started on first use (a worker that never processes a
        file starts none). `spawn`: forking a process that runs threads is unsafe."""
        if self._process_pool is None:
            self._process_pool = ProcessPoolExecutor(
                self._cores,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self._settings.image_max_pixels, os.getpid()),
            )
        return self._process_pool

    async def _remove(self, keys: list[str]) -> None:
        """Delete `keys` (missing ones are fine: S3's delete is idempotent)."""
        name, s3 = self._bucket_client()
        unique = sorted(set(keys))
        for start in range(0, len(unique), DELETE_BATCH):
            batch = unique[start : start + DELETE_BATCH]
            answer = await self._call(
                lambda batch=batch: s3.delete_objects(  # type: ignore[misc]
                    Bucket=name,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            )
            errors = answer.get("Errors") or []
            if errors:
                raise ApplicationError(f"S3 kept {len(errors)} objects; retrying the delete")

    @activity.defn
    async def save_file(self, view: FileView) -> None:
        await self._in(self._io, lambda: repository.save_view(self._engine, view))

    @activity.defn
    async def finish_file(self, params: FinishInput) -> None:
        """Delete what goes, record the view, publish the event: one activity (each part
        idempotent, so a retry repeats them harmlessly; the event's key makes a repeated
        publish a no-op)."""
        keys = list(params.remove_keys)
        if params.remove_all:
            keys += every_key(params.view)
            keys += possible_rendition_keys(params.view, self._settings.thumbnail_sizes)
        if keys:
            await self._remove(keys)
        await self._in(self._io, lambda: repository.save_view(self._engine, params.view))
        event = params.event
        if event is not None:
            await self._in(
                self._io,
                functools.partial(
                    publish_event,
                    self._engine,
                    event.type,
                    event.data,
                    idempotency_key=event.idempotency_key,
                ),
            )


def _copy(s3: Any, name: str, source: str, target: str, content_type: str) -> None:
    # Server-side: the original's bytes are kept as they are and never pass here.
    s3.copy_object(
        Bucket=name,
        Key=target,
        CopySource={"Bucket": name, "Key": source},
        ContentType=content_type,
        MetadataDirective="REPLACE",
    )


# --- the image processes ---------------------------------------------------------------------

_ENCODERS: ThreadPoolExecutor | None = None


_PR_SET_PDEATHSIG = 1


def _child_init(max_pixels: int, parent: int) -> None:
    global _ENCODERS
    if sys.platform.startswith("linux"):
        # Die with the worker: a SIGKILLed worker would otherwise leave its image
        # processes running, orphaned.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)  # the worker died before this line ran
    # Pillow's own guard, as a second line behind the header check in images.py.
    Image.MAX_IMAGE_PIXELS = max_pixels
    _ENCODERS = ThreadPoolExecutor(2, thread_name_prefix="relay-encode")


def _render_in_child(
    data: bytes, *, filename: str, declared_type: str, sizes: list[int], max_pixels: int
) -> tuple[ImageReport | None, str]:
    """`process_image` in an image process; a rejection comes back as a value (the
    exception would not survive pickling)."""
    try:
        report = process_image(
            data,
            filename=filename,
            declared_type=declared_type,
            sizes=sizes,
            max_pixels=max_pixels,
            pool=_ENCODERS,
        )
    except ImageRejected as rejected:
        return None, rejected.reason.value
    return report, ""


ACTIVITIES = FileActivities


def build_processing_worker(context: WorkerContext) -> Worker:
    """The worker of the processing task queue: `process_upload` only, at most
    `PROCESSING_SLOTS_PER_IMAGE_PROCESS` per image process at once. worker.py runs it
    beside the main worker (and the main worker still serves `process_upload` on the
    file's own queue, for runs started before this queue existed)."""
    activities = FileActivities.from_context(context)
    return Worker(
        context.client,
        task_queue=processing_task_queue(context.settings.temporal_task_queue),
        activities=[activities.process_upload],
        max_concurrent_activities=activities.image_processes * PROCESSING_SLOTS_PER_IMAGE_PROCESS,
        graceful_shutdown_timeout=PROCESSING_SHUTDOWN,
    )


# Workers worker.py runs beside its main one (each polls a task queue of its own).
DEDICATED_WORKERS = (build_processing_worker,)
