"""What Twilio posts to Relay: status callbacks (`POST /webhooks/twilio/status`) and
incoming messages (a STOP or START reply), verified and read.

Twilio signs each request (`X-Twilio-Signature`) with the account's auth token over the
full URL it called and the form's parameters. Behind a proxy that URL is not the one the
app sees, so it is rebuilt from PUBLIC_BASE_URL (`public_request_url`); the check itself is
the `twilio` package's `RequestValidator`, which compares in constant time.

Status callbacks carry no timestamp and may arrive out of order or twice; an event's id is
the message sid and status together, so a repeat is recognisably the same event, and the
statuses only move forward where they are applied (contracts.advances).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from relay.errors import ErrorCode, RelayError
from relay.notifications.contracts import (
    Channel,
    NotificationStatus,
    Provider,
    ProviderEvent,
    SuppressionReason,
)
from relay.settings import Settings

WHATSAPP_PREFIX = "whatsapp:"

# Twilio's MessageStatus values (twilio.com/docs/messaging/api/message-resource) and what
# each means for a notification; others (receiving, received, read receipts of parts…)
# are recorded without changing it.
STATUSES: dict[str, NotificationStatus] = {
    "queued": NotificationStatus.SENT,
    "accepted": NotificationStatus.SENT,
    "scheduled": NotificationStatus.SENT,
    "sending": NotificationStatus.SENT,
    "sent": NotificationStatus.SENT,
    "delivered": NotificationStatus.DELIVERED,
    "read": NotificationStatus.DELIVERED,
    "undelivered": NotificationStatus.UNDELIVERED,
    "failed": NotificationStatus.FAILED,
    "canceled": NotificationStatus.FAILED,
}

# Advanced Opt-Out's default keywords: a reply that is exactly one of them (any case) opts
# the number out of, or back into, messages from the account. OPTOUT is among Twilio's
# newer defaults, and the sandbox's.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})


def public_request_url(settings: Settings, path: str, query: str) -> str:
    """The URL Twilio called: PUBLIC_BASE_URL (scheme, host, and any prefix a proxy strips)
    followed by the path and the raw query string the app received."""
    url = settings.base_url + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def verify(settings: Settings, url: str, params: Mapping[str, str], signature: str | None) -> None:
    """Refuse (RelayError INVALID_SIGNATURE) a request Twilio did not sign for `url` (as
    `public_request_url` gives it) and exactly these form parameters."""
    if settings.twilio_auth_token is None:
        raise RelayError(ErrorCode.PROVIDER_NOT_CONFIGURED, "Twilio is not configured")
    if not signature:
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "the X-Twilio-Signature header is missing")
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(url, dict(params), signature):
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "the Twilio signature does not match")


def _required(params: Mapping[str, str], *names: str) -> str:
    for name in names:
        if value := params.get(name):
            return value
    raise RelayError(
        ErrorCode.VALIDATION_ERROR, f"the Twilio callback has no {names[0]}", status=400
    )


def _channel(number: str | None) -> Channel:
    return Channel.WHATSAPP if (number or "").startswith(WHATSAPP_PREFIX) else Channel.SMS


def parse_status(params: Mapping[str, str], notification_id: str | None) -> ProviderEvent:
    """A status callback as a ProviderEvent. `notification_id` is the `notificationId` of
    the callback URL's query (Relay names the notification in the StatusCallback it sends)."""
    sid = _required(params, "MessageSid", "SmsSid")
    status = _required(params, "MessageStatus", "SmsStatus").lower()
    error = params.get("ErrorCode")
    return ProviderEvent(
        provider=Provider.TWILIO,
        event_id=f"{sid}:{status}",
        event=status,
        notification_id=notification_id or None,
        provider_message_id=sid,
        status=STATUSES.get(status),
        error_code=f"TWILIO_{error}" if error else None,
        detail={"channel": _channel(params.get("To")).value},
    )


@dataclass(frozen=True)
class IncomingReply:
    """An opt-out or opt-in reply from `number` (E.164, without `whatsapp:`): suppress the
    number when `opt_out`, lift its suppression otherwise. SMS and WhatsApp share a
    number's suppression (contracts.SuppressionChannel.PHONE)."""

    event_id: str  # the incoming message's sid
    number: str
    opt_out: bool
    keyword: str
    channel: Channel
    reason: SuppressionReason = SuppressionReason.STOP


def parse_incoming(params: Mapping[str, str]) -> IncomingReply | None:
    """An incoming message as an opt-out/opt-in reply, or None for any other message.

    Twilio's `OptOutType` (sent when Advanced Opt-Out matched a keyword, custom ones
    included) decides when present; otherwise the body is matched against the defaults."""
    sid = _required(params, "MessageSid", "SmsMessageSid", "SmsSid")
    sender = _required(params, "From")
    keyword = params.get("Body", "").strip().upper()
    match params.get("OptOutType", "").upper():
        case "STOP":
            opt_out = True
        case "START":
            opt_out = False
        case _ if keyword in OPT_OUT_KEYWORDS:
            opt_out = True
        case _ if keyword in OPT_IN_KEYWORDS:
            opt_out = False
        case _:
            return None
    return IncomingReply(
        event_id=sid,
        number=sender.removeprefix(WHATSAPP_PREFIX),
        opt_out=opt_out,
        keyword=keyword,
        channel=_channel(sender),
    )
