"""One translation from provider responses and SDK exceptions to Temporal failures.

Activities call `raise_for_status` on an HTTP response, or `translate` on an
exception a provider's SDK raised, and let the result propagate:

    permanent (4xx other than 408/425/429)  → non-retryable ApplicationError, type = Relay code
    transient (408, 425, 429, 5xx, timeouts,
               connection errors)           → retryable ApplicationError; Retry-After becomes
                                              the next retry delay

Messages carry the provider, the status and a short reason: never a request body,
a header or a credential.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode

TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Retry-After above this is treated as this: a provider asking for a day of silence
# should not park an activity beyond what an operator can see happening.
MAX_RETRY_AFTER = timedelta(hours=1)
_REASON_LIMIT = 200


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> timedelta | None:
    """Seconds or an HTTP date, as RFC 9110 allows; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = when - (now or datetime.now(UTC))
    return max(timedelta(0), min(delay, MAX_RETRY_AFTER))


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def error_for_status(
    provider: str,
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    reason: str | None = None,
    permanent_code: ErrorCode = ErrorCode.PROVIDER_ERROR,
) -> ApplicationError:
    """The failure for a non-2xx response from `provider`."""
    reason = (reason or "").strip()[:_REASON_LIMIT]
    message = f"{provider} answered HTTP {status}" + (f": {reason}" if reason else "")
    details = {"provider": provider, "status": status}
    if is_transient_status(status):
        code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_ERROR
        retry_after = parse_retry_after(_header(headers, "retry-after"))
        return ApplicationError(message, details, type=code.value, next_retry_delay=retry_after)
    return ApplicationError(message, details, type=permanent_code.value, non_retryable=True)


def raise_for_status(
    provider: str,
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    reason: str | None = None,
    permanent_code: ErrorCode = ErrorCode.PROVIDER_ERROR,
) -> None:
    if status < 400:
        return
    raise error_for_status(
        provider, status, headers=headers, reason=reason, permanent_code=permanent_code
    )


def translate(provider: str, exc: BaseException) -> ApplicationError:
    """The failure for an exception raised while talking to `provider`.

    Understands httpx and aiohttp errors, and SDK errors that expose an HTTP status
    the usual ways (`status_code`, `http_status`, `status`, on the exception or its
    response; botocore's `response["ResponseMetadata"]`) with optional headers.
    Anything else is transient: an unknown failure deserves a retry, not a verdict.
    A failure to connect says so in its details (`"connected": False`).
    """
    if isinstance(exc, ApplicationError):
        return exc
    status = _status_of(exc)
    if status is not None:
        return error_for_status(
            provider, status, headers=_headers_of(exc), reason=type(exc).__name__
        )
    kind = "timed out" if _is_timeout(exc) else f"failed ({type(exc).__name__})"
    details: dict[str, object] = {"provider": provider}
    if _never_connected(exc):
        # Nothing reached the provider, so it cannot have acted (see relay.ledger).
        kind = f"could not connect ({type(exc).__name__})"
        details["connected"] = False
    return ApplicationError(
        f"call to {provider} {kind}", details, type=ErrorCode.PROVIDER_ERROR.value
    )


# Failures raised before a request could be sent: httpx, aiohttp, requests, the socket.
_CONNECT_FAILURES = frozenset(
    {
        "ConnectError",  # httpx: refused, DNS, TLS handshake
        "ConnectTimeout",  # httpx, requests
        "ClientConnectorError",  # aiohttp (and its DNS / certificate / SSL variants)
        "ConnectionTimeoutError",  # aiohttp: the connect phase timed out
        "ConnectionRefusedError",
        "gaierror",
    }
)


def _never_connected(exc: BaseException) -> bool:
    return any(cls.__name__ in _CONNECT_FAILURES for cls in type(exc).__mro__)


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    return "timeout" in type(exc).__name__.lower()


def _sources(exc: BaseException) -> list[object]:
    """The exception and the response objects SDKs hang on it (httpx and requests
    `response`, firebase-admin `http_response`, google-api-python-client `resp`)."""
    return [exc, *(getattr(exc, attr, None) for attr in ("response", "http_response", "resp"))]


def _status_of(exc: BaseException) -> int | None:
    for source in _sources(exc):
        for attr in ("status_code", "http_status", "status"):
            value = getattr(source, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    metadata = _boto_metadata(exc)
    status = metadata.get("HTTPStatusCode")
    if isinstance(status, int) and 100 <= status <= 599:
        return status
    return None


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    for source in _sources(exc):
        for attr in ("headers", "http_headers"):
            value = getattr(source, attr, None)
            if isinstance(value, Mapping):
                return value
    headers = _boto_metadata(exc).get("HTTPHeaders")
    return headers if isinstance(headers, Mapping) else None


def _boto_metadata(exc: BaseException) -> Mapping[str, object]:
    """botocore's ClientError keeps the HTTP status in a dict: response.ResponseMetadata."""
    response = getattr(exc, "response", None)
    metadata = response.get("ResponseMetadata") if isinstance(response, Mapping) else None
    return metadata if isinstance(metadata, Mapping) else {}


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
