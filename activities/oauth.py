"""OAuth activities: every network call and database write of an integration's workflow.

`OAuthActivities` holds one `httpx.AsyncClient` for all providers. Tokens enter and
leave only here: each activity takes an integration id, reads what it needs from the
database (the sealed code and verifier, the sealed tokens), talks to the provider, and
writes the result back sealed, so nothing secret is ever an activity input or result
and so never reaches the workflow's history.

Provider answers are classified by `relay.oauth.protocol`: transient failures
(timeouts, 429, 5xx, temporarily_unavailable) are retried by Temporal with backoff and
`Retry-After`; `invalid_grant` on a refresh is a non-retryable `REFRESH_FAILED`, on a
code exchange a non-retryable `OAUTH_FAILED`. Every exchange, refresh, revocation and
account lookup is written to integration_sync_logs, failed attempts included.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode
from relay.models.oauth import Integration, OAuthState, SyncAction, SyncStatus
from relay.oauth import repository
from relay.oauth.catalog import Catalog, ProviderEntry, load_catalog
from relay.oauth.contracts import (
    EVENT_ERROR,
    ConfirmationCheck,
    ConfirmationResult,
    DisconnectInput,
    ExchangeCodeInput,
    ExpiryOutcome,
    IntegrationRef,
    IntegrationSnapshot,
    RefreshTokensInput,
    RevocationResult,
    StatusChange,
    TokenInfo,
)
from relay.oauth.flow import code_context, verifier_context
from relay.oauth.protocol import (
    TokenRequest,
    TokenResponse,
    access_token_request,
    account_facts,
    account_name,
    exchange_grant,
    parse_token_response,
    refresh_grant,
    revocation_outcome,
    revocation_request,
    token_request,
)
from relay.oauth.tokens import Tokens, TokenStore
from relay.provider_errors import translate
from relay.settings import Settings
from relay.worker_context import WorkerContext

HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
USER_AGENT = "Relay (+https://github.com/relay)"


class OAuthActivities:
    """Token exchange, refresh, revocation and account lookup for every catalog provider.

    Guarantees: no token or code in any input, result, log line or failure message;
    a refresh stores the new access token and the rotated refresh token (or keeps the
    old one when the provider returns none) in one conditional UPDATE; a retried code
    exchange returns the stored result instead of spending the code twice.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        http: httpx.AsyncClient,
        catalog: Catalog | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._keyring = keyring
        self._http = http
        self._catalog = catalog or load_catalog(settings.providers_file)
        self._tokens = TokenStore(engine, keyring)

    @classmethod
    def from_context(cls, context: WorkerContext) -> OAuthActivities:
        """The worker's instance; a bad PROVIDERS_FILE stops the worker here, before any
        client is opened, and the HTTP client is closed with the worker."""
        catalog = load_catalog(context.settings.providers_file)
        http = httpx.AsyncClient(
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        context.closers.append(http.aclose)
        return cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            http=http,
            catalog=catalog,
        )

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.load_integration,
            self.exchange_oauth_code,
            self.exchange_long_lived_token,
            self.fetch_oauth_account_name,
            self.refresh_oauth_tokens,
            self.revoke_oauth_tokens,
            self.record_integration_status,
            self.expire_oauth_authorization,
            self.check_oauth_confirmation,
            self.wipe_integration_credentials,
        ]

    # --- helpers -------------------------------------------------------------------------

    def _entry(self, provider: str) -> ProviderEntry:
        entry = self._catalog.get(provider)
        if entry is None:
            raise ApplicationError(
                f"provider {provider!r} is no longer in the catalog",
                type=ErrorCode.INVALID_PROVIDER.value,
                non_retryable=True,
            )
        return entry

    def _client(self, entry: ProviderEntry) -> tuple[str, str]:
        pair = self._settings.oauth_clients.get(entry.key)
        if pair is None:
            raise ApplicationError(
                f"{entry.key} has no client credentials "
                f"({entry.key.upper()}_CLIENT_ID / {entry.key.upper()}_CLIENT_SECRET)",
                type=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
                non_retryable=True,
            )
        return pair[0], pair[1].get_secret_value()

    async def _integration(self, integration_id: uuid.UUID) -> Integration:
        integration = await asyncio.to_thread(
            repository.get_integration, self._engine, integration_id
        )
        if integration is None:
            raise _not_found(integration_id)
        return integration

    async def _post(self, provider: str, request: TokenRequest) -> httpx.Response:
        try:
            if request.query is not None:
                return await self._http.get(
                    request.url, headers=request.headers, params=request.query
                )
            return await self._http.post(
                request.url, headers=request.headers, data=request.form, json=request.json
            )
        except httpx.HTTPError as exc:
            # The exception's text may quote the request; the translation never does.
            raise translate(provider, exc) from None

    @staticmethod
    def _scheduled_time() -> datetime:
        # Expiry is counted from when the attempt was scheduled, before the request left:
        # never later than the provider's clock, and the server's (skippable) time in tests.
        return activity.info().current_attempt_scheduled_time or utcnow()

    def _info(
        self, entry: ProviderEntry, parsed: TokenResponse, base: datetime, refresh_token: str | None
    ) -> TokenInfo:
        return TokenInfo(
            expires_at=base + timedelta(seconds=parsed.expires_in) if parsed.expires_in else None,
            has_refresh_token=bool(refresh_token),
            refresh_token_rotated=parsed.refresh_token is not None,
            scope=list(parsed.scope or []),
            buffer_seconds=entry.token_expiration_buffer,
        )

    # --- activities ----------------------------------------------------------------------

    @activity.defn
    async def load_integration(self, ref: IntegrationRef) -> IntegrationSnapshot:
        """The integration's state from the database (a workflow resumed after its run ended)."""
        integration_id = uuid.UUID(ref.integration_id)
        snapshot = await asyncio.to_thread(
            repository.snapshot, self._engine, self._catalog, integration_id
        )
        if snapshot is None:
            raise _not_found(integration_id)
        return snapshot

    @activity.defn
    async def exchange_oauth_code(self, params: ExchangeCodeInput) -> TokenInfo:
        """Trade the callback's code (and PKCE verifier) for tokens, and store them sealed."""
        integration_id = uuid.UUID(params.integration_id)
        state_id = uuid.UUID(params.state_id)
        integration = await self._integration(integration_id)
        entry = self._entry(integration.provider)
        state = await self._state(state_id, integration_id)
        if state.exchanged_at is not None:
            stored = await asyncio.to_thread(
                repository.stored_info, self._engine, integration_id, entry
            )
            stored.confirmation_required = state.require_confirmation
            stored.long_lived_exchange = entry.exchange is not None
            return stored
        if state.provider_error or not state.code:
            raise ApplicationError(
                f"the authorization failed at {entry.key}: "
                f"{state.provider_error or 'no code was returned'}",
                type=ErrorCode.OAUTH_FAILED.value,
                non_retryable=True,
            )
        code = self._keyring.open(state.code, code_context(state.id))
        verifier = (
            self._keyring.open(state.code_verifier, verifier_context(state.id))
            if state.code_verifier
            else None
        )
        client_id, client_secret = self._client(entry)
        request = token_request(
            entry,
            url=entry.token_url,
            client_id=client_id,
            client_secret=client_secret,
            grant=exchange_grant(
                entry, code=code, redirect_uri=state.callback_url, code_verifier=verifier
            ),
            connection_config=integration.connection_config,
        )
        started = utcnow()
        base = self._scheduled_time()
        parsed = await self._token_call(
            entry,
            request,
            integration_id,
            SyncAction.TOKEN_EXCHANGE,
            started,
            operation="code exchange",
            grant_code=ErrorCode.OAUTH_FAILED,
            other_code=ErrorCode.OAUTH_FAILED,
            meta={},
        )
        info = self._info(entry, parsed, base, parsed.refresh_token)
        info.confirmation_required = state.require_confirmation
        info.long_lived_exchange = entry.exchange is not None
        if not info.scope:
            info.scope = list(state.scopes)
        await asyncio.to_thread(
            repository.store_exchange,
            self._engine,
            self._keyring,
            integration_id,
            state_id,
            parsed,
            info,
            started,
        )
        return info

    @activity.defn
    async def exchange_long_lived_token(self, ref: IntegrationRef) -> TokenInfo:
        """The catalog's `exchange`: trade the code's short-lived token (stored by
        exchange_oauth_code) for a long-lived one, stored in its place. Every refusal is
        OAUTH_FAILED: the workflow then wipes the short-lived token and ends the connection."""
        integration_id = uuid.UUID(ref.integration_id)
        integration = await self._integration(integration_id)
        entry = self._entry(integration.provider)
        if entry.exchange is None:
            return await asyncio.to_thread(
                repository.stored_info, self._engine, integration_id, entry
            )
        if await asyncio.to_thread(
            repository.replaced_since_code_exchange, self._engine, integration_id
        ):
            # A retry after an attempt that stored the long-lived token (its answer lost).
            return await asyncio.to_thread(
                repository.stored_info, self._engine, integration_id, entry
            )
        tokens = await asyncio.to_thread(self._tokens.read, integration_id)
        if tokens is None:
            raise ApplicationError(
                f"no {entry.key} token to exchange for a long-lived one",
                type=ErrorCode.OAUTH_FAILED.value,
                non_retryable=True,
            )
        client_id, client_secret = self._client(entry)
        request = access_token_request(
            entry.exchange,
            entry,
            client_id=client_id,
            client_secret=client_secret,
            access_token=tokens.access_token,
            connection_config=integration.connection_config,
        )
        started = utcnow()
        base = self._scheduled_time()
        parsed = await self._token_call(
            entry,
            request,
            integration_id,
            SyncAction.TOKEN_EXCHANGE,
            started,
            operation="long-lived token exchange",
            grant_code=ErrorCode.OAUTH_FAILED,
            other_code=ErrorCode.OAUTH_FAILED,
            meta={"grantType": entry.exchange.grant_type},
        )
        info = self._info(entry, parsed, base, None)
        info.has_refresh_token = entry.refreshes_access_token
        await asyncio.to_thread(
            repository.store_refresh,
            self._engine,
            self._keyring,
            integration_id,
            tokens.version,
            parsed,
            None,
            info,
            started,
            "long_lived_exchange",
            tokens.extras,
        )
        return info

    async def _token_call(
        self,
        entry: ProviderEntry,
        request: TokenRequest,
        integration_id: uuid.UUID,
        action: SyncAction,
        started: datetime,
        *,
        operation: str,
        grant_code: ErrorCode,
        other_code: ErrorCode,
        meta: dict[str, Any],
    ) -> TokenResponse:
        """POST to the token endpoint and parse the answer; a failure is sync-logged first."""
        try:
            response = await self._post(entry.key, request)
            return parse_token_response(
                entry,
                response.status_code,
                response.headers,
                response.text,
                operation=operation,
                grant_code=grant_code,
                other_code=other_code,
                secrets=request.secrets,
            )
        except ApplicationError as failure:
            await asyncio.to_thread(
                repository.log_sync,
                self._engine,
                integration_id,
                action,
                SyncStatus.FAILED,
                error=failure.message,
                meta={**meta, "attempt": activity.info().attempt},
                started_at=started,
            )
            raise

    async def _state(self, state_id: uuid.UUID, integration_id: uuid.UUID) -> OAuthState:
        state = await asyncio.to_thread(
            repository.integration_state, self._engine, state_id, integration_id
        )
        if state is None:
            raise ApplicationError(
                "the authorization state does not belong to this integration",
                type=ErrorCode.OAUTH_FAILED.value,
                non_retryable=True,
            )
        return state

    @activity.defn
    async def fetch_oauth_account_name(self, ref: IntegrationRef) -> bool:
        """Read the account's display name from the provider's userinfo endpoint, and the
        account's ids the catalog's `account_fields` name (kept in providerData: LinkedIn's
        `sub` makes the author URN a post needs).

        Returns False (and logs) when the provider will not say; transient failures retry.
        """
        integration_id = uuid.UUID(ref.integration_id)
        integration = await self._integration(integration_id)
        entry = self._entry(integration.provider)
        if not entry.userinfo_url:
            return False
        tokens = await asyncio.to_thread(self._tokens.read, integration_id)
        if tokens is None:
            return False
        started = utcnow()
        url = entry.interpolate(entry.userinfo_url, integration.connection_config)
        headers = {
            "Authorization": f"{entry.userinfo_auth_scheme} {tokens.access_token}",
            "Accept": "application/json",
        }
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise translate(entry.key, exc) from None
        answered = response.status_code < 300
        name = account_name(entry, response.text) if answered else None
        facts = account_facts(entry, response.text) if answered else {}
        if response.status_code >= 500 or response.status_code in (408, 429):
            failure = translate(entry.key, _StatusError(response))
            await asyncio.to_thread(
                repository.log_sync,
                self._engine,
                integration_id,
                SyncAction.ACCOUNT_LOOKUP,
                SyncStatus.FAILED,
                error=failure.message,
                started_at=started,
            )
            raise failure
        await asyncio.to_thread(
            repository.store_name,
            self._engine,
            integration_id,
            name,
            response.status_code,
            started,
            facts,
        )
        return name is not None

    @activity.defn
    async def refresh_oauth_tokens(self, params: RefreshTokensInput) -> TokenInfo:
        """Refresh the access token; store it and the refresh token to keep, atomically."""
        integration_id = uuid.UUID(params.integration_id)
        integration = await self._integration(integration_id)
        entry = self._entry(integration.provider)
        tokens = await asyncio.to_thread(self._tokens.read, integration_id)
        if entry.refresh is not None and tokens is not None:
            return await self._refresh_access_token(entry, integration, tokens, params)
        if tokens is None or not tokens.refresh_token:
            raise ApplicationError(
                f"{entry.key} issued no refresh token for this integration",
                type=ErrorCode.REFRESH_FAILED.value,
                non_retryable=True,
            )
        client_id, client_secret = self._client(entry)
        request = token_request(
            entry,
            url=entry.refresh_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            grant=refresh_grant(tokens.refresh_token),
            connection_config=integration.connection_config,
        )
        started = utcnow()
        base = self._scheduled_time()
        parsed = await self._token_call(
            entry,
            request,
            integration_id,
            SyncAction.TOKEN_REFRESH,
            started,
            operation="token refresh",
            grant_code=ErrorCode.REFRESH_FAILED,
            other_code=ErrorCode.PROVIDER_ERROR,
            meta={"reason": params.reason},
        )
        # RFC 6749 section 6: a response without a refresh token leaves the old one valid.
        keep = parsed.refresh_token or tokens.refresh_token
        info = self._info(entry, parsed, base, keep)
        await asyncio.to_thread(
            repository.store_refresh,
            self._engine,
            self._keyring,
            integration_id,
            tokens.version,
            parsed,
            keep,
            info,
            started,
            params.reason,
            tokens.extras,
        )
        return info

    async def _refresh_access_token(
        self,
        entry: ProviderEntry,
        integration: Integration,
        tokens: Tokens,
        params: RefreshTokensInput,
    ) -> TokenInfo:
        """The catalog's `refresh` (Instagram's ig_refresh_token): the access token buys
        its own successor. A token younger than `min_token_age` is kept as it is, since
        the provider would refuse it (and a refusal would read as a dead grant)."""
        assert entry.refresh is not None
        integration_id = integration.id
        base = self._scheduled_time()
        if (
            entry.refresh.min_token_age
            and params.issued_at is not None
            and base - params.issued_at < timedelta(seconds=entry.refresh.min_token_age)
        ):
            kept = await asyncio.to_thread(
                repository.stored_info, self._engine, integration_id, entry
            )
            kept.refreshed = False
            return kept
        client_id, client_secret = self._client(entry)
        request = access_token_request(
            entry.refresh,
            entry,
            client_id=client_id,
            client_secret=client_secret,
            access_token=tokens.access_token,
            connection_config=integration.connection_config,
        )
        started = utcnow()
        parsed = await self._token_call(
            entry,
            request,
            integration_id,
            SyncAction.TOKEN_REFRESH,
            started,
            operation="token refresh",
            grant_code=ErrorCode.REFRESH_FAILED,
            other_code=ErrorCode.PROVIDER_ERROR,
            meta={"reason": params.reason, "grantType": entry.refresh.grant_type},
        )
        info = self._info(entry, parsed, base, None)
        info.has_refresh_token = True
        await asyncio.to_thread(
            repository.store_refresh,
            self._engine,
            self._keyring,
            integration_id,
            tokens.version,
            parsed,
            None,
            info,
            started,
            params.reason,
            tokens.extras,
        )
        return info

    @activity.defn
    async def revoke_oauth_tokens(self, ref: IntegrationRef) -> RevocationResult:
        """RFC 7009: revoke the refresh token, then the access token, where the provider
        has a revocation endpoint. An unknown token counts as revoked (RFC 7009 2.2)."""
        integration_id = uuid.UUID(ref.integration_id)
        integration = await self._integration(integration_id)
        entry = self._entry(integration.provider)
        tokens = await asyncio.to_thread(self._tokens.read, integration_id)
        if not entry.revoke_url or tokens is None:
            return RevocationResult(attempted=False)
        client_id, client_secret = self._client(entry)
        started = utcnow()
        revoked: list[str] = []
        try:
            for token, hint in (
                (tokens.refresh_token, "refresh_token"),
                (tokens.access_token, "access_token"),
            ):
                if not token:
                    continue
                request = revocation_request(
                    entry,
                    client_id=client_id,
                    client_secret=client_secret,
                    token=token,
                    token_type_hint=hint,
                    connection_config=integration.connection_config,
                )
                response = await self._post(entry.key, request)
                if revocation_outcome(
                    entry.key,
                    response.status_code,
                    response.headers,
                    response.text,
                    request.secrets,
                ):
                    revoked.append(hint)
        except ApplicationError as failure:
            await asyncio.to_thread(
                repository.log_sync,
                self._engine,
                integration_id,
                SyncAction.TOKEN_REVOCATION,
                SyncStatus.FAILED,
                error=failure.message,
                meta={"revoked": revoked, "attempt": activity.info().attempt},
                started_at=started,
            )
            raise
        await asyncio.to_thread(
            repository.log_sync,
            self._engine,
            integration_id,
            SyncAction.TOKEN_REVOCATION,
            SyncStatus.COMPLETED,
            meta={"revoked": revoked},
            started_at=started,
        )
        return RevocationResult(attempted=True, revoked=revoked)

    @activity.defn
    async def record_integration_status(self, change: StatusChange) -> None:
        """Set status and lastError, and publish the event (once per `event_key`)."""
        integration = await asyncio.to_thread(repository.set_status, self._engine, change)
        if integration is None:
            raise _not_found(change.integration_id)
        if change.event and change.event_key:
            await asyncio.to_thread(
                repository.publish, self._engine, change.event, integration, key=change.event_key
            )

    @activity.defn
    async def expire_oauth_authorization(self, ref: IntegrationRef) -> ExpiryOutcome:
        """The callback window closed: EXPIRED, unless a callback reached the database
        but never the workflow (its update was lost), which is then claimed instead."""
        integration_id = uuid.UUID(ref.integration_id)
        outcome = await asyncio.to_thread(repository.expire, self._engine, integration_id)
        if outcome.claimed_state_id is None:
            integration = await self._integration(integration_id)
            await asyncio.to_thread(
                repository.publish,
                self._engine,
                EVENT_ERROR,
                integration,
                key=f"integration-{integration_id}:expired",
            )
        return outcome

    @activity.defn
    async def check_oauth_confirmation(self, check: ConfirmationCheck) -> ConfirmationResult:
        """Whether the application confirmed (or burnt) the connection's confirmation; with
        `expire`, the window closed: burn it unless the application confirmed first."""
        outcome = await asyncio.to_thread(
            repository.check_confirmation,
            self._engine,
            uuid.UUID(check.integration_id),
            expire=check.expire,
        )
        return ConfirmationResult(outcome.value)

    @activity.defn
    async def wipe_integration_credentials(self, params: DisconnectInput) -> None:
        """Delete the tokens, their extras, the provider data and any pending authorization
        secrets, mark DISCONNECTED (or EXPIRED) and publish integration.disconnected
        (integration.error for a connection that was never confirmed), once per
        `event_key`."""
        integration = await asyncio.to_thread(repository.wipe, self._engine, self._keyring, params)
        if integration is None:
            raise _not_found(uuid.UUID(params.integration_id))
        await asyncio.to_thread(
            repository.publish,
            self._engine,
            params.event,
            integration,
            key=params.event_key or f"integration-{params.integration_id}:disconnected",
        )


def _not_found(integration_id: uuid.UUID | str) -> ApplicationError:
    """The integration is gone (deleted with its user's data): retrying cannot help."""
    return ApplicationError(
        f"integration {integration_id} does not exist",
        type=ErrorCode.INTEGRATION_NOT_FOUND.value,
        non_retryable=True,
    )


class _StatusError(Exception):
    """Carries a response's status and headers to `translate` (no body, no URL)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code = response.status_code
        self.headers = dict(response.headers)


ACTIVITIES = OAuthActivities
