"""What crosses Temporal for OAuth connections: ids and facts, never a token.

Every dataclass here is a workflow input, state, update, query result or activity
input/result of `IntegrationWorkflow` and `OAuthActivities`. Standard library only,
so the workflow sandbox, the API and the activities share them without importing
each other. New fields get defaults so recorded histories still decode.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class IntegrationStatus(StrEnum):
    PENDING = "PENDING"  # waiting for the user at the provider (10 minutes)
    # Tokens exchanged, not served until the application confirms with the one-time code
    # the callback sent it (requireConfirmation); expires like an unused state.
    PENDING_CONFIRMATION = "PENDING_CONFIRMATION"
    CONNECTED = "CONNECTED"
    NEEDS_REAUTH = "NEEDS_REAUTH"  # the provider refused the refresh token (invalid_grant)
    DISCONNECTED = "DISCONNECTED"  # disconnected, or the authorization failed
    EXPIRED = "EXPIRED"  # no callback within 10 minutes


# A connection in one of these ends its workflow; a later request starts a new run.
TERMINAL_STATUSES = frozenset({IntegrationStatus.DISCONNECTED, IntegrationStatus.EXPIRED})

# Outgoing webhook event types the OAuth capability publishes.
EVENT_CONNECTED = "integration.connected"
EVENT_DISCONNECTED = "integration.disconnected"
EVENT_ERROR = "integration.error"

HISTORY_LIMIT = 10_000

# requireConfirmation: how long the application has to confirm (OAUTH_CONFIRMATION_WINDOW)
# and how many wrong codes burn the confirmation.
CONFIRMATION_WINDOW_SECONDS = 600
MAX_CONFIRMATION_ATTEMPTS = 5
UNCONFIRMED_MESSAGE = "the application did not confirm the connection in time"
BURNT_MESSAGE = "the confirmation was burnt by too many wrong codes"


def integration_workflow_id(integration_id: uuid.UUID | str) -> str:
    """The business key: one workflow per connection, so a duplicate request lands on it."""
    return f"integration-{integration_id}"


# --- the workflow ------------------------------------------------------------------------


@dataclass
class IntegrationState:
    """Everything the workflow knows; never a token. Shown by GET /v1/runs/{id}."""

    integration_id: str
    user_id: str
    provider: str
    status: str = IntegrationStatus.PENDING.value
    callback_deadline: datetime | None = None
    callback_state_id: str | None = None
    # PENDING_CONFIRMATION ends here: CONNECTED if the application confirmed, else EXPIRED.
    confirmation_deadline: datetime | None = None
    expires_at: datetime | None = None
    has_refresh_token: bool = False
    buffer_seconds: int = 300
    connected_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    next_refresh_at: datetime | None = None
    retry_at: datetime | None = None
    refresh_count: int = 0
    last_error: str | None = None
    revoked: bool | None = None


@dataclass
class IntegrationInput:
    integration_id: str
    user_id: str
    provider: str
    callback_deadline: datetime | None = None
    # Started by a request after the previous run ended: load the state from the database.
    recover: bool = False
    # Carried across continue-as-new.
    state: IntegrationState | None = None
    history_limit: int = HISTORY_LIMIT
    # How long a connection may stay PENDING_CONFIRMATION (OAUTH_CONFIRMATION_WINDOW).
    confirmation_window_seconds: int = CONFIRMATION_WINDOW_SECONDS


@dataclass
class IntegrationResult:
    integration_id: str
    status: str


@dataclass
class AuthorizationCallback:
    """The callback route consumed this state (and stored its code or error)."""

    state_id: str


@dataclass
class AuthorizationOutcome:
    integration_id: str
    connected: bool
    status: str
    message: str | None = None


@dataclass
class ConfirmationSettled:
    """The confirm route settled the confirmation in the database (the right code, or too
    many wrong ones); the workflow reads which from there, never from this message."""


@dataclass
class RefreshRequest:
    # True: refresh now (POST /refresh). False: only if within the buffer (credentials).
    force: bool = False
    reason: str = "requested"


@dataclass
class RefreshOutcome:
    integration_id: str
    refreshed: bool
    expires_at: datetime | None
    status: str


@dataclass
class DisconnectRequest:
    reason: str = "requested"
    scrub_personal_data: bool = False


@dataclass
class DisconnectOutcome:
    integration_id: str
    status: str
    revoked: bool


# --- the activities ----------------------------------------------------------------------


@dataclass
class IntegrationRef:
    integration_id: str


@dataclass
class ExchangeCodeInput:
    integration_id: str
    state_id: str


@dataclass
class RefreshTokensInput:
    integration_id: str
    reason: str = "scheduled"
    # When the current token was issued (the workflow's last refresh): a provider that
    # refuses to refresh young tokens (Instagram, 24 hours) is not asked before then.
    issued_at: datetime | None = None


@dataclass
class TokenInfo:
    """What the workflow needs to schedule the next refresh."""

    expires_at: datetime | None
    has_refresh_token: bool
    refresh_token_rotated: bool = False
    scope: list[str] = field(default_factory=list)
    buffer_seconds: int = 300
    # The exchange's authorization asked for requireConfirmation: PENDING_CONFIRMATION
    # until the application confirms. Absent (False) in histories recorded before.
    confirmation_required: bool = False
    # The catalog's `exchange`: the workflow trades the stored short-lived token for a
    # long-lived one (exchange_long_lived_token) before the connection counts.
    long_lived_exchange: bool = False
    # False: a refresh that left the token as it is (too young for the provider to refresh).
    refreshed: bool = True


@dataclass
class IntegrationSnapshot:
    """An integration as the database knows it, to resume a workflow from."""

    integration_id: str
    user_id: str
    provider: str
    status: str
    expires_at: datetime | None = None
    has_refresh_token: bool = False
    buffer_seconds: int = 300
    connected_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    last_error: str | None = None
    callback_deadline: datetime | None = None
    pending_state_id: str | None = None
    confirmation_deadline: datetime | None = None


@dataclass
class StatusChange:
    integration_id: str
    status: str
    # Written as given: None clears the last error.
    last_error: str | None = None
    event: str | None = None
    event_key: str | None = None


@dataclass
class ExpiryOutcome:
    """`claimed_state_id` is a callback that reached the database but not the workflow."""

    claimed_state_id: str | None = None


class ConfirmationOutcome(StrEnum):
    CONFIRMED = "CONFIRMED"  # the application presented the right code
    BURNT = "BURNT"  # too many wrong codes
    EXPIRED = "EXPIRED"  # the window closed (burnt now, by the check that expired it)
    PENDING = "PENDING"  # still open


@dataclass
class ConfirmationCheck:
    """What the database says of a connection's confirmation; `expire` burns it unless
    the application confirmed first (one conditional UPDATE decides the race)."""

    integration_id: str
    expire: bool = False


@dataclass
class ConfirmationResult:
    outcome: str


@dataclass
class RevocationResult:
    attempted: bool
    revoked: list[str] = field(default_factory=list)


@dataclass
class DisconnectInput:
    integration_id: str
    reason: str = "requested"
    scrub_personal_data: bool = False
    event_key: str = ""
    # An unconfirmed connection ends EXPIRED (or DISCONNECTED when burnt) with its reason,
    # and publishes integration.error instead of integration.disconnected.
    status: str = IntegrationStatus.DISCONNECTED.value
    last_error: str | None = None
    event: str = EVENT_DISCONNECTED
