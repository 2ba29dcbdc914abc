"""Files: each file's read model (its status, keys, metadata and renditions).

Only the file workflow's activities write a row (the workflow is the single writer of its
file's state); the routes read it. A row never holds a file's bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, String
from sqlmodel import Field, SQLModel

from relay.db import utcnow
from relay.files.contracts import FileKind, FileStatus
from relay.models.types import JSONType, UTCDateTime


class StoredFile(SQLModel, table=True):
    """A file's read model, written only by its workflow's activities."""

    __tablename__ = "files"

    id: str = Field(primary_key=True, max_length=64)
    kind: FileKind = Field(sa_type=String(16))
    status: FileStatus = Field(default=FileStatus.PENDING_UPLOAD, sa_type=String(16), index=True)
    reason: str | None = Field(default=None, max_length=64)
    user_id: str = Field(max_length=255, index=True)
    conversation_id: str | None = Field(default=None, max_length=255)
    message_id: str | None = Field(default=None, max_length=255, index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    declared_size: int = Field(sa_type=BigInteger)
    upload_key: str = Field(max_length=1024)
    object_key: str | None = Field(default=None, max_length=1024)
    size: int | None = Field(default=None, sa_type=BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    detected_type: str | None = Field(default=None, max_length=255)
    file_metadata: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    renditions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    upload_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
