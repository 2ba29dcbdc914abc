"""Publications on the wire (camelCase): a create, and a publication with its targets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from api.envelope import ApiModel
from relay.db import as_utc
from relay.publishing.contracts import PublicationStatus, TargetStatus

MAX_TEXT = 65_536
MAX_TARGETS = 50
MAX_MEDIA = 10
_ID = r"^[A-Za-z0-9._:@-]+$"


# The files capability's ids (api/routes/files.py `file_id_for`).
FileId = Annotated[str, StringConstraints(pattern=r"^file_[0-9a-f]{24}$")]


class PublicationCreate(ApiModel):
    content_id: str = Field(min_length=1, max_length=255, pattern=_ID)
    user_id: str = Field(min_length=1, max_length=255)
    text: str = Field(
        max_length=MAX_TEXT,
        description="The post. Over a platform's limit, that target is SKIPPED (the limit "
        "named) while the others go on.",
    )
    link: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    media_file_ids: list[FileId] = Field(
        default_factory=list,
        max_length=MAX_MEDIA,
        description="Files (the files capability: the `id` POST /v1/files answered) that "
        "are READY; 409 otherwise.",
    )
    integration_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TARGETS,
        description="Default: every CONNECTED integration of the user whose provider can "
        "publish (twitter, linkedin, facebook, instagram, youtube, tiktok).",
    )
    scheduled_at: datetime | None = Field(
        default=None, description="RFC 3339 with an offset; waited for on a durable timer."
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give an offset (2026-12-01T09:00:00Z)")
        return value.astimezone(UTC) if value is not None else None


class Target(ApiModel):
    integration_id: str
    provider: str
    status: TargetStatus
    remote_id: str | None = None
    url: str | None = None
    attempts: int = 0
    last_error: str | None = Field(
        default=None, description="The last failure, or why the target was SKIPPED."
    )
    error_code: str | None = None
    skip_reason: str | None = Field(
        default=None, description="TEXT_TOO_LONG, MEDIA_REQUIRED, MEDIA_UNSUPPORTED, …"
    )
    delete_error: str | None = Field(
        default=None, description="Why the post is still up after DELETE (not deletable)."
    )
    published_at: datetime | None = None


class Publication(ApiModel):
    id: str
    content_id: str
    user_id: str
    status: PublicationStatus
    text: str
    link: str | None = None
    media_file_ids: list[str] = Field(default_factory=list)
    scheduled_at: datetime | None = None
    idempotency_key: str | None = None
    targets: list[Target]
    created_at: datetime
    updated_at: datetime


def _time(value: Any) -> datetime | None:
    return as_utc(value) if value is not None else None


def target_of(row: Any) -> dict[str, Any]:
    return Target(
        integration_id=row.integration_id,
        provider=row.provider,
        status=row.status,
        remote_id=row.remote_id,
        url=row.url,
        attempts=row.attempts,
        last_error=row.last_error,
        error_code=row.error_code,
        skip_reason=row.skip_reason,
        delete_error=row.delete_error,
        published_at=_time(row.published_at),
    ).model_dump(by_alias=True, mode="json")


def publication_of(row: Any, targets: list[Any]) -> dict[str, Any]:
    return Publication(
        id=str(row.id),
        content_id=row.content_id,
        user_id=row.user_id,
        status=row.status,
        text=row.text,
        link=row.link,
        media_file_ids=list(row.media_file_ids or []),
        scheduled_at=_time(row.scheduled_at),
        idempotency_key=row.idempotency_key,
        targets=[Target.model_validate(target_of(t)) for t in targets],
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    ).model_dump(by_alias=True, mode="json")
