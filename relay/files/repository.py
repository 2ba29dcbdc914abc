"""Files' database reads and writes (synchronous; async callers use `asyncio.to_thread`).

`files` is the files' read model: only the file workflow's activities write it (the
workflow is the single writer), the routes read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.engine import Engine

from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.files.contracts import FileKind, FileStatus, FileView, Rendition
from relay.models.files import StoredFile

F = StoredFile.__table__  # type: ignore[attr-defined]


def _values(view: FileView) -> dict[str, Any]:
    return {
        "kind": view.kind.value,
        "status": view.status.value,
        "reason": view.reason,
        "user_id": view.user_id,
        "conversation_id": view.conversation_id,
        "message_id": view.message_id,
        "filename": view.filename,
        "content_type": view.content_type,
        "declared_size": view.declared_size,
        "upload_key": view.upload_key,
        "object_key": view.object_key,
        "size": view.size,
        "sha256": view.sha256,
        "detected_type": view.detected_type,
        "metadata": view.metadata,
        "renditions": [dataclasses.asdict(rendition) for rendition in view.renditions],
        "upload_expires_at": view.upload_expires_at,
        "updated_at": utcnow(),
    }


def save_view(engine: Engine, view: FileView) -> None:
    """Upsert the read model of one file (its workflow's view of it)."""
    values = _values(view)
    with engine.begin() as connection:
        updated = connection.execute(update(F).where(F.c.id == view.id).values(**values)).rowcount
        if not updated:
            connection.execute(insert(F).values(id=view.id, created_at=utcnow(), **values))


def find(engine: Engine, file_id: str) -> Row[Any] | None:
    with engine.connect() as connection:
        return connection.execute(select(F).where(F.c.id == file_id)).first()


def load(engine: Engine, file_id: str) -> Row[Any]:
    """The file's row; NOT_FOUND when there is none or it was deleted."""
    row = find(engine, file_id)
    if row is None or row.status == FileStatus.DELETED.value:
        raise RelayError(ErrorCode.NOT_FOUND, "no file with that id")
    return row


def view_of(row: Row[Any]) -> FileView:
    """The workflow's view, rebuilt from its read model (DELETE after the run ended)."""
    return FileView(
        id=row.id,
        kind=FileKind(row.kind),
        filename=row.filename,
        content_type=row.content_type,
        declared_size=row.declared_size,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        status=FileStatus(row.status),
        reason=row.reason,
        upload_key=row.upload_key,
        object_key=row.object_key,
        size=row.size,
        sha256=row.sha256,
        detected_type=row.detected_type,
        metadata=dict(row.metadata or {}),
        renditions=[Rendition(**item) for item in row.renditions or []],
        upload_expires_at=as_utc(row.upload_expires_at),
    )


def same_name_in_message(engine: Engine, view: FileView) -> bool:
    """Whether another live attachment of the message has this filename (their objects
    would share keys)."""
    if view.kind != FileKind.ATTACHMENT:
        return False
    live = [FileStatus.PENDING_UPLOAD.value, FileStatus.PROCESSING.value, FileStatus.READY.value]
    query = select(F.c.id).where(
        F.c.kind == FileKind.ATTACHMENT.value,
        F.c.message_id == view.message_id,
        F.c.filename == view.filename,
        F.c.status.in_(live),
        F.c.id != view.id,
    )
    with engine.connect() as connection:
        return connection.execute(query.limit(1)).first() is not None


def find_view(engine: Engine, file_id: str) -> FileView | None:
    """The file's view from its read model, None when there is no such file."""
    row = find(engine, file_id)
    return view_of(row) if row is not None else None


def files_query(
    *, user_id: str | None = None, kind: str | None = None, status: str | None = None
) -> Any:
    """The files GET /v1/files lists (never DELETED ones: they are gone), filtered."""
    query = select(F).where(F.c.status != FileStatus.DELETED.value)
    if user_id is not None:
        query = query.where(F.c.user_id == user_id)
    if kind is not None:
        query = query.where(F.c.kind == kind)
    if status is not None:
        query = query.where(F.c.status == status)
    return query
