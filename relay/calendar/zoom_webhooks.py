"""Zoom's webhooks: verifying a delivery, answering the URL-validation challenge, and where
an event goes (its dedupe id and its `ForwardTarget`). Pure: no HTTP framework, no I/O.

Zoom signs every POST, `endpoint.url_validation` included:

    x-zm-request-timestamp: <unix seconds>
    x-zm-signature:         v0=<hex HMAC-SHA256 keyed with ZOOM_WEBHOOK_SECRET over
                            "v0:{timestamp}:{raw body}">

`verify` recomputes it and compares in constant time (`hmac.compare_digest`), and refuses a
timestamp more than `TOLERANCE_SECONDS` from now either way, so a captured delivery cannot
be replayed later. A missing header, a forged or stale signature is INVALID_SIGNATURE; no
secret configured refuses everything (PROVIDER_NOT_CONFIGURED).

Zoom events carry no id of their own, and Zoom resends the very same body when a delivery
fails. `event_id` derives a stable one from what a resent delivery repeats and two distinct
events do not share: the event type, the meeting instance's uuid (a recurring meeting keeps
its id across occurrences; each occurrence has its own uuid) and `event_ts` (milliseconds,
set when the event happened, not when it was sent). A body lacking those is keyed by the
SHA-256 of its raw bytes, which a resend repeats too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict
from typing import Any

from relay import search_attributes
from relay.calendar.contracts import (
    MEETING_WORKFLOW,
    PROVIDER,
    ZOOM_EVENT_SIGNAL,
    ZOOM_EVENTS,
    MeetingInput,
    meeting_workflow_id,
)
from relay.errors import ErrorCode, RelayError
from relay.inbound.contracts import ForwardTarget

TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "x-zm-signature"
TIMESTAMP_HEADER = "x-zm-request-timestamp"
URL_VALIDATION = "endpoint.url_validation"
# The inbox's columns: event ids up to 255 characters, types up to 200.
MAX_EVENT_ID_CHARS = 255
MAX_TYPE_CHARS = 200
# Zoom's plainToken is about 22 characters; anything much longer is not Zoom's.
MAX_PLAIN_TOKEN_CHARS = 256


def _refused(why: str) -> RelayError:
    return RelayError(ErrorCode.INVALID_SIGNATURE, f"Zoom webhook signature refused: {why}")


def _invalid(field: str, message: str) -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "the body is not a Zoom event",
        [{"field": field, "in": "body", "message": message}],
    )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=` + hex HMAC-SHA256 over `v0:{timestamp}:{body}`, as Zoom computes it."""
    message = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(
    secret: str | None,
    body: bytes,
    timestamp: str | None,
    signed: str | None,
    *,
    now: float,
) -> dict[str, Any]:
    """The event a correctly signed, fresh body carries; raises RelayError otherwise
    (nothing about the secret or the expected signature is in the message)."""
    if not secret:
        raise RelayError(ErrorCode.PROVIDER_NOT_CONFIGURED, "ZOOM_WEBHOOK_SECRET is not set")
    if not timestamp or not signed:
        raise _refused(f"the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required")
    stamp = timestamp.strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise _refused(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    expected = signature(secret, stamp, body)
    # Compared before the clock is looked at, so a forger learns nothing from the order.
    good = hmac.compare_digest(expected.encode("ascii"), signed.strip().encode("utf-8"))
    if not good:
        raise _refused("the signature does not match")
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise _refused(f"the timestamp is more than {TOLERANCE_SECONDS} s from now")
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise _invalid("body", "a JSON object")
    kind = event.get("event")
    if not isinstance(kind, str) or not kind:
        raise _invalid("event", "the event type, a non-empty string")
    return event


def validation_answer(secret: str, event: dict[str, Any]) -> dict[str, str]:
    """The answer to `endpoint.url_validation`: {plainToken, encryptedToken} where
    encryptedToken is the hex HMAC-SHA256 of plainToken keyed with the secret."""
    plain = (event.get("payload") or {}).get("plainToken")
    if not isinstance(plain, str) or not plain or len(plain) > MAX_PLAIN_TOKEN_CHARS:
        raise _invalid("payload.plainToken", "a string of 1 to 256 characters")
    mac = hmac.new(secret.encode("utf-8"), plain.encode("utf-8"), hashlib.sha256)
    return {"plainToken": plain, "encryptedToken": mac.hexdigest()}


def _object(event: dict[str, Any]) -> dict[str, Any]:
    payload = event.get("payload")
    obj = payload.get("object") if isinstance(payload, dict) else None
    return obj if isinstance(obj, dict) else {}


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def event_type(event: dict[str, Any]) -> str:
    return str(event.get("event", ""))[:MAX_TYPE_CHARS]


def event_id(event: dict[str, Any], body: bytes) -> str:
    """The event's stable dedupe id (see the module docstring for why these parts)."""
    obj = _object(event)
    instance = _text(obj.get("uuid")) or _text(obj.get("id"))
    stamp = event.get("event_ts")
    if instance is not None and isinstance(stamp, int) and not isinstance(stamp, bool):
        derived = f"{event_type(event)}:{instance}:{stamp}"
        if len(derived) <= MAX_EVENT_ID_CHARS:
            return derived
    return "sha256:" + hashlib.sha256(body).hexdigest()


def zoom_meeting_id(event: dict[str, Any]) -> str | None:
    """The Zoom meeting id an event Relay applies is about (None for other events)."""
    if event.get("event") not in ZOOM_EVENTS:
        return None
    found = _text(_object(event).get("id"))
    return found if found is not None and len(found) <= MAX_EVENT_ID_CHARS else None


def forward_target(relay_id: str) -> ForwardTarget:
    """Where the inbox forwards an event about Relay's meeting `relay_id`: its workflow, by
    signal-with-start; a run started by the event recovers the meeting from the database."""
    return ForwardTarget(
        workflow_type=MEETING_WORKFLOW,
        workflow_id=meeting_workflow_id(relay_id),
        signal=ZOOM_EVENT_SIGNAL,
        start_arg=asdict(MeetingInput(meeting_id=relay_id, recover=True)),
        search_attributes={
            search_attributes.ENTITY_ID.name: relay_id,
            search_attributes.PROVIDER.name: PROVIDER,
        },
    )
