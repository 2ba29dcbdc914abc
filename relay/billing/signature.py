"""Verifying Stripe's webhook signatures with the stripe package.

`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>` over the raw body;
stripe's verifier compares in constant time and refuses a timestamp more than
`TOLERANCE_SECONDS` off. Every secret in STRIPE_WEBHOOK_SECRET (comma-separated) is
tried, so a rotation has no gap.
"""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

from relay.errors import ErrorCode, RelayError

TOLERANCE_SECONDS = 300


def webhook_secrets(configured: str | None) -> list[str]:
    return [item.strip() for item in (configured or "").split(",") if item.strip()]


def verify_event(payload: bytes, header: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event a correctly signed, fresh payload carries; INVALID_SIGNATURE otherwise."""
    if not secrets:
        raise RelayError(ErrorCode.PROVIDER_NOT_CONFIGURED, "STRIPE_WEBHOOK_SECRET is not set")
    if not header:
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "the Stripe-Signature header is missing")
    text = payload.decode("utf-8", errors="replace")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        break
    else:
        raise RelayError(
            ErrorCode.INVALID_SIGNATURE, "the Stripe signature does not verify or is stale"
        )
    if _timestamp(header) > time.time() + TOLERANCE_SECONDS:
        # stripe's verifier only bounds the past; a signature dated ahead of the clock
        # would stay replayable for that much longer.
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "the Stripe signature is dated ahead")
    try:
        event = json.loads(payload)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "the event is not a Stripe event",
            [{"field": "id", "in": "body", "message": "a Stripe event with an id"}],
        )
    return event


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0
