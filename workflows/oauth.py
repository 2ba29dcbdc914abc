"""IntegrationWorkflow: one entity workflow per OAuth connection, id `integration-{id}`.

The workflow is the single writer of its integration's credentials. Everything that
changes them (the code exchange, every refresh, the revocation and wipe) runs as an
activity started from here, one at a time under `self._lock`, so two refreshes can
never race, not even when the provider rotates refresh tokens and would revoke the
whole grant on the reuse of an old one (RFC 9700 section 4.14.2).

Life of a connection:

    PENDING ── callback (update) ── exchange ──► CONNECTED ◄─┐ refresh at expiresAt − buffer,
       │                               │              │      │ and at least daily
       │ no callback in 10 min         │ refused      ├──────┘
       ▼                               ▼              │ invalid_grant
    EXPIRED                      DISCONNECTED         ▼
                                       ▲         NEEDS_REAUTH
                                       └── disconnect (update): revoke, wipe, end

With requireConfirmation (connection fixation, RFC 9700 section 4.7) the exchange leads
to PENDING_CONFIRMATION instead: the tokens are stored but not served until the
application confirms with the code the callback sent it (`settle_confirmation`, after
the route checked the code in the database) → CONNECTED; a window without confirmation
→ revoke, wipe, EXPIRED; too many wrong codes → revoke, wipe, DISCONNECTED.

Tokens never enter the workflow: inputs, results, updates and queries carry the
integration id and facts about the tokens (expiry, whether a refresh token exists),
and the activities read and write the sealed tokens in the database themselves.

Updates (modelled on samples-python message_passing/safe_message_handlers):
`complete_authorization` (the callback route waits for its outcome),
`settle_confirmation` (the confirm route, once the database holds the outcome), `refresh`
(refresh-now, and the credentials route when a token is within its buffer; a refresh
that completed while a caller waited for the lock satisfies that caller, so twenty
concurrent callers cause one refresh at the provider), `disconnect`. The run
continues as new when Temporal suggests it (or past `history_limit` events) once all
handlers have finished.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.oauth import OAuthActivities
    from relay.errors import ErrorCode
    from relay.oauth.contracts import (
        BURNT_MESSAGE,
        EVENT_CONNECTED,
        EVENT_ERROR,
        TERMINAL_STATUSES,
        UNCONFIRMED_MESSAGE,
        AuthorizationCallback,
        AuthorizationOutcome,
        ConfirmationCheck,
        ConfirmationOutcome,
        ConfirmationSettled,
        DisconnectInput,
        DisconnectOutcome,
        DisconnectRequest,
        ExchangeCodeInput,
        IntegrationInput,
        IntegrationRef,
        IntegrationResult,
        IntegrationState,
        IntegrationStatus,
        RefreshOutcome,
        RefreshRequest,
        RefreshTokensInput,
        StatusChange,
        TokenInfo,
    )
    from relay.oauth.schedule import refresh_due_at


CALLBACK_WINDOW = timedelta(minutes=10)
# Providers revoke refresh tokens left unused (Google after 6 months, others sooner).
IDLE_REFRESH_INTERVAL = timedelta(days=1)
# After a background refresh exhausted its retries (the provider is down), try again.
RETRY_LATER = timedelta(minutes=15)

DB_TIMEOUT = timedelta(seconds=30)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
PROVIDER_TIMEOUT = timedelta(seconds=30)
EXCHANGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
LOOKUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# Someone is waiting on an on-demand refresh: fail fast, the background loop persists.
ON_DEMAND_REFRESH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
BACKGROUND_REFRESH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
)
REVOKE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# The confirmation branch; histories recorded before it existed never take it (their
# exchange results carry no confirmation_required), the marker says so explicitly.
CONFIRMATION_PATCH = "oauth-confirmation"
# The long-lived token exchange after the code exchange (the catalog's `exchange`):
# histories recorded before it never asked for one (long_lived_exchange absent).
LONG_LIVED_PATCH = "oauth-long-lived-exchange"


def _failure(err: ActivityError) -> tuple[str, str]:
    """(Relay error code, message) of an activity's failure."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.type or ErrorCode.PROVIDER_ERROR.value, cause.message
    if cause is not None:
        detail = getattr(cause, "message", None) or type(cause).__name__
        return ErrorCode.PROVIDER_ERROR.value, f"the provider call failed ({detail})"
    return ErrorCode.PROVIDER_ERROR.value, "the provider call failed"


@workflow.defn
class IntegrationWorkflow:
    """One OAuth connection from authorization to disconnection (see the module doc)."""

    @workflow.init
    def __init__(self, params: IntegrationInput) -> None:
        self._state = params.state or IntegrationState(
            integration_id=params.integration_id,
            user_id=params.user_id,
            provider=params.provider,
            callback_deadline=params.callback_deadline,
        )
        self._ready = not params.recover or params.state is not None
        self._history_limit = params.history_limit
        self._confirmation_window = timedelta(seconds=params.confirmation_window_seconds)
        self._lock = asyncio.Lock()
        self._wake = False

    # --- the run -----------------------------------------------------------------------

    @workflow.run
    async def run(self, params: IntegrationInput) -> IntegrationResult:
        if not self._ready:
            await self._recover()
        if self._state.status == IntegrationStatus.PENDING:
            await self._await_callback()
        if self._state.status == IntegrationStatus.PENDING_CONFIRMATION:
            await self._await_confirmation()
        while self._state.status not in TERMINAL_STATUSES:
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    IntegrationInput(
                        integration_id=self._state.integration_id,
                        user_id=self._state.user_id,
                        provider=self._state.provider,
                        state=self._state,
                        history_limit=self._history_limit,
                    ),
                    search_attributes=workflow.info().typed_search_attributes,
                )
            due = self._next_refresh_at()
            self._state.next_refresh_at = due
            self._wake = False
            if due is not None and due <= workflow.now():
                await self._maintain()
                continue
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._wake
                        or self._state.status in TERMINAL_STATUSES
                        or self._should_continue_as_new()
                    ),
                    timeout=(due - workflow.now()) if due is not None else None,
                )
            except TimeoutError:
                await self._maintain()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return IntegrationResult(self._state.integration_id, self._state.status)

    async def _recover(self) -> None:
        snapshot = await workflow.execute_activity_method(
            OAuthActivities.load_integration,
            IntegrationRef(self._state.integration_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        now = workflow.now()
        self._state.status = snapshot.status
        self._state.expires_at = snapshot.expires_at
        self._state.has_refresh_token = snapshot.has_refresh_token
        self._state.buffer_seconds = snapshot.buffer_seconds
        self._state.connected_at = snapshot.connected_at
        self._state.last_refreshed_at = snapshot.last_refreshed_at or now
        self._state.last_error = snapshot.last_error
        self._state.callback_deadline = snapshot.callback_deadline
        if snapshot.status == IntegrationStatus.PENDING and snapshot.pending_state_id:
            self._state.callback_state_id = snapshot.pending_state_id
        if snapshot.status == IntegrationStatus.PENDING_CONFIRMATION:
            self._state.confirmation_deadline = snapshot.confirmation_deadline
        self._ready = True
        if self._state.callback_state_id is not None:
            async with self._lock:
                await self._complete(self._state.callback_state_id)

    async def _await_callback(self) -> None:
        deadline = self._state.callback_deadline or workflow.now() + CALLBACK_WINDOW
        try:
            await workflow.wait_condition(
                lambda: (
                    self._state.callback_state_id is not None
                    or self._state.status != IntegrationStatus.PENDING
                ),
                timeout=max(deadline - workflow.now(), timedelta(milliseconds=1)),
            )
        except TimeoutError:
            async with self._lock:
                if (
                    self._state.callback_state_id is None
                    and self._state.status == IntegrationStatus.PENDING
                ):
                    outcome = await workflow.execute_activity_method(
                        OAuthActivities.expire_oauth_authorization,
                        IntegrationRef(self._state.integration_id),
                        start_to_close_timeout=DB_TIMEOUT,
                        retry_policy=DB_RETRY,
                    )
                    if outcome.claimed_state_id is not None:
                        # The callback reached the database but its update never arrived.
                        self._state.callback_state_id = outcome.claimed_state_id
                        await self._complete(outcome.claimed_state_id)
                    else:
                        self._state.status = IntegrationStatus.EXPIRED
                        self._state.last_error = "no callback from the provider within 10 minutes"
        await workflow.wait_condition(lambda: self._state.status != IntegrationStatus.PENDING)

    async def _await_confirmation(self) -> None:
        """Tokens are stored, not served: wait for the application's confirmation, and at
        the deadline ask the database (the confirm route may have won the race)."""
        deadline = self._state.confirmation_deadline or workflow.now() + self._confirmation_window
        try:
            await workflow.wait_condition(
                lambda: self._state.status != IntegrationStatus.PENDING_CONFIRMATION,
                timeout=max(deadline - workflow.now(), timedelta(milliseconds=1)),
            )
        except TimeoutError:
            async with self._lock:
                if self._state.status == IntegrationStatus.PENDING_CONFIRMATION:
                    await self._settle_confirmation(expire=True)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._history_limit
        )

    def _due_at(self) -> datetime | None:
        """When the current token should be replaced (None: it does not expire)."""
        if self._state.expires_at is None:
            return None
        return refresh_due_at(
            self._state.expires_at, self._state.last_refreshed_at, self._state.buffer_seconds
        )

    def _next_refresh_at(self) -> datetime | None:
        state = self._state
        if state.status != IntegrationStatus.CONNECTED:
            return None
        if state.retry_at is not None:
            return state.retry_at
        if not state.has_refresh_token:
            # Nothing to refresh with: when the token dies the user must reconnect.
            return state.expires_at
        candidates = [(state.last_refreshed_at or workflow.now()) + IDLE_REFRESH_INTERVAL]
        if (due := self._due_at()) is not None:
            candidates.append(due)
        return min(candidates)

    async def _maintain(self) -> None:
        """The timer fired: refresh (or give up on a token that cannot be refreshed)."""
        async with self._lock:
            due = self._next_refresh_at()
            # Re-checked under the lock: an update may have refreshed while we waited.
            if due is None or due > workflow.now():
                return
            self._state.retry_at = None
            if not self._state.has_refresh_token:
                # Facebook's long-lived tokens end here too: they cannot be refreshed.
                await self._needs_reauth(
                    f"the access token expired and {self._state.provider} issued no "
                    "refresh token: reconnect the account"
                )
                return
            due_by_expiry = self._due_at()
            reason = (
                "expiring"
                if due_by_expiry is not None and due_by_expiry <= workflow.now()
                else "idle"
            )
            try:
                await self._refresh(reason, BACKGROUND_REFRESH_RETRY)
            except ApplicationError:
                pass  # recorded by _refresh; the loop schedules what comes next

    # --- steps (called with the lock held) ----------------------------------------------

    async def _complete(self, state_id: str) -> None:
        integration_id = self._state.integration_id
        try:
            info = await workflow.execute_activity_method(
                OAuthActivities.exchange_oauth_code,
                ExchangeCodeInput(integration_id, state_id),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=EXCHANGE_RETRY,
            )
        except ActivityError as err:
            _, message = _failure(err)
            self._state.status = IntegrationStatus.DISCONNECTED
            self._state.last_error = message
            await self._record(
                IntegrationStatus.DISCONNECTED,
                message,
                EVENT_ERROR,
                f"integration-{integration_id}:authorization",
            )
            return
        if info.long_lived_exchange and workflow.patched(LONG_LIVED_PATCH):
            long_lived = await self._exchange_long_lived()
            if long_lived is None:
                return
            long_lived.confirmation_required = info.confirmation_required
            info = long_lived
        self._apply(info)
        try:
            await workflow.execute_activity_method(
                OAuthActivities.fetch_oauth_account_name,
                IntegrationRef(integration_id),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=LOOKUP_RETRY,
            )
        except ActivityError:
            pass  # the display name is a nicety: the connection stands without it
        if info.confirmation_required and workflow.patched(CONFIRMATION_PATCH):
            # Not served until the application confirms it started this connection.
            self._state.confirmation_deadline = workflow.now() + self._confirmation_window
            await self._record(
                IntegrationStatus.PENDING_CONFIRMATION,
                None,
                None,
                f"integration-{integration_id}:pending_confirmation",
            )
            self._state.status = IntegrationStatus.PENDING_CONFIRMATION
            self._state.last_error = None
            return
        await self._connected()

    async def _exchange_long_lived(self) -> TokenInfo | None:
        """Trade the code's short-lived token for a long-lived one; None when refused (the
        short-lived token is wiped and the connection ends DISCONNECTED with the reason)."""
        integration_id = self._state.integration_id
        try:
            return await workflow.execute_activity_method(
                OAuthActivities.exchange_long_lived_token,
                IntegrationRef(integration_id),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=EXCHANGE_RETRY,
            )
        except ActivityError as err:
            _, message = _failure(err)
        await workflow.execute_activity_method(
            OAuthActivities.wipe_integration_credentials,
            DisconnectInput(
                integration_id,
                reason="long_lived_exchange_failed",
                event_key=f"integration-{integration_id}:authorization",
                last_error=message,
                event=EVENT_ERROR,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        self._state.status = IntegrationStatus.DISCONNECTED
        self._state.last_error = message
        self._state.expires_at = None
        self._state.has_refresh_token = False
        return None

    async def _connected(self) -> None:
        integration_id = self._state.integration_id
        self._state.connected_at = workflow.now()
        await self._record(
            IntegrationStatus.CONNECTED,
            None,
            EVENT_CONNECTED,
            f"integration-{integration_id}:connected",
        )
        self._state.status = IntegrationStatus.CONNECTED
        self._state.last_error = None

    async def _settle_confirmation(self, *, expire: bool) -> None:
        """Act on what the database says of the confirmation: connect, end, or (no
        `expire`, nothing settled) keep waiting."""
        result = await workflow.execute_activity_method(
            OAuthActivities.check_oauth_confirmation,
            ConfirmationCheck(self._state.integration_id, expire=expire),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        if result.outcome == ConfirmationOutcome.CONFIRMED:
            await self._connected()
        elif result.outcome == ConfirmationOutcome.BURNT:
            await self._end_unconfirmed(IntegrationStatus.DISCONNECTED, BURNT_MESSAGE)
        elif result.outcome == ConfirmationOutcome.EXPIRED:
            await self._end_unconfirmed(IntegrationStatus.EXPIRED, UNCONFIRMED_MESSAGE)

    async def _end_unconfirmed(self, status: IntegrationStatus, message: str) -> None:
        """Never confirmed: revoke at the provider, wipe the tokens and provider data."""
        state = self._state
        try:
            revocation = await workflow.execute_activity_method(
                OAuthActivities.revoke_oauth_tokens,
                IntegrationRef(state.integration_id),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=REVOKE_RETRY,
            )
            state.revoked = bool(revocation.revoked)
        except ActivityError:
            state.revoked = False  # wiped regardless; the sync log keeps the failure
        await workflow.execute_activity_method(
            OAuthActivities.wipe_integration_credentials,
            DisconnectInput(
                state.integration_id,
                reason="unconfirmed",
                event_key=f"integration-{state.integration_id}:unconfirmed",
                status=status.value,
                last_error=message,
                event=EVENT_ERROR,
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        state.status = status
        state.last_error = message
        state.expires_at = None
        state.has_refresh_token = False

    def _apply(self, info: TokenInfo) -> None:
        self._state.expires_at = info.expires_at
        self._state.has_refresh_token = info.has_refresh_token
        self._state.buffer_seconds = info.buffer_seconds
        self._state.last_refreshed_at = workflow.now()
        self._state.retry_at = None
        self._state.last_error = None

    async def _refresh(self, reason: str, retry: RetryPolicy) -> RefreshOutcome:
        """One refresh at the provider; raises ApplicationError(code) when it fails."""
        try:
            info = await workflow.execute_activity_method(
                OAuthActivities.refresh_oauth_tokens,
                RefreshTokensInput(
                    self._state.integration_id, reason, issued_at=self._state.last_refreshed_at
                ),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                retry_policy=retry,
            )
        except ActivityError as err:
            code, message = _failure(err)
            if code == ErrorCode.REFRESH_FAILED.value:
                await self._needs_reauth(message)
            else:
                # Transient trouble outlived the retries, or the provider refuses the
                # client itself: keep the connection, say why, try again later.
                self._state.last_error = message
                self._state.retry_at = workflow.now() + RETRY_LATER
                permanent = isinstance(err.cause, ApplicationError) and err.cause.non_retryable
                await self._record(
                    IntegrationStatus.CONNECTED,
                    message,
                    EVENT_ERROR if permanent else None,
                    f"integration-{self._state.integration_id}:error:{workflow.uuid4()}",
                )
            raise ApplicationError(message, {"status": self._state.status}, type=code) from None
        if not info.refreshed:
            # The provider would refuse this token yet (Instagram's 24 hours): kept as is.
            return self._refresh_outcome(refreshed=False)
        self._apply(info)
        self._state.refresh_count += 1
        self._wake = True
        return self._refresh_outcome(refreshed=True)

    async def _needs_reauth(self, message: str) -> None:
        self._state.status = IntegrationStatus.NEEDS_REAUTH
        self._state.last_error = message
        self._state.retry_at = None
        await self._record(
            IntegrationStatus.NEEDS_REAUTH,
            message,
            EVENT_ERROR,
            f"integration-{self._state.integration_id}:needs_reauth:{workflow.uuid4()}",
        )

    async def _record(
        self, status: str, last_error: str | None, event: str | None, event_key: str
    ) -> None:
        await workflow.execute_activity_method(
            OAuthActivities.record_integration_status,
            StatusChange(self._state.integration_id, status, last_error, event, event_key),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    def _refresh_outcome(self, *, refreshed: bool) -> RefreshOutcome:
        return RefreshOutcome(
            self._state.integration_id, refreshed, self._state.expires_at, self._state.status
        )

    def _authorization_outcome(self) -> AuthorizationOutcome:
        return AuthorizationOutcome(
            self._state.integration_id,
            connected=self._state.status == IntegrationStatus.CONNECTED,
            status=self._state.status,
            message=self._state.last_error,
        )

    # --- updates and the query ----------------------------------------------------------

    @workflow.update
    async def complete_authorization(self, callback: AuthorizationCallback) -> AuthorizationOutcome:
        """The provider redirected back: exchange the code and report the outcome."""
        await workflow.wait_condition(lambda: self._ready)
        if (
            self._state.callback_state_id is None
            and self._state.status == IntegrationStatus.PENDING
        ):
            self._state.callback_state_id = callback.state_id
            async with self._lock:
                if self._state.status == IntegrationStatus.PENDING:
                    await self._complete(callback.state_id)
        await workflow.wait_condition(lambda: self._state.status != IntegrationStatus.PENDING)
        return self._authorization_outcome()

    @complete_authorization.validator
    def _validate_callback(self, callback: AuthorizationCallback) -> None:
        if not self._ready:
            return
        expected = self._state.callback_state_id
        if expected is not None and expected != callback.state_id:
            raise ValueError("another authorization already completed this integration")
        if expected is None and self._state.status != IntegrationStatus.PENDING:
            raise ValueError(f"the integration is {self._state.status}, not waiting for a callback")

    @workflow.update
    async def settle_confirmation(self, settled: ConfirmationSettled) -> AuthorizationOutcome:
        """The confirm route settled the confirmation in the database (the right code, or
        the wrong one that burnt it): act on it now rather than at the deadline."""
        await workflow.wait_condition(lambda: self._ready)
        # A callback that timed out in the browser may still be exchanging the code.
        await workflow.wait_condition(lambda: self._state.status != IntegrationStatus.PENDING)
        async with self._lock:
            if self._state.status == IntegrationStatus.PENDING_CONFIRMATION:
                await self._settle_confirmation(expire=False)
        return self._authorization_outcome()

    @settle_confirmation.validator
    def _validate_settled(self, settled: ConfirmationSettled) -> None:
        if self._ready and self._state.status in TERMINAL_STATUSES:
            raise ValueError(f"the integration is {self._state.status}")

    @workflow.update
    async def refresh(self, request: RefreshRequest) -> RefreshOutcome:
        """Refresh now (`force`), or only if the token is within its buffer."""
        await workflow.wait_condition(lambda: self._ready)
        seen = self._state.refresh_count
        async with self._lock:
            state = self._state
            if state.status != IntegrationStatus.CONNECTED:
                code = (
                    ErrorCode.REFRESH_FAILED
                    if state.status == IntegrationStatus.NEEDS_REAUTH
                    else ErrorCode.CONFLICT
                )
                raise ApplicationError(
                    state.last_error or f"the integration is {state.status}",
                    {"status": state.status},
                    type=code.value,
                )
            if state.refresh_count != seen:
                # Refreshed while this caller waited for the lock: that token serves it too.
                return self._refresh_outcome(refreshed=True)
            due = self._due_at()
            if not request.force and (due is None or due > workflow.now()):
                return self._refresh_outcome(refreshed=False)
            if not state.has_refresh_token:
                raise ApplicationError(
                    f"{state.provider} issued no refresh token; reconnect to get a new token",
                    {"status": state.status},
                    type=ErrorCode.REFRESH_FAILED.value,
                )
            return await self._refresh(request.reason, ON_DEMAND_REFRESH_RETRY)

    @refresh.validator
    def _validate_refresh(self, request: RefreshRequest) -> None:
        if self._ready and self._state.status in TERMINAL_STATUSES:
            raise ValueError(f"the integration is {self._state.status}")

    @workflow.update
    async def disconnect(self, request: DisconnectRequest) -> DisconnectOutcome:
        """Revoke at the provider (RFC 7009, where it can), wipe the tokens, end."""
        await workflow.wait_condition(lambda: self._ready)
        async with self._lock:
            state = self._state
            if state.status != IntegrationStatus.DISCONNECTED or request.scrub_personal_data:
                revoked = False
                if state.status in (
                    IntegrationStatus.CONNECTED,
                    IntegrationStatus.NEEDS_REAUTH,
                    IntegrationStatus.PENDING_CONFIRMATION,
                ):
                    try:
                        result = await workflow.execute_activity_method(
                            OAuthActivities.revoke_oauth_tokens,
                            IntegrationRef(state.integration_id),
                            start_to_close_timeout=PROVIDER_TIMEOUT,
                            retry_policy=REVOKE_RETRY,
                        )
                        revoked = bool(result.revoked)
                    except ActivityError as err:
                        # The tokens are wiped regardless; the sync log keeps the failure.
                        state.last_error = _failure(err)[1]
                await workflow.execute_activity_method(
                    OAuthActivities.wipe_integration_credentials,
                    DisconnectInput(
                        state.integration_id,
                        request.reason,
                        request.scrub_personal_data,
                        event_key=f"integration-{state.integration_id}:disconnected",
                    ),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                )
                state.status = IntegrationStatus.DISCONNECTED
                state.revoked = revoked
                state.expires_at = None
                state.has_refresh_token = False
            self._wake = True
            return DisconnectOutcome(state.integration_id, state.status, bool(state.revoked))

    @workflow.query
    def state(self) -> IntegrationState:
        return self._state


WORKFLOWS = (IntegrationWorkflow,)
