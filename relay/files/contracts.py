"""What crosses Temporal for files: the file workflow's input, view and messages, its
activities' inputs and results, the status enum, the rejection reasons, the workflow-id
function.

Standard library and temporalio only. Object keys and metadata cross Temporal; a file's
bytes never do (the activities read and write S3 themselves). New fields get defaults so
recorded histories still decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class FileStatus(StrEnum):
    PENDING_UPLOAD = "PENDING_UPLOAD"
    PROCESSING = "PROCESSING"
    READY = "READY"
    REJECTED = "REJECTED"
    # Relay's own: DELETE /v1/files/{id} removed every object; the API answers 404.
    DELETED = "DELETED"


ENDED = frozenset({FileStatus.READY, FileStatus.REJECTED, FileStatus.DELETED})


class FileKind(StrEnum):
    AVATAR = "avatar"
    ATTACHMENT = "attachment"


class RejectReason(StrEnum):
    """Why a file was rejected (`reason` on the wire and in `file.rejected`)."""

    NOT_AN_IMAGE = "not_an_image"  # declared image/*, bytes Pillow does not identify
    TYPE_MISMATCH = "type_mismatch"  # declared one image type, the bytes are another
    TRUNCATED_IMAGE = "truncated_image"  # identified, but the data ends early or is corrupt
    TOO_MANY_PIXELS = "too_many_pixels"  # past IMAGE_MAX_PIXELS: a decompression bomb guard
    TOO_LARGE = "too_large"  # past FILE_MAX_BYTES
    SIZE_MISMATCH = "size_mismatch"  # the object's bytes are not the declared size
    UPLOAD_EXPIRED = "upload_expired"  # never completed within UPLOAD_EXPIRY
    PROCESSING_FAILED = "processing_failed"  # a step failed past its retries


FILE_WORKFLOW = "FileWorkflow"
# The S3 event notification (POST /webhooks/s3) reaches the workflow by this name.
UPLOADED_SIGNAL = "uploaded"


# process_upload runs on a task queue of its own, polled by a worker whose activity slots
# match its image processes (activities.files.build_processing_worker): a burst waits in
# Temporal, where any worker can take it, not in one worker's slots.
PROCESSING_QUEUE_SUFFIX = "-files-processing"


def processing_task_queue(task_queue: str) -> str:
    """The task queue of `process_upload` for a worker polling `task_queue`."""
    return f"{task_queue}{PROCESSING_QUEUE_SUFFIX}"


def file_workflow_id(file_id: str) -> str:
    return f"file-{file_id}"


@dataclass
class Rendition:
    """One derived object: `thumb-{size}-{filename}` or the compressed rendition."""

    name: str
    key: str
    width: int
    height: int
    bytes: int
    content_type: str


@dataclass
class FileView:
    """A file as the API shows it; the workflow's state."""

    id: str
    kind: FileKind
    filename: str
    content_type: str
    declared_size: int
    user_id: str
    conversation_id: str | None = None
    message_id: str | None = None
    status: FileStatus = FileStatus.PENDING_UPLOAD
    reason: str | None = None
    upload_key: str = ""
    # Where the original lives once processed (byte for byte), and its derived objects.
    object_key: str | None = None
    size: int | None = None
    sha256: str | None = None
    # The real type, sniffed from the bytes (the declared one for non-images).
    detected_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    renditions: list[Rendition] = field(default_factory=list)
    upload_expires_at: datetime | None = None
    writes: int = 0


@dataclass
class FileInput:
    """A new file (`view` PENDING_UPLOAD) or, for DELETE after the workflow ended, the
    file as it was (`view` ended): that run only waits for the `delete` update. With
    `started_by_event`, a run an S3 event started: it ends at once."""

    view: FileView
    upload_expiry_seconds: float = 86400.0
    # Set in the start argument S3 events are forwarded with (signal-with-start): a run
    # that an event starts (the file's own run has ended) processes nothing and ends.
    started_by_event: bool = False


@dataclass
class CompleteUpload:
    """POST /v1/files/{id}/complete, or an S3 ObjectCreated event for the upload key (the
    inbound inbox sends an `InboundEventSignal`, whose fields this shares)."""

    source: str = "api"
    event_id: str | None = None
    provider: str | None = None
    inbox_id: str | None = None


# --- activities -------------------------------------------------------------------------------


@dataclass
class UploadCheck:
    """HEAD of the upload key: whether the object is there, and its size."""

    exists: bool
    size: int = 0


@dataclass
class ProcessInput:
    view: FileView


@dataclass
class ProcessResult:
    """Either `reason` (rejected: nothing was written) or the original's final key, the
    renditions and the metadata (everything was written)."""

    reason: str | None = None
    object_key: str | None = None
    size: int = 0
    sha256: str | None = None
    detected_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    renditions: list[Rendition] = field(default_factory=list)


@dataclass
class FinishInput:
    """The last step of a transition, in one activity (each part idempotent): delete
    `remove_keys` (with `remove_all`, every key the file may have written), record `view`,
    publish `event` when given."""

    view: FileView
    remove_keys: list[str] = field(default_factory=list)
    remove_all: bool = False
    event: FileEvent | None = None


@dataclass
class FileEvent:
    type: str
    data: dict[str, Any]
    idempotency_key: str


def file_event(view: FileView, type: str) -> FileEvent:
    """`file.ready` or `file.rejected`: the file's description, never a URL (they expire;
    GET /v1/files/{id} signs fresh ones)."""
    data: dict[str, Any] = {
        "fileId": view.id,
        "kind": view.kind.value,
        "status": view.status.value,
        "userId": view.user_id,
        "conversationId": view.conversation_id,
        "messageId": view.message_id,
        "filename": view.filename,
        "contentType": view.detected_type or view.content_type,
        "size": view.size,
        "sha256": view.sha256,
    }
    if view.reason:
        data["reason"] = view.reason
    if view.status == FileStatus.READY:
        data["metadata"] = view.metadata
        data["renditions"] = [
            {"name": r.name, "width": r.width, "height": r.height, "bytes": r.bytes}
            for r in view.renditions
        ]
    return FileEvent(type=type, data=data, idempotency_key=f"{file_workflow_id(view.id)}:{type}")
