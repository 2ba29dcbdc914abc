"""What every Stripe capability shares: the SDK client, calling it from an activity, reading
its objects' ids and times, and turning its errors into Temporal failures with Relay's
error codes (billing and payments both call Stripe through this module).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import stripe
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.provider_errors import translate
from relay.settings import Settings

PROVIDER = "stripe"


def stripe_client(settings: Settings) -> stripe.StripeClient | None:
    """The SDK client for the configured Stripe (None when no key is set)."""
    if settings.stripe_secret_key is None:
        return None
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=0,  # Temporal retries activities; no retry loop inside one
    )


def configured(client: stripe.StripeClient | None) -> stripe.StripeClient:
    """`client`, or a non-retryable PROVIDER_NOT_CONFIGURED failure when no key is set."""
    if client is None:
        raise ApplicationError(
            "STRIPE_SECRET_KEY is not set",
            type=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
            non_retryable=True,
        )
    return client


async def call(
    field: str, request: Callable[[], Any], fields: Mapping[str, str] | None = None
) -> Any:
    """Run one blocking SDK request off the event loop; a Stripe error becomes `refusal`,
    naming `field` (or the API field `fields` maps Stripe's `param` to)."""
    try:
        return await asyncio.to_thread(request)
    except stripe.StripeError as exc:
        param = str(getattr(exc, "param", None) or "")
        raise refusal(exc, (fields or {}).get(param, field)) from None


def as_dict(obj: Any) -> dict[str, Any]:
    """A StripeObject (or a dict, or an id) as a plain dict."""
    if obj is None or isinstance(obj, str):
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()  # type: ignore[no-any-return]
    return dict(obj)


def timestamp(value: object) -> datetime | None:
    """A Stripe time (epoch seconds) as an aware datetime; None for none or 0."""
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def object_id(value: object) -> str | None:
    """The id of a Stripe reference, expanded (an object) or not (its id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def refusal(exc: Exception, field: str) -> ApplicationError:
    """Stripe's answer to a call as a Temporal failure.

    Stripe refusing what the client asked (an unknown price or customer: 400/404
    `invalid_request_error`) is the client's error: non-retryable VALIDATION_ERROR naming
    the field, Stripe's code and message in the details. A declined card is
    PAYMENT_DECLINED. A Stripe that failed (5xx, 429, no connection) is transient.
    """
    if isinstance(exc, stripe.CardError):
        return ApplicationError(
            "the card was declined",
            {"field": field, "code": exc.code, "declineCode": getattr(exc, "decline_code", None)},
            type=ErrorCode.PAYMENT_DECLINED.value,
            non_retryable=True,
        )
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 0) in (400, 404):
        return ApplicationError(
            f"Stripe refused the request: {exc.user_message or exc.code or 'invalid request'}",
            [
                {
                    "field": field,
                    "in": "body",
                    "message": str(exc.user_message or "Stripe refused this value")[:300],
                    "code": exc.code,
                    "param": exc.param,
                }
            ],
            type=ErrorCode.VALIDATION_ERROR.value,
            non_retryable=True,
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ApplicationError(
            "Stripe refused Relay's key (STRIPE_SECRET_KEY)",
            {"provider": PROVIDER},
            type=ErrorCode.PROVIDER_ERROR.value,
            non_retryable=True,
        )
    return translate(PROVIDER, exc)
