"""The one interface every provider module implements, and what a send returns.

The send pump (activities/notifications.py) opens a queued notification into an
`Outgoing`, picks the provider for its channel, and runs `send` (or `send_bulk`, for
SendGrid's personalizations) inside the provider-call ledger, so a retried send never
reaches the provider twice. A provider module:

- returns a `Sent` for every answer the provider gave: SENT with the provider's message
  id, or FAILED with the provider's own error code when it refused the message (a 4xx:
  a bad number, an invalid address, an unregistered device) — never a retry;
- raises for what is worth retrying, translated by `relay.provider_errors.translate`
  (or `error_for_status`): 429, 5xx, timeouts, refused connections. The ledger reads the
  failure's details to tell "the provider did not act" (retry, or SMTP takes over for
  email) from "the request left and no answer came" (UNKNOWN, never re-sent blindly).

Provider modules never log a recipient, a message's content, a token or a credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.notifications.contracts import Channel, NotificationStatus, Provider


@dataclass
class Outgoing:
    """One message to send, opened from its sealed row.

    `content` holds the API's fields for the channel, validated, with the API's names:
    email: subject, html, text, templateId, templateData, from, replyTo, attachments
      ([{filename, content (base64), type}]); sms: body; whatsapp: body, mediaUrl,
      contentSid, contentVariables; push: title, body, data, android, apns.
    `to` is an email address or an E.164 number (None for push); `tokens` the devices of a
    push. `status_callback` is the URL Twilio reports to (it names this notification)."""

    id: str
    channel: Channel
    to: str | None
    content: dict[str, Any]
    tokens: list[str] = field(default_factory=list)
    status_callback: str | None = None


@dataclass
class TokenResult:
    """Push: what FCM said about one device token. `remove` when FCM reports the token
    dead (UNREGISTERED, SENDER_ID_MISMATCH, or INVALID_ARGUMENT about the token)."""

    token: str
    ok: bool
    message_id: str | None = None
    error_code: str | None = None
    remove: bool = False


@dataclass
class Sent:
    provider: Provider
    status: NotificationStatus  # SENT or FAILED
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    tokens: list[TokenResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """What the ledger records (no recipient, no content)."""
        return {
            "provider": self.provider.value,
            "status": self.status.value,
            "providerMessageId": self.provider_message_id,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "tokens": [
                {
                    "token": t.token,
                    "ok": t.ok,
                    "messageId": t.message_id,
                    "errorCode": t.error_code,
                    "remove": t.remove,
                }
                for t in self.tokens
            ],
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Sent:
        return cls(
            provider=Provider(value["provider"]),
            status=NotificationStatus(value["status"]),
            provider_message_id=value.get("providerMessageId"),
            error_code=value.get("errorCode"),
            error_message=value.get("errorMessage"),
            tokens=[
                TokenResult(
                    token=t["token"],
                    ok=t["ok"],
                    message_id=t.get("messageId"),
                    error_code=t.get("errorCode"),
                    remove=t.get("remove", False),
                )
                for t in value.get("tokens", [])
            ],
        )


class Sender(Protocol):
    provider: Provider

    async def send(self, message: Outgoing) -> Sent: ...

    async def close(self) -> None: ...


class BulkSender(Sender, Protocol):
    """SendGrid: up to 1,000 messages sharing a template in one request, one Sent each."""

    async def send_bulk(self, messages: list[Outgoing]) -> list[Sent]: ...
