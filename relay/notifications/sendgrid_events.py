"""SendGrid's Event Webhook: verify a POST, and read its events as `ProviderEvent`s.

`verify` checks the ECDSA P-256 signature SendGrid puts over the timestamp header followed
by the raw body, with the sendgrid package's own `EventWebhook` and the public key from
SENDGRID_WEBHOOK_PUBLIC_KEY (base64 DER, as SendGrid's settings page shows it), and refuses
a timestamp more than five minutes from now either way, so a captured POST cannot be
replayed later. `parse` maps each event:

    event                            status        suppress
    processed                        SENT          -
    delivered                        DELIVERED     -
    bounce                           BOUNCED       BOUNCE
    dropped                          FAILED        DROPPED
    spamreport                       -             SPAM_REPORT
    unsubscribe, group_unsubscribe   -             UNSUBSCRIBE
    deferred, open, click, other     -             -            (recorded only)

The notification is named by the `relayNotificationId` custom arg that
relay.notifications.sendgrid puts on every personalization (SendGrid copies custom args onto
each event as top-level fields); `provider_message_id` is the X-Message-Id the send
recorded, which is `sg_message_id` up to its first ".". Reasons are kept without addresses.
"""

from __future__ import annotations

import binascii
import functools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from relay.errors import ErrorCode, RelayError
from relay.notifications.contracts import (
    NotificationStatus,
    Provider,
    ProviderEvent,
    SuppressionReason,
)
from relay.notifications.sendgrid import NOTIFICATION_ARG, without_addresses
from relay.settings import Settings

# How far the signed timestamp may be from now, either way.
TOLERANCE_SECONDS = 300
SIGNATURE_HEADER: str = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: str = EventWebhookHeader.TIMESTAMP

STATUSES: dict[str, NotificationStatus] = {
    "processed": NotificationStatus.SENT,
    "delivered": NotificationStatus.DELIVERED,
    "bounce": NotificationStatus.BOUNCED,
    "dropped": NotificationStatus.FAILED,
}
SUPPRESSIONS: dict[str, SuppressionReason] = {
    "bounce": SuppressionReason.BOUNCE,
    "dropped": SuppressionReason.DROPPED,
    "spamreport": SuppressionReason.SPAM_REPORT,
    "unsubscribe": SuppressionReason.UNSUBSCRIBE,
    "group_unsubscribe": SuppressionReason.UNSUBSCRIBE,
}
# Fields worth keeping with the event beyond what ProviderEvent names (none is personal).
_DETAIL_FIELDS = ("type", "status", "bounce_classification", "attempt", "asm_group_id")


def _refused(why: str) -> RelayError:
    return RelayError(ErrorCode.INVALID_SIGNATURE, f"SendGrid event signature refused: {why}")


@functools.lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    # Parsing the key costs more than verifying; keys change only with the settings.
    return EventWebhook(public_key)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return None


def verify(
    settings: Settings, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> None:
    """Raise RelayError(INVALID_SIGNATURE) unless SendGrid signed exactly this body within
    the last five minutes (RelayError(PROVIDER_NOT_CONFIGURED) without a public key)."""
    public_key = settings.sendgrid_webhook_public_key
    if not public_key:
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED, "SENDGRID_WEBHOOK_PUBLIC_KEY is not set"
        )
    signature = _header(headers, SIGNATURE_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise _refused("missing signature headers")
    try:
        signed_at = int(timestamp)
    except ValueError:
        raise _refused("unreadable timestamp") from None
    if abs((time.time() if now is None else now) - signed_at) > TOLERANCE_SECONDS:
        raise _refused("timestamp outside the allowed window")
    try:
        verifier = _verifier(public_key)
    except ValueError:
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED, "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid key"
        ) from None
    try:
        valid = verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        valid = False
    if not valid:
        raise _refused("bad signature")


def parse(body: bytes) -> list[ProviderEvent]:
    """The events of one verified POST (a JSON array); RelayError(VALIDATION_ERROR) when it
    is not one."""
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RelayError(ErrorCode.VALIDATION_ERROR, "SendGrid events are not JSON") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise RelayError(
            ErrorCode.VALIDATION_ERROR, "SendGrid events must be a JSON array of objects"
        )
    parsed = []
    for event in events:
        if not event.get("sg_event_id") or not event.get("event"):
            raise RelayError(
                ErrorCode.VALIDATION_ERROR, "a SendGrid event lacks sg_event_id or event"
            )
        parsed.append(_event(event))
    return parsed


def _event(event: dict[str, Any]) -> ProviderEvent:
    kind = str(event["event"])
    sg_message_id = event.get("sg_message_id")
    notification_id = event.get(NOTIFICATION_ARG)
    # Older payloads nest custom args; SendGrid's current ones put them at the top level.
    if notification_id is None and isinstance(event.get("unique_args"), dict):
        notification_id = event["unique_args"].get(NOTIFICATION_ARG)
    address = event.get("email")
    reason = event.get("reason") or event.get("response")
    status_code = event.get("status")
    return ProviderEvent(
        provider=Provider.SENDGRID,
        event_id=str(event["sg_event_id"]),
        event=kind,
        notification_id=str(notification_id) if notification_id is not None else None,
        provider_message_id=(str(sg_message_id).split(".", 1)[0] if sg_message_id else None),
        status=STATUSES.get(kind),
        occurred_at=_occurred_at(event.get("timestamp")),
        error_code=str(status_code) if kind in ("bounce", "dropped") and status_code else None,
        error_message=without_addresses(str(reason)) if reason else None,
        suppress=SUPPRESSIONS.get(kind),
        address=str(address).strip().lower() if address else None,
        detail={k: event[k] for k in _DETAIL_FIELDS if k in event},
    )


def _occurred_at(timestamp: object) -> datetime | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        return None
