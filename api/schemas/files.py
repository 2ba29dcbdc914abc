"""Files on the wire (camelCase): the upload request, the presigned upload, the file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from api.envelope import ApiModel
from api.schemas.inbound import InboundAccepted
from relay.files.contracts import FileKind, FileStatus

_CONTENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"


class FileCreate(ApiModel):
    kind: FileKind = Field(description="`avatar` or `attachment`; anything else is 422.")
    filename: str = Field(min_length=1, max_length=255, examples=["holiday.jpg"])
    content_type: str = Field(pattern=_CONTENT_TYPE, examples=["image/jpeg"])
    size: int = Field(ge=1, description="Bytes; the presigned POST admits exactly this many.")
    user_id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:@-]+$")
    conversation_id: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:@-]+$"
    )
    message_id: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:@-]+$"
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _attachment_ids(self) -> FileCreate:
        if self.kind == FileKind.ATTACHMENT and not (self.conversation_id and self.message_id):
            raise ValueError("an attachment needs conversationId and messageId")
        return self


class FileUpload(ApiModel):
    id: str
    status: FileStatus
    upload_url: str = Field(description="POST a multipart form here: uploadFields, then `file`.")
    upload_fields: dict[str, str]
    expires_at: datetime | None = Field(
        default=None, description="After this S3 refuses the upload and Relay deletes it."
    )
    key: str = Field(description="Where the upload lands (temp/{uploadId}/…).")


class RenditionOut(ApiModel):
    name: str
    width: int
    height: int
    bytes: int
    content_type: str
    url: str | None = Field(
        default=None, description="Signed, valid FILE_URL_TTL; omitted in lists (GET the file)."
    )


class FileOut(ApiModel):
    id: str
    kind: FileKind
    status: FileStatus
    reason: str | None = None
    filename: str
    content_type: str = Field(description="The real type once processed (sniffed for images).")
    declared_content_type: str
    size: int | None = None
    sha256: str | None = None
    user_id: str
    conversation_id: str | None = None
    message_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    url: str | None = Field(
        default=None,
        description="The original, byte for byte (READY); omitted in lists (GET the file).",
    )
    renditions: list[RenditionOut] = Field(default_factory=list)
    urls_expire_at: datetime | None = None
    upload_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class FileDeleted(ApiModel):
    id: str
    deleted: bool = True


class S3EventsAccepted(ApiModel):
    """What POST /webhooks/s3 answers: the SNS message's type and, for a Notification, each
    S3 record as the inbound inbox took it (none for S3's test event)."""

    type: str
    message_id: str
    confirmed: bool = Field(
        default=False, description="A SubscriptionConfirmation that Relay confirmed."
    )
    events: list[InboundAccepted] = Field(default_factory=list)
