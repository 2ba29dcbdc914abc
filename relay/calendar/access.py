"""Acting with a user's catalog connection (Google Calendar's, or Zoom's for meetings booked
with `zoomIntegrationId`): load the integration, read its token, refresh through the
connection's workflow when due or refused, and turn Google's answers into Relay's errors
(Zoom's are classified by the caller, as for server-to-server Zoom). `ConnectionAccess`
does this for any provider; `GoogleAccess` and `ZoomAccess` say how each is called. The API
routes and the worker's activities both use it; each hands in how a refresh reaches the
connection's workflow (the API: `workflows.clients.oauth.refresh`; an activity: an update
by name), since `relay/` does not import `workflows/`.

A call goes:

    integration → 404 INTEGRATION_NOT_FOUND; not the provider's (google_calendar, zoom),
                  inactive, or not CONNECTED → 409 CONFLICT; NEEDS_REAUTH → 401 NEEDS_REAUTH
    token due   → refresh(integration, force=False) first (the workflow skips it if another
                  caller refreshed already)
    401         → refresh(integration, force=True) once (unless another caller has stored
                  a new token meanwhile: that one is used), retry once; refused again, or
                  the refresh refused (the workflow then marks the connection
                  NEEDS_REAUTH) → 401 NEEDS_REAUTH
    Google 429  → 429 RATE_LIMITED, details.retryAfter (seconds) from Retry-After
                  (also 403 rateLimitExceeded / userRateLimitExceeded, Google's other form)
    Google 404/410 → 404 NOT_FOUND;  other 4xx and 5xx → 502 PROVIDER_ERROR, Google's message

No token appears in an error, a log line or a return value.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError

from relay.calendar.google import GoogleApiError, GoogleCalendar, TokenRejected
from relay.calendar.zoom import ZoomTokenClient, ZoomTokenRejected
from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import Integration
from relay.oauth import repository
from relay.oauth.catalog import Catalog
from relay.oauth.contracts import IntegrationStatus
from relay.oauth.schedule import refresh_due_at
from relay.oauth.tokens import TokenStore
from relay.provider_errors import MAX_RETRY_AFTER

log = logging.getLogger(__name__)

PROVIDER = "google_calendar"
ZOOM_PROVIDER = "zoom"
# How errors name each provider's connection.
_LABELS = {PROVIDER: "Google", ZOOM_PROVIDER: "Zoom"}
DEFAULT_EXPIRATION_BUFFER_SECONDS = 300
# Google's 403 reasons that mean "slow down", not "forbidden".
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})

T = TypeVar("T")


class Refresher(Protocol):
    """Refresh the integration's tokens through its workflow. Raises RelayError
    REFRESH_FAILED when the provider refused the refresh token."""

    async def __call__(self, integration: Integration, *, force: bool) -> object: ...


def require_connection(
    integration: Integration | None, integration_id: uuid.UUID, provider: str
) -> Integration:
    """The integration, if Relay may act with it on `provider` (its catalog key)."""
    if integration is None:
        raise RelayError(
            ErrorCode.INTEGRATION_NOT_FOUND,
            f"no integration {integration_id}",
            {"integrationId": str(integration_id)},
        )
    details = {
        "integrationId": str(integration.id),
        "provider": integration.provider,
        "status": str(integration.status),
    }
    if integration.provider != provider:
        raise RelayError(
            ErrorCode.CONFLICT,
            f"the integration is a {integration.provider} connection, not {provider}",
            details,
        )
    if not integration.is_active:
        raise RelayError(
            ErrorCode.CONFLICT, "the integration is inactive (PATCH isActive)", details
        )
    if integration.status == IntegrationStatus.NEEDS_REAUTH:
        raise RelayError(
            ErrorCode.NEEDS_REAUTH,
            f"the {_LABELS.get(provider, provider)} connection needs the user to reconnect",
            details,
        )
    if integration.status != IntegrationStatus.CONNECTED:
        raise RelayError(
            ErrorCode.CONFLICT, f"the integration is {integration.status}, not CONNECTED", details
        )
    return integration


def require_google(integration: Integration | None, integration_id: uuid.UUID) -> Integration:
    """The integration, if Relay may act with it on Google Calendar."""
    return require_connection(integration, integration_id, PROVIDER)


def relay_error(error: GoogleApiError) -> RelayError:
    """Google's refusal as Relay's error; the message is Google's own (never a token)."""
    details: dict[str, Any] = {
        "provider": PROVIDER,
        "status": error.status,
        "reason": error.reason,
        "transient": error.transient,
    }
    message = f"Google Calendar: {error.message}"
    if error.status == 429 or (error.status == 403 and error.reason in RATE_LIMIT_REASONS):
        retry_after = error.retry_after if error.retry_after is not None else 1.0
        retry_after = min(retry_after, MAX_RETRY_AFTER.total_seconds())
        details |= {"retryAfter": retry_after, "transient": True}
        return RelayError(ErrorCode.RATE_LIMITED, message, details)
    if error.status in (404, 410):
        return RelayError(ErrorCode.NOT_FOUND, message, details)
    return RelayError(ErrorCode.PROVIDER_ERROR, message, details)


def application_error(error: RelayError) -> ApplicationError:
    """For activities: the error as Temporal's failure. Rate limits and Google's transient
    failures are retried (Retry-After as the next delay); everything else is final."""
    details = error.details if isinstance(error.details, dict) else {}
    retry_after = details.get("retryAfter")
    retryable = error.code == ErrorCode.RATE_LIMITED or bool(details.get("transient"))
    return ApplicationError(
        error.message,
        details,
        type=error.code.value,
        non_retryable=not retryable,
        next_retry_delay=timedelta(seconds=retry_after) if retry_after is not None else None,
    )


@dataclass
class ConnectionAccess:
    """Calls on behalf of one Relay connection of `provider` (see the module docstring);
    subclasses say how a call is made with the token and how the provider refuses one."""

    provider: ClassVar[str]
    engine: Engine
    keyring: Keyring
    catalog: Catalog
    refresh: Refresher

    @property
    def label(self) -> str:
        return _LABELS.get(self.provider, self.provider)

    async def integration(self, integration_id: uuid.UUID) -> Integration:
        found = await asyncio.to_thread(repository.get_integration, self.engine, integration_id)
        return require_connection(found, integration_id, self.provider)

    async def _refresh(self, integration: Integration, *, force: bool) -> Integration:
        try:
            await self.refresh(integration, force=force)
        except RelayError as error:
            if error.code in (ErrorCode.REFRESH_FAILED, ErrorCode.NEEDS_REAUTH):
                raise RelayError(
                    ErrorCode.NEEDS_REAUTH,
                    f"{self.label} refused the connection's refresh token; the user must reconnect",
                    {"integrationId": str(integration.id), "provider": self.provider},
                ) from None
            raise
        return await self.integration(integration.id)

    def _due_and_token(self, integration: Integration) -> tuple[bool, str]:
        """Whether the token is due for a refresh, and the token (one thread hop)."""
        due = False
        if integration.expires_at is not None:
            entry = self.catalog.get(integration.provider)
            buffer = entry.token_expiration_buffer if entry else DEFAULT_EXPIRATION_BUFFER_SECONDS
            stored = repository.tokens_stored_at(self.engine, integration.id)
            issued_at = stored or integration.last_sync_at
            due = utcnow() >= refresh_due_at(integration.expires_at, issued_at, buffer)
        return due, self._read_token(integration)

    def _read_token(self, integration: Integration) -> str:
        tokens = TokenStore(self.engine, self.keyring).read(integration.id)
        if tokens is None:
            raise RelayError(
                ErrorCode.CONFLICT,
                "the integration holds no token",
                {"integrationId": str(integration.id)},
            )
        return tokens.access_token

    async def _token(self, integration: Integration) -> str:
        return await asyncio.to_thread(self._read_token, integration)

    async def with_token(
        self,
        integration_id: uuid.UUID,
        attempt: Callable[[str], Awaitable[T]],
        rejected: type[Exception],
        *,
        integration: Integration | None = None,
    ) -> T:
        """`attempt(token)` with the connection's access token; `rejected` is the
        provider's 401 (see the module docstring). `integration`: the row the caller has
        just read (checked with `require_connection`), so it is not read again."""
        if integration is None:
            integration = await self.integration(integration_id)
        due, token = await asyncio.to_thread(self._due_and_token, integration)
        if due:
            integration = await self._refresh(integration, force=False)
            token = await self._token(integration)
        try:
            return await attempt(token)
        except rejected:
            pass
        # Another request may have refreshed since this one read the token: use that
        # one. Otherwise force a refresh; the workflow lets callers that queued behind a
        # refresh share it, so a burst of 401s costs one refresh grant.
        fresh = await self._token(integration)
        if fresh == token:
            log.info("%s refused integration %s's token; refreshing", self.label, integration.id)
            integration = await self._refresh(integration, force=True)
            fresh = await self._token(integration)
        try:
            return await attempt(fresh)
        except rejected:
            log.warning("%s refused integration %s's refreshed token", self.label, integration.id)
            raise RelayError(
                ErrorCode.NEEDS_REAUTH,
                f"{self.label} refused the connection's token even after a refresh; the user "
                "must reconnect",
                {"integrationId": str(integration.id), "provider": self.provider},
            ) from None


@dataclass
class GoogleAccess(ConnectionAccess):
    """Google Calendar calls on behalf of one Relay connection.

    `call` runs the synchronous `GoogleCalendar` in a thread, one client per call."""

    provider: ClassVar[str] = PROVIDER
    api_base: str | None = None

    def _run(self, token: str, action: Callable[[GoogleCalendar], T]) -> T:
        return action(GoogleCalendar(token, self.api_base))

    async def call(self, integration_id: uuid.UUID, action: Callable[[GoogleCalendar], T]) -> T:
        """`action(calendar)` with the connection's token; see the module docstring."""

        async def attempt(token: str) -> T:
            return await asyncio.to_thread(self._run, token, action)

        try:
            return await self.with_token(integration_id, attempt, TokenRejected)
        except GoogleApiError as error:
            raise relay_error(error) from None


@dataclass
class ZoomAccess(ConnectionAccess):
    """Zoom calls with a user's `zoom` catalog connection instead of the server-to-server
    app. Zoom's refusals other than the 401 come out as `ZoomApiError`, for the caller to
    classify as it does server-to-server Zoom's."""

    provider: ClassVar[str] = ZOOM_PROVIDER
    api_base: str = "https://api.zoom.us"

    async def call(
        self, integration_id: uuid.UUID, action: Callable[[ZoomTokenClient], Awaitable[T]]
    ) -> T:
        """`await action(zoom)` with the connection's token; see the module docstring."""

        async def attempt(token: str) -> T:
            zoom = ZoomTokenClient(token, api_base=self.api_base)
            try:
                return await action(zoom)
            finally:
                await zoom.aclose()

        return await self.with_token(integration_id, attempt, ZoomTokenRejected)
