"""Relay's errors and their codes.

    Exception
     ├── ConfigError        bad or unsafe settings; the CLI prints its message as one line
     └── RelayError         an error with a contract code, raised by routes and shared code;
                            the API renders it as the error envelope with the code's status

Inside workflows and activities the currency is Temporal's `ApplicationError`,
whose `type` is one of the `ErrorCode` values below (see
`relay.provider_errors` for the translation from provider responses).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    INTEGRATION_NOT_FOUND = "INTEGRATION_NOT_FOUND"
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    DELIVERY_NOT_FOUND = "DELIVERY_NOT_FOUND"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    OAUTH_FAILED = "OAUTH_FAILED"
    INVALID_PROVIDER = "INVALID_PROVIDER"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    INVALID_WEBHOOK_URL = "INVALID_WEBHOOK_URL"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    REFRESH_FAILED = "REFRESH_FAILED"
    # The provider refused the connection's tokens even after a refresh: the user reconnects.
    NEEDS_REAUTH = "NEEDS_REAUTH"
    RATE_LIMITED = "RATE_LIMITED"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    RECIPIENT_SUPPRESSED = "RECIPIENT_SUPPRESSED"
    TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    INVALID_CONFIRMATION_CODE = "INVALID_CONFIRMATION_CODE"
    SYNC_FAILED = "SYNC_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    TEMPORAL_UNAVAILABLE = "TEMPORAL_UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    # Used inside Temporal only: the ledger found a call whose outcome is unknown.
    UNKNOWN_OUTCOME = "UNKNOWN_OUTCOME"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.INTEGRATION_NOT_FOUND: 404,
    ErrorCode.WEBHOOK_NOT_FOUND: 404,
    ErrorCode.DELIVERY_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.OAUTH_FAILED: 400,
    ErrorCode.INVALID_PROVIDER: 400,
    ErrorCode.PROVIDER_NOT_CONFIGURED: 400,
    ErrorCode.INVALID_WEBHOOK_URL: 400,
    ErrorCode.INVALID_SIGNATURE: 400,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.REFRESH_FAILED: 401,
    ErrorCode.NEEDS_REAUTH: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PAYMENT_DECLINED: 402,
    ErrorCode.RECIPIENT_SUPPRESSED: 409,
    ErrorCode.TEMPLATE_NOT_FOUND: 400,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.INVALID_CONFIRMATION_CODE: 400,
    ErrorCode.SYNC_FAILED: 500,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.TEMPORAL_UNAVAILABLE: 503,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.UNKNOWN_OUTCOME: 500,
}


class ConfigError(Exception):
    """Settings that are invalid or unsafe; the message names the setting."""


class RelayError(Exception):
    """An error with a contract code; rendered as the envelope by the API."""

    def __init__(
        self, code: ErrorCode, message: str, details: Any = None, *, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        # A provider refusing what the client asked is VALIDATION_ERROR with 400, not
        # the code's usual 422 (ARCHITECTURE.md, HTTP contract).
        self._status = status

    @property
    def status(self) -> int:
        return self._status or self.code.status
