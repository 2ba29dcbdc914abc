"""The OAuth capability's database reads and writes, for its routes and its activities.

Synchronous: call them with `asyncio.to_thread` from async code. A missing row is
`None` here; the caller turns it into its own failure (a `RelayError` in a route, a
non-retryable `ApplicationError` in an activity). Tokens are read and written only
through `TokenStore`, in the same transaction as the integration row they belong to.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, and_, bindparam, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from relay.crypto import Keyring
from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import (
    Integration,
    IntegrationCredential,
    IntegrationCredentialAccess,
    IntegrationStatus,
    IntegrationSyncLog,
    OAuthState,
    SyncAction,
    SyncStatus,
)
from relay.oauth.catalog import Catalog, ProviderEntry
from relay.oauth.contracts import (
    MAX_CONFIRMATION_ATTEMPTS,
    TERMINAL_STATUSES,
    ConfirmationOutcome,
    DisconnectInput,
    ExpiryOutcome,
    IntegrationSnapshot,
    StatusChange,
    TokenInfo,
)
from relay.oauth.protocol import TokenResponse, with_account_facts
from relay.oauth.tokens import Tokens, TokenStore
from relay.webhooks.publish import PublishResult, publish_event

ERROR_LIMIT = 1000
EXPIRED_MESSAGE = "no callback from the provider within 10 minutes"

# The tables the list routes page through (Core selects, newest first).
INTEGRATIONS: Table = Integration.__table__  # type: ignore[attr-defined]
SYNC_LOGS: Table = IntegrationSyncLog.__table__  # type: ignore[attr-defined]


# --- integrations --------------------------------------------------------------------------


def get_integration(engine: Engine, integration_id: uuid.UUID) -> Integration | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Integration, integration_id)


def user_integrations(engine: Engine, user_id: str) -> list[Integration]:
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.exec(select(Integration).where(col(Integration.user_id) == user_id)).all()
        )


def _as_attributes(table: Table) -> list[Any]:
    """The table's columns, each labelled with its model attribute (`metadata` → `meta`),
    so a row validates into the same public model an ORM instance does."""
    return [column.label("meta") if column.name == "metadata" else column for column in table.c]


def integrations_query(
    *,
    user_id: str | None = None,
    provider: str | None = None,
    is_active: bool | None = None,
    status: IntegrationStatus | None = None,
) -> Select[Any]:
    """A Core select over `INTEGRATIONS`, filtered, for the newest-first page."""
    table = INTEGRATIONS
    query = core_select(*_as_attributes(table))
    if user_id is not None:
        query = query.where(table.c.user_id == user_id)
    if provider is not None:
        query = query.where(table.c.provider == provider.lower())
    if is_active is not None:
        query = query.where(table.c.is_active == is_active)
    if status is not None:
        query = query.where(table.c.status == status.value)
    return query


def sync_logs_query(integration_id: uuid.UUID) -> Select[Any]:
    """A Core select over `SYNC_LOGS`: one integration's sync logs."""
    table = SYNC_LOGS
    return core_select(*_as_attributes(table)).where(table.c.integration_id == integration_id)


def update_integration(
    engine: Engine, integration_id: uuid.UUID, changes: dict[str, Any]
) -> Integration | None:
    """PATCH: name, metadata, is_active; a DISCONNECTED or EXPIRED one is not reactivated."""
    with Session(engine, expire_on_commit=False) as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return None
        if changes.get("is_active") and integration.status in TERMINAL_STATUSES:
            raise RelayError(
                ErrorCode.CONFLICT,
                f"a {integration.status} integration cannot be reactivated; connect again",
            )
        if "name" in changes:
            integration.name = changes["name"]
        if "metadata" in changes:
            integration.meta = changes["metadata"] or {}
        if "is_active" in changes and changes["is_active"] is not None:
            integration.is_active = changes["is_active"]
        integration.updated_at = utcnow()
        session.add(integration)
        session.commit()
        session.refresh(integration)
        return integration


def scrub_personal_data(engine: Engine, integration_ids: Iterable[uuid.UUID]) -> None:
    """Clear the account name, metadata and provider data of these integrations."""
    with Session(engine, expire_on_commit=False) as session:
        for integration_id in integration_ids:
            row = session.get(Integration, integration_id)
            if row is not None:
                row.name, row.meta, row.provider_data = None, {}, {}
                row.updated_at = utcnow()
                session.add(row)
        session.commit()


@dataclass(frozen=True)
class CredentialRead:
    """What GET …/credentials needs, read in one session: the integration, whether its
    latest authorization still awaits the application's confirmation, and its tokens
    (opened; None when the row holds none)."""

    integration: Integration
    awaiting_confirmation: bool
    tokens: Tokens | None = field(repr=False)
    logged: bool = False  # its access-log row was written with it
    # When the tokens were stored (issued or refreshed): the refresh lead's reference.
    tokens_stored_at: datetime | None = None


_CREDENTIALS: Table = IntegrationCredential.__table__  # type: ignore[attr-defined]
_STATES: Table = OAuthState.__table__  # type: ignore[attr-defined]
_INTEGRATION_COLUMNS = [
    ("meta" if column.name == "metadata" else column.name, column) for column in INTEGRATIONS.c
]
# The latest authorization awaits the application's confirmation (NULL: no state at all).
_AWAITING = (
    core_select(
        and_(_STATES.c.require_confirmation, _STATES.c.confirmed_at.is_(None))  # type: ignore[arg-type]
    )
    .where(_STATES.c.integration_id == INTEGRATIONS.c.id)
    .order_by(_STATES.c.created_at.desc())
    .limit(1)
    .scalar_subquery()
)
_READ_CREDENTIALS = (
    core_select(
        *(column for _, column in _INTEGRATION_COLUMNS),
        _CREDENTIALS.c.integration_id.label("credential_id"),
        _CREDENTIALS.c.access_token,
        _CREDENTIALS.c.refresh_token,
        _CREDENTIALS.c.extras,
        _CREDENTIALS.c.version,
        _CREDENTIALS.c.updated_at.label("tokens_stored_at"),
        _AWAITING.label("awaiting"),
    )
    .select_from(INTEGRATIONS)
    .outerjoin(_CREDENTIALS, _CREDENTIALS.c.integration_id == INTEGRATIONS.c.id)
)
_READ_ONE = _READ_CREDENTIALS.where(INTEGRATIONS.c.id == bindparam("integration_id"))
_READ_MANY = _READ_CREDENTIALS.where(INTEGRATIONS.c.id.in_(bindparam("ids", expanding=True)))


def tokens_stored_at(engine: Engine, integration_id: uuid.UUID) -> datetime | None:
    """When the integration's tokens were stored (issued or refreshed; re-sealing under a
    new key leaves it): what a refresh's lead is measured from. `last_sync_at` is not:
    any sync of the integration (a publication) moves it."""
    with Session(engine) as session:
        credential = session.get(IntegrationCredential, integration_id)
        return credential.updated_at if credential else None


def read_credentials(
    engine: Engine, keyring: Keyring, integration_id: uuid.UUID
) -> CredentialRead | None:
    """The integration, its confirmation state and its tokens in one statement (one round
    trip, where it took three); None if there is no such integration. Same answers as
    `get_integration`, `awaiting_confirmation` and `TokenStore.read`."""
    with engine.connect() as connection:
        return _read_credentials(connection, keyring, integration_id)


def _read_credentials(
    connection: Connection, keyring: Keyring, integration_id: uuid.UUID
) -> CredentialRead | None:
    row = connection.execute(_READ_ONE, {"integration_id": integration_id}).first()
    return None if row is None else _credential_read(connection, keyring, row)


def _read_many(
    connection: Connection, keyring: Keyring, integration_ids: set[uuid.UUID]
) -> dict[uuid.UUID, CredentialRead]:
    """One statement (one round trip) for a batch's integrations, each read once."""
    if len(integration_ids) == 1:
        (only,) = integration_ids
        read = _read_credentials(connection, keyring, only)
        return {} if read is None else {only: read}
    rows = connection.execute(_READ_MANY, {"ids": list(integration_ids)}).all()
    return {
        read.integration.id: read
        for read in (_credential_read(connection, keyring, r) for r in rows)
    }


def _credential_read(connection: Connection, keyring: Keyring, row: Any) -> CredentialRead:
    values = row._mapping
    integration_id = values[INTEGRATIONS.c.id]
    integration = Integration(**{name: values[column] for name, column in _INTEGRATION_COLUMNS})
    tokens = (
        TokenStore(connection.engine, keyring).open_columns(
            integration_id,
            values[_CREDENTIALS.c.access_token],
            values[_CREDENTIALS.c.refresh_token],
            values[_CREDENTIALS.c.extras],
            values[_CREDENTIALS.c.version],
        )
        if values["credential_id"] is not None
        else None
    )
    return CredentialRead(
        integration=integration,
        awaiting_confirmation=bool(values["awaiting"]),
        tokens=tokens,
        tokens_stored_at=values["tokens_stored_at"],
    )


@dataclass(frozen=True)
class CredentialAccess:
    """One read of a token, for the credential access log; `accessed_at` is when the
    read happened (not when its row was written)."""

    integration_id: uuid.UUID
    api_key_id: uuid.UUID | None
    refreshed: bool
    client_address: str | None
    accessed_at: datetime


CREDENTIAL_ACCESS: Table = IntegrationCredentialAccess.__table__  # type: ignore[attr-defined]
_INSERT_ACCESS = insert(CREDENTIAL_ACCESS)  # built once: no statement cache key per write


def _access_row(access: CredentialAccess) -> dict[str, Any]:
    return {"id": uuid.uuid4(), **asdict(access)}


def write_credential_accesses(
    engine: Engine, accesses: list[CredentialAccess]
) -> list[BaseException | None]:
    """Rows of the credential access log, all in one transaction. Should the batch be
    refused (an integration deleted meanwhile), each row is written alone, so only that
    read fails."""
    try:
        with engine.begin() as connection:
            connection.execute(_INSERT_ACCESS, [_access_row(a) for a in accesses])
        return [None] * len(accesses)
    except IntegrityError:
        if len(accesses) == 1:
            raise
    results: list[BaseException | None] = []
    for access in accesses:
        try:
            with engine.begin() as connection:
                connection.execute(_INSERT_ACCESS, [_access_row(access)])
            results.append(None)
        except IntegrityError as exc:
            results.append(exc)
    return results


@dataclass(frozen=True)
class CredentialRequest:
    """One GET …/credentials for `read_and_log_credentials`: `admit` (the route's checks,
    run on what was read) raises to refuse the read, returns False to hand it back
    unlogged (a refresh is due first), or True to log it with `access`."""

    access: CredentialAccess
    admit: Callable[[CredentialRead | None], bool]


def read_and_log_credentials(
    engine: Engine, keyring: Keyring, requests: list[CredentialRequest]
) -> list[CredentialRead | BaseException]:
    """Reads and access-log rows of concurrent credential reads in one transaction (a
    `GroupCommit`'s `write_many`): each read's integration, confirmation state and tokens,
    its checks, and the rows of the reads admitted, committed together. A refused read is
    its own exception in the list and logs nothing."""
    results: list[CredentialRead | BaseException] = []
    admitted: list[CredentialAccess] = []
    try:
        with engine.begin() as connection:
            found = _read_many(
                connection, keyring, {request.access.integration_id for request in requests}
            )
            for request in requests:
                read = found.get(request.access.integration_id)
                try:
                    log_now = request.admit(read)
                except Exception as exc:
                    results.append(exc)
                    continue
                assert read is not None  # admit refuses a missing integration
                results.append(replace(read, logged=log_now))
                if log_now:
                    admitted.append(request.access)
            if admitted:
                connection.execute(_INSERT_ACCESS, [_access_row(a) for a in admitted])
    except IntegrityError:
        if len(requests) == 1:
            raise
        # An integration deleted between its read and the insert: each read alone.
        alone: list[CredentialRead | BaseException] = []
        for request in requests:
            try:
                alone.extend(read_and_log_credentials(engine, keyring, [request]))
            except IntegrityError as exc:
                alone.append(exc)
        return alone
    return results


def record_credential_access(
    engine: Engine,
    integration_id: uuid.UUID,
    *,
    api_key_id: uuid.UUID | None,
    refreshed: bool,
    client_address: str | None,
) -> None:
    """One access-log row in a transaction of its own (the route groups its rows through
    `write_credential_accesses`)."""
    write_credential_accesses(
        engine,
        [CredentialAccess(integration_id, api_key_id, refreshed, client_address, utcnow())],
    )


# --- sync logs and events ----------------------------------------------------------------


def write_sync_log(
    session: Session,
    integration_id: uuid.UUID,
    action: SyncAction,
    status: SyncStatus,
    *,
    error: str | None = None,
    meta: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> IntegrationSyncLog:
    now = utcnow()
    row = IntegrationSyncLog(
        integration_id=integration_id,
        action=action.value,
        resource_type="account" if action == SyncAction.ACCOUNT_LOOKUP else "oauth_token",
        status=status,
        items_processed=1 if status == SyncStatus.COMPLETED else 0,
        items_failed=1 if status == SyncStatus.FAILED else 0,
        error=error[:ERROR_LIMIT] if error else None,
        meta=meta or {},
        started_at=started_at or now,
        completed_at=now,
    )
    session.add(row)
    return row


def log_sync(
    engine: Engine,
    integration_id: uuid.UUID,
    action: SyncAction,
    status: SyncStatus,
    **kwargs: Any,
) -> None:
    with Session(engine) as session:
        write_sync_log(session, integration_id, action, status, **kwargs)
        session.commit()


def event_data(integration: Integration) -> dict[str, Any]:
    """What integration.* events carry: ids and status, never a token."""
    return {
        "integrationId": str(integration.id),
        "userId": integration.user_id,
        "organizationId": integration.organization_id,
        "provider": integration.provider,
        "name": integration.name,
        "status": integration.status.value
        if isinstance(integration.status, IntegrationStatus)
        else str(integration.status),
        "scope": list(integration.scope or []),
        "lastError": integration.last_error,
    }


def publish(
    engine: Engine, event_type: str, integration: Integration, *, key: str
) -> PublishResult:
    return publish_event(engine, event_type, event_data(integration), idempotency_key=key)


# --- the workflow's writes (through its activities) ----------------------------------------


def snapshot(
    engine: Engine, catalog: Catalog, integration_id: uuid.UUID
) -> IntegrationSnapshot | None:
    """The integration as the database knows it, to resume a workflow from."""
    with Session(engine) as session:
        integration = session.get(Integration, integration_id)
    if integration is None:
        return None
    entry = catalog.get(integration.provider)
    with Session(engine) as session:
        credential = session.get(IntegrationCredential, integration_id)
        states = session.exec(
            select(OAuthState)
            .where(col(OAuthState.integration_id) == integration_id)
            .order_by(col(OAuthState.created_at).desc())
        ).all()
    latest = states[0] if states else None
    pending = next((s for s in states if s.used_at is not None and s.exchanged_at is None), None)
    confirming = next((s for s in states if s.confirmation_expires_at is not None), None)
    return IntegrationSnapshot(
        integration_id=str(integration.id),
        user_id=integration.user_id,
        provider=integration.provider,
        status=IntegrationStatus(integration.status).value,
        expires_at=integration.expires_at,
        # Instagram's long-lived tokens refresh with themselves (the catalog's `refresh`).
        has_refresh_token=bool(
            credential and (credential.refresh_token or (entry and entry.refreshes_access_token))
        ),
        buffer_seconds=entry.token_expiration_buffer if entry else 300,
        connected_at=integration.connected_at,
        # The tokens' own time, not last_sync_at, which other syncs (publishing) move too.
        last_refreshed_at=credential.updated_at if credential else integration.last_sync_at,
        last_error=integration.last_error,
        callback_deadline=as_utc(latest.expires_at) if latest else None,
        pending_state_id=str(pending.id) if pending else None,
        confirmation_deadline=as_utc(confirming.confirmation_expires_at)
        if confirming and confirming.confirmation_expires_at
        else None,
    )


def integration_state(
    engine: Engine, state_id: uuid.UUID, integration_id: uuid.UUID
) -> OAuthState | None:
    """The authorization state, if it belongs to this integration."""
    with Session(engine) as session:
        state = session.get(OAuthState, state_id)
    if state is None or state.integration_id != integration_id:
        return None
    return state


def stored_info(engine: Engine, integration_id: uuid.UUID, entry: ProviderEntry) -> TokenInfo:
    """What an earlier, completed exchange stored (a retried exchange returns it)."""
    with Session(engine) as session:
        integration = session.get(Integration, integration_id)
        credential = session.get(IntegrationCredential, integration_id)
    assert integration is not None
    return TokenInfo(
        expires_at=integration.expires_at,
        has_refresh_token=bool(
            credential and (credential.refresh_token or entry.refreshes_access_token)
        ),
        scope=list(integration.scope or []),
        buffer_seconds=entry.token_expiration_buffer,
    )


def store_exchange(
    engine: Engine,
    keyring: Keyring,
    integration_id: uuid.UUID,
    state_id: uuid.UUID,
    parsed: TokenResponse,
    info: TokenInfo,
    started: datetime,
) -> None:
    """The exchange's tokens (sealed), the integration's facts, the spent state and the
    sync log, in one transaction."""
    now = utcnow()
    with Session(engine) as session:
        integration = session.get(Integration, integration_id)
        state = session.get(OAuthState, state_id)
        assert integration is not None and state is not None
        # The whole response besides the tokens is sealed with them; only the catalog's
        # public_extras stay in the clear.
        TokenStore(engine, keyring).put(
            session,
            integration_id,
            parsed.access_token,
            parsed.refresh_token,
            parsed.sealed_extras,
        )
        integration.token_type = parsed.token_type
        integration.expires_at = info.expires_at
        integration.scope = info.scope
        integration.provider_data = parsed.extras
        if parsed.account_name:
            integration.name = parsed.account_name
        elif integration.name is None and integration.connection_config:
            integration.name = next(iter(integration.connection_config.values()))
        integration.last_sync_at = now
        integration.updated_at = now
        session.add(integration)
        # The code is spent and the verifier served its purpose: keep neither.
        state.exchanged_at = now
        state.code = None
        state.code_verifier = None
        session.add(state)
        write_sync_log(
            session,
            integration_id,
            SyncAction.TOKEN_EXCHANGE,
            SyncStatus.COMPLETED,
            meta={
                "expiresAt": info.expires_at.isoformat() if info.expires_at else None,
                "refreshToken": info.has_refresh_token,
                "scope": info.scope,
            },
            started_at=started,
        )
        session.commit()


def store_name(
    engine: Engine,
    integration_id: uuid.UUID,
    name: str | None,
    status_code: int,
    started: datetime,
    facts: dict[str, Any] | None = None,
) -> None:
    """The account name the userinfo endpoint answered (`status_code`), the account's ids
    it gave (`facts`: the catalog's `account_fields`, merged into providerData), and its
    sync log."""
    with Session(engine) as session:
        if name is not None or facts:
            integration = session.get(Integration, integration_id)
            assert integration is not None
            if name is not None:
                integration.name = name
            if facts:
                integration.provider_data = with_account_facts(
                    integration.provider_data or {}, facts
                )
            integration.updated_at = utcnow()
            session.add(integration)
        write_sync_log(
            session,
            integration_id,
            SyncAction.ACCOUNT_LOOKUP,
            SyncStatus.COMPLETED if name is not None else SyncStatus.FAILED,
            error=None
            if name is not None
            else f"userinfo answered HTTP {status_code} without the account name",
            started_at=started,
        )
        session.commit()


def replaced_since_code_exchange(engine: Engine, integration_id: uuid.UUID) -> bool:
    """Whether the stored tokens are no longer the code exchange's: a refresh or the
    long-lived exchange (each logged COMPLETED with its swap, in one transaction) came
    after it. A retried long-lived exchange whose first attempt stored its token finds
    it done, instead of sending the long-lived token to be exchanged again."""
    with Session(engine) as session:
        latest = session.exec(
            select(IntegrationSyncLog.action)
            .where(col(IntegrationSyncLog.integration_id) == integration_id)
            .where(col(IntegrationSyncLog.status) == SyncStatus.COMPLETED)
            .where(
                col(IntegrationSyncLog.action).in_(
                    [SyncAction.TOKEN_EXCHANGE.value, SyncAction.TOKEN_REFRESH.value]
                )
            )
            .order_by(col(IntegrationSyncLog.completed_at).desc())
            .limit(1)
        ).first()
    return latest == SyncAction.TOKEN_REFRESH.value


def store_refresh(
    engine: Engine,
    keyring: Keyring,
    integration_id: uuid.UUID,
    version: int,
    parsed: TokenResponse,
    keep: str | None,
    info: TokenInfo,
    started: datetime,
    reason: str,
    extras: dict[str, Any] | None = None,
) -> None:
    """Swap the tokens if still at `version` (`StaleCredentials` otherwise), update the
    integration and write the sync log, in one transaction. `extras` (those of the
    exchange, read with the tokens) are kept, re-sealed with them."""
    now = utcnow()
    with Session(engine) as session:
        TokenStore(engine, keyring).replace(
            session,
            integration_id,
            expected_version=version,
            access_token=parsed.access_token,
            refresh_token=keep,
            extras=extras,
        )
        integration = session.get(Integration, integration_id)
        assert integration is not None
        integration.token_type = parsed.token_type
        integration.expires_at = info.expires_at
        if parsed.scope:
            integration.scope = parsed.scope
        integration.last_sync_at = now
        integration.last_error = None
        integration.updated_at = now
        session.add(integration)
        write_sync_log(
            session,
            integration_id,
            SyncAction.TOKEN_REFRESH,
            SyncStatus.COMPLETED,
            meta={
                "reason": reason,
                "expiresAt": info.expires_at.isoformat() if info.expires_at else None,
                "refreshTokenRotated": info.refresh_token_rotated,
            },
            started_at=started,
        )
        session.commit()


def set_status(engine: Engine, change: StatusChange) -> Integration | None:
    """Set status and lastError (and the connected/active facts that follow from them)."""
    now = utcnow()
    status = IntegrationStatus(change.status)
    with Session(engine) as session:
        integration = session.get(Integration, uuid.UUID(change.integration_id))
        if integration is None:
            return None
        integration.status = status
        integration.last_error = change.last_error[:ERROR_LIMIT] if change.last_error else None
        if status == IntegrationStatus.CONNECTED and integration.connected_at is None:
            integration.connected_at = now
            integration.is_active = True
        if status in TERMINAL_STATUSES:
            integration.is_active = False
        integration.updated_at = now
        session.add(integration)
        session.commit()
        session.refresh(integration)
        return integration


def expire(engine: Engine, integration_id: uuid.UUID) -> ExpiryOutcome:
    """EXPIRED and every state spent, unless a callback reached the database but not the
    workflow: that state is returned to be claimed instead, and nothing changes."""
    now = utcnow()
    with Session(engine) as session:
        states = session.exec(
            select(OAuthState).where(col(OAuthState.integration_id) == integration_id)
        ).all()
        for state in states:
            if state.used_at is not None and state.exchanged_at is None:
                return ExpiryOutcome(claimed_state_id=str(state.id))
        for state in states:
            state.used_at = state.used_at or now
            state.code_verifier = None
            state.code = None
            session.add(state)
        integration = session.get(Integration, integration_id)
        if integration is not None and integration.status == IntegrationStatus.PENDING:
            integration.status = IntegrationStatus.EXPIRED
            integration.is_active = False
            integration.last_error = EXPIRED_MESSAGE
            integration.updated_at = now
            session.add(integration)
        session.commit()
    return ExpiryOutcome()


def wipe(engine: Engine, keyring: Keyring, params: DisconnectInput) -> Integration | None:
    """Delete the tokens (and the sealed extras with them), the provider data and pending
    authorization secrets, and mark DISCONNECTED, or EXPIRED for an unconfirmed connection
    (and, for a deleted user, clear the personal data)."""
    integration_id = uuid.UUID(params.integration_id)
    status = IntegrationStatus(params.status)
    now = utcnow()
    with Session(engine) as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return None
        TokenStore(engine, keyring).wipe(session, integration_id)
        for state in session.exec(
            select(OAuthState).where(col(OAuthState.integration_id) == integration_id)
        ).all():
            state.used_at = state.used_at or now
            state.code = None
            state.code_verifier = None
            state.confirmation_hash = None
            session.add(state)
        integration.status = status
        integration.is_active = False
        integration.expires_at = None
        # What the token response said about the account leaves with the tokens.
        integration.provider_data = {}
        if status == IntegrationStatus.DISCONNECTED:
            integration.disconnected_at = now
        if params.last_error:
            integration.last_error = params.last_error[:ERROR_LIMIT]
        integration.updated_at = now
        if params.scrub_personal_data:
            integration.name = None
            integration.meta = {}
        session.add(integration)
        session.commit()
        session.refresh(integration)
        return integration


def check_confirmation(
    engine: Engine, integration_id: uuid.UUID, *, expire: bool
) -> ConfirmationOutcome:
    """Whether the application confirmed the connection (or burnt its confirmation); with
    `expire`, burn a confirmation still open, in one conditional UPDATE, so a confirm
    racing the expiry has one winner (`flow.confirm_connection` is the other side)."""
    with Session(engine) as session:
        state = session.exec(
            select(OAuthState)
            .where(col(OAuthState.integration_id) == integration_id)
            .order_by(col(OAuthState.created_at).desc())
        ).first()
        if state is None:
            return ConfirmationOutcome.EXPIRED
        if expire:
            session.execute(
                update(OAuthState)
                .where(col(OAuthState.id) == state.id)
                .where(col(OAuthState.confirmed_at).is_(None))
                .values(confirmation_hash=None)
            )
            session.commit()
            session.refresh(state)
    if state.confirmed_at is not None:
        return ConfirmationOutcome.CONFIRMED
    if state.confirmation_attempts >= MAX_CONFIRMATION_ATTEMPTS:
        return ConfirmationOutcome.BURNT
    return ConfirmationOutcome.EXPIRED if expire else ConfirmationOutcome.PENDING


def awaiting_confirmation(engine: Engine, integration_id: uuid.UUID) -> bool:
    """The connection was initiated with requireConfirmation and not confirmed yet: the
    credentials route's own check, whatever the integration's status says."""
    with Session(engine) as session:
        return _awaiting_confirmation(session, integration_id)


def _awaiting_confirmation(session: Session, integration_id: uuid.UUID) -> bool:
    # The latest state's two columns only (no ORM instance, no sealed columns).
    latest = session.execute(
        core_select(OAuthState.require_confirmation, OAuthState.confirmed_at)  # type: ignore[call-overload]
        .where(col(OAuthState.integration_id) == integration_id)
        .order_by(col(OAuthState.created_at).desc())
        .limit(1)
    ).first()
    return latest is not None and bool(latest[0]) and latest[1] is None
