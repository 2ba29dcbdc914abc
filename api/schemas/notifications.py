"""Notifications on the wire (camelCase): sends per channel, bulk sends, a multi-channel
notification, a notification with its events, suppressions."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, EmailStr, Field, field_validator, model_validator

from api.envelope import ApiModel
from relay.notifications.contracts import Channel, NotificationStatus

_ID = r"^[A-Za-z0-9._:@-]+$"
# Attachments travel inside the request and the sealed row: keep them small.
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_BULK = 10_000


def _e164(value: str) -> str:
    from relay.notifications.phones import to_e164

    try:
        return to_e164(value)
    except ValueError as exc:
        raise ValueError("must be a phone number in E.164 form (+14155550123)") from exc


Phone = Annotated[str, Field(min_length=2, max_length=32), AfterValidator(_e164)]
Email = Annotated[EmailStr, AfterValidator(lambda value: value.lower())]
TemplateId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class Attachment(ApiModel):
    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(description="The file's bytes, base64.")
    type: str = Field(default="application/octet-stream", max_length=255)

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
        if len(raw) > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"at most {MAX_ATTACHMENT_BYTES} bytes")
        return value


class SendOptions(ApiModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ID)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    critical: bool = Field(
        default=False, description="Send even to a suppressed recipient (a security alert)."
    )


class EmailContent(ApiModel):
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    html: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    text: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    template_id: TemplateId | None = None
    template_data: dict[str, Any] | None = None
    from_: Email | None = Field(default=None, alias="from")
    reply_to: Email | None = None
    attachments: list[Attachment] | None = Field(default=None, max_length=10)

    @model_validator(mode="after")
    def _content(self) -> EmailContent:
        if self.template_id is None:
            if not self.subject:
                raise ValueError("subject is required without templateId")
            if not (self.html or self.text):
                raise ValueError("html or text is required without templateId")
        return self


class EmailSend(EmailContent, SendOptions):
    to: Email


class BulkRecipient(ApiModel):
    to: Email
    template_data: dict[str, Any] | None = None
    user_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ID)


class EmailBulkSend(ApiModel):
    recipients: list[BulkRecipient] = Field(min_length=1, max_length=MAX_BULK)
    template_id: TemplateId
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    from_: Email | None = Field(default=None, alias="from")
    reply_to: Email | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    critical: bool = False


class SmsContent(ApiModel):
    body: str = Field(min_length=1, max_length=1600)


class SmsSend(SmsContent, SendOptions):
    to: Phone


class SmsBulkRecipient(ApiModel):
    to: Phone
    body: str | None = Field(default=None, min_length=1, max_length=1600)
    user_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ID)


class SmsBulkSend(ApiModel):
    recipients: list[SmsBulkRecipient] = Field(min_length=1, max_length=MAX_BULK)
    body: str | None = Field(
        default=None, min_length=1, max_length=1600, description="Unless each recipient has one."
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    critical: bool = False

    @model_validator(mode="after")
    def _bodies(self) -> SmsBulkSend:
        if self.body is None and any(r.body is None for r in self.recipients):
            raise ValueError("body is required unless every recipient has one")
        return self


class WhatsAppContent(ApiModel):
    body: str | None = Field(default=None, min_length=1, max_length=4096)
    media_url: list[Annotated[str, Field(pattern=r"^https?://", max_length=2048)]] | None = Field(
        default=None, max_length=10
    )
    content_sid: str | None = Field(default=None, pattern=r"^HX[0-9a-fA-F]{32}$")
    content_variables: dict[str, str] | None = None

    @model_validator(mode="after")
    def _something(self) -> WhatsAppContent:
        if not (self.body or self.media_url or self.content_sid):
            raise ValueError("body, mediaUrl or contentSid is required")
        return self


class WhatsAppSend(WhatsAppContent, SendOptions):
    to: Phone


class PushContent(ApiModel):
    title: str = Field(min_length=1, max_length=255)
    body: str = Field(min_length=1, max_length=4096)
    data: dict[str, str] | None = None
    android: dict[str, Any] | None = None
    apns: dict[str, Any] | None = None


class PushSend(PushContent, SendOptions):
    tokens: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        default=None, max_length=10_000, description="Or userId: the user's registered devices."
    )

    @model_validator(mode="after")
    def _audience(self) -> PushSend:
        if not (self.user_id or self.tokens):
            raise ValueError("userId or tokens is required")
        return self


class EmailChannel(EmailContent):
    to: Email


class SmsChannel(SmsContent):
    to: Phone


class WhatsAppChannel(WhatsAppContent):
    to: Phone


class MultiChannelSend(SendOptions):
    channels: list[Channel] = Field(min_length=1, max_length=4)
    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    whatsapp: WhatsAppChannel | None = None
    push: PushContent | None = None

    @model_validator(mode="after")
    def _content_per_channel(self) -> MultiChannelSend:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("each channel at most once")
        for channel in self.channels:
            if getattr(self, channel.value) is None:
                raise ValueError(f"channel {channel.value} needs its content ({channel.value})")
        if Channel.PUSH in self.channels and not self.user_id:
            raise ValueError("push needs userId (its devices)")
        return self


class NotificationEventOut(ApiModel):
    provider: str
    event: str
    status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    occurred_at: datetime | None = None
    received_at: datetime


class NotificationOut(ApiModel):
    id: str
    channel: Channel | None = None
    channels: list[str] | None = None
    parent_id: str | None = None
    status: NotificationStatus
    provider: str | None = None
    provider_message_id: str | None = None
    user_id: str | None = None
    to: str | None = None
    critical: bool = False
    batch_id: str | None = None
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    sent_at: datetime | None = None
    final_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    events: list[NotificationEventOut] | None = Field(
        default=None, description="Every send and provider event, oldest first (not in lists)."
    )


class Queued(ApiModel):
    id: str
    status: NotificationStatus
    duplicate: bool = False


class BulkRecipientResult(ApiModel):
    to: str
    id: str | None = None
    status: str
    error_code: str | None = None


class BulkQueued(ApiModel):
    batch_id: str
    queued: int
    refused: int
    recipients: list[BulkRecipientResult]


class SuppressionOut(ApiModel):
    channel: Literal["email", "phone"]
    address: str
    reason: str
    source: str | None = None
    created_at: datetime
