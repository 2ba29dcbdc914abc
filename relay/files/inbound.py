"""Where files send S3's event notifications: their declaration for the inbound inbox.

An `ObjectCreated:*` record for an upload key (`temp/{fileId}/{filename}`) in Relay's
bucket goes to that file's workflow, `file-{id}`, as the `uploaded` signal, when the file
is still waiting for its upload or processing it; every other record (another bucket,
another prefix such as the renditions Relay writes itself, another event, a file that
ended or never existed) is recorded as IGNORED. The inbox forwards by signal-with-start,
so the start argument is the file's view marked `started_by_event`: a run it starts (the
file's own run ended between recording and forwarding) ends at once without processing.
Only the bucket, key and sequencer are read from the record; the workflow HEADs the upload
itself before processing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from relay import search_attributes
from relay.files.contracts import (
    FILE_WORKFLOW,
    UPLOADED_SIGNAL,
    FileInput,
    FileStatus,
    FileView,
    file_workflow_id,
)
from relay.inbound.contracts import ForwardTarget

PROVIDER = "s3"
CREATED_PREFIX = "ObjectCreated:"
# The inbox's event_id column holds 255 characters; longer ids are hashed.
MAX_EVENT_ID = 255
LIVE = frozenset({FileStatus.PENDING_UPLOAD, FileStatus.PROCESSING})
# temp/{uploadId}/{filename}: the upload id is the file id (relay.files.layout).
_UPLOAD_KEY = re.compile(r"^temp/(?P<id>[A-Za-z0-9_-]{1,64})/[^/]+$")


@dataclass(frozen=True)
class S3Record:
    """One record of an S3 event notification, as much of it as Relay reads."""

    event_name: str
    bucket: str
    key: str
    sequencer: str
    raw: dict[str, Any]

    @property
    def event_id(self) -> str:
        """bucket + key + sequencer: one object version's event, whatever redelivers it."""
        plain = f"{self.bucket}/{self.key}#{self.sequencer}"
        if len(plain) <= MAX_EVENT_ID:
            return plain
        return (
            f"{self.bucket}#{self.sequencer}#sha256:" + hashlib.sha256(plain.encode()).hexdigest()
        )

    @property
    def created(self) -> bool:
        return self.event_name.startswith(CREATED_PREFIX)

    def payload(self) -> bytes:
        return json.dumps(self.raw, separators=(",", ":"), sort_keys=True).encode()


def s3_records(message: str) -> list[S3Record]:
    """The records of an S3 event notification (SNS's `Message`); none for S3's
    `s3:TestEvent` or anything that is not an S3 event."""
    try:
        data = json.loads(message)
    except ValueError:
        return []
    records = data.get("Records") if isinstance(data, dict) else None
    found: list[S3Record] = []
    for item in records if isinstance(records, list) else []:
        if not isinstance(item, dict):
            continue
        s3 = _dict(item.get("s3"))
        obj = _dict(s3.get("object"))
        bucket = _str(_dict(s3.get("bucket")).get("name"))
        key, sequencer = _str(obj.get("key")), _str(obj.get("sequencer"))
        name = _str(item.get("eventName"))
        if bucket and key and sequencer and name:
            # S3 URL-encodes keys in events (a space arrives as `+`).
            found.append(S3Record(name, bucket, unquote_plus(key), sequencer, item))
    return found


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def upload_file_id(key: str) -> str | None:
    """The file id of an upload key (`temp/{fileId}/{filename}`), None for any other key."""
    match = _UPLOAD_KEY.match(key)
    return match.group("id") if match else None


def _json_safe(view: FileView) -> dict[str, Any]:
    # The target is stored as JSON with the event: datetimes as ISO strings (Temporal's
    # converter reads them back into the dataclass's datetime).
    data = dataclasses.asdict(FileInput(view=view, started_by_event=True))
    expires = view.upload_expires_at
    data["view"]["upload_expires_at"] = expires.isoformat() if expires else None
    return data


def s3_target(
    record: S3Record, bucket: str | None, view_of: Callable[[str], FileView | None]
) -> tuple[ForwardTarget | None, str | None]:
    """The workflow a record goes to (None: IGNORED) and the file it is about.

    `view_of` maps a file id to its read model's view (None when there is no such file).
    """
    file_id = upload_file_id(record.key)
    if file_id is None:
        return None, None
    if not record.created or record.bucket != bucket:
        return None, file_id
    view = view_of(file_id)
    if view is None or view.status not in LIVE or view.upload_key != record.key:
        return None, file_id
    return (
        ForwardTarget(
            workflow_type=FILE_WORKFLOW,
            workflow_id=file_workflow_id(file_id),
            signal=UPLOADED_SIGNAL,
            start_arg=_json_safe(view),
            search_attributes={
                search_attributes.ENTITY_ID.name: file_id,
                search_attributes.PROVIDER.name: PROVIDER,
                search_attributes.USER_ID.name: view.user_id,
            },
        ),
        file_id,
    )
