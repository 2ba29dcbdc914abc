"""OAuth connections: /v1/integrations…, the public callback, and DELETE /v1/users/{userId}/integrations.

Every change to a connection goes through its `IntegrationWorkflow` (the single writer
of its tokens) as a Temporal update, sent by `workflows.clients.oauth` with
update-with-start (`USE_EXISTING`), so a connection whose run ended unexpectedly
(terminated by an operator, a lost Temporal cluster) resumes from the database on its
next request; the routes read the database directly, through `relay.oauth.repository`.
GET …/credentials is the only route that returns a token, or the token response's
sealed extras. With requireConfirmation the callback hands the application a one-time
code, and POST …/confirm checks it (in the database, once) before the workflow
connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine
from temporalio.service import RPCError

from api.deps import (
    ApiKeyDep,
    CatalogDep,
    EngineDep,
    KeyringDep,
    SettingsDep,
    TemporalDep,
    get_catalog,
    get_temporal,
    require_api_key,
    require_scope,
)
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.pagination import newest_first_page, page
from api.schemas.oauth import (
    ID_PATTERN,
    ConfirmRequest,
    Credentials,
    InitiateRequest,
    InitiateResult,
    IntegrationPublic,
    IntegrationUpdate,
    RefreshResult,
    SyncLogPublic,
    UserIntegrationsDeleted,
)
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.group_commit import GroupCommit
from relay.models.oauth import Integration, IntegrationStatus
from relay.oauth import repository
from relay.oauth.catalog import Catalog, ConnectionConfigError
from relay.oauth.contracts import (
    MAX_CONFIRMATION_ATTEMPTS,
    TERMINAL_STATUSES,
    AuthorizationCallback,
    AuthorizationOutcome,
    DisconnectRequest,
    RefreshOutcome,
    RefreshRequest,
)
from relay.oauth.flow import (
    CONFIRMATION_PARAM,
    Confirmation,
    callback_url,
    confirm_connection,
    consume_state,
    create_authorization,
    discard_authorization,
    redirect_allowed,
    with_query,
)
from relay.oauth.protocol import public_extras
from relay.oauth.schedule import refresh_due_at
from relay.settings import Settings
from workflows.clients import oauth as workflow_client

# The browser waits on the callback while the code is exchanged; past this it is sent
# back with status=pending and the application learns the outcome from the
# integration.connected / integration.error event or GET /v1/integrations/{id}.
CALLBACK_WAIT = timedelta(seconds=60)
USER_DELETE_CONCURRENCY = 8
_MESSAGE_LIMIT = 200

public = APIRouter(prefix="/v1/integrations", tags=["integrations"])
protected = APIRouter(prefix="/v1", tags=["integrations"], dependencies=[Depends(require_api_key)])

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------


def _not_found(integration_id: uuid.UUID) -> RelayError:
    return RelayError(ErrorCode.INTEGRATION_NOT_FOUND, f"no integration with id {integration_id}")


async def _load(engine: Engine, integration_id: uuid.UUID) -> Integration:
    integration = await asyncio.to_thread(repository.get_integration, engine, integration_id)
    if integration is None:
        raise _not_found(integration_id)
    return integration


def _public(integration: Any, catalog: Catalog) -> IntegrationPublic:
    """The wire model; providerData only as far as the catalog's public_extras and
    account_fields allow (rows written before extras were sealed may hold more)."""
    public = IntegrationPublic.model_validate(integration)
    entry = catalog.get(public.provider)
    shown = [*entry.public_extras, *entry.account_fields] if entry else []
    public.provider_data = public_extras(public.provider_data, shown)
    return public


class _Flights:
    """Concurrent identical requests of this process share one in-flight update.

    The workflow already serialises refreshes and lets waiting callers share one; this
    keeps twenty simultaneous credential reads from becoming twenty Temporal updates
    (the server caps in-flight updates per workflow, 10 by default).
    """

    def __init__(self) -> None:
        self._running: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    async def run(self, key: tuple[Any, ...], start: Callable[[], Awaitable[T]]) -> T:
        flight = self._running.get(key)
        if flight is None:
            flight = asyncio.ensure_future(start())
            self._running[key] = flight
            flight.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(flight)


def _flights(request: Request) -> _Flights:
    flights = getattr(request.app.state, "oauth_flights", None)
    if flights is None:
        flights = request.app.state.oauth_flights = _Flights()
    return flights  # type: ignore[no-any-return]


def _validation(field: str, message: str, where: str = "body") -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "the request is invalid",
        [{"field": field, "in": where, "message": message}],
    )


def _safe_message(text: str | None) -> str:
    text = re.sub(r"\s+", " ", text or "the authorization failed").strip()
    return text[:_MESSAGE_LIMIT]


def _redirect(url: str) -> RedirectResponse:
    # The callback URL held the code: no Referer to the application, nothing cached.
    return RedirectResponse(
        url,
        status_code=302,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


# --- routes --------------------------------------------------------------------------------


@protected.post(
    "/integrations/oauth/initiate",
    summary="Start connecting a user's account at a provider",
    description=(
        "Creates a PENDING integration and its workflow, and returns the URL to send the "
        "user to. The URL carries `client_id`, Relay's callback as `redirect_uri`, "
        "`response_type=code`, the scopes, a single-use `state` (256 bits, 10 minutes) and, "
        "unless the provider lacks it, a PKCE S256 `code_challenge`."
    ),
    status_code=201,
    response_model=Envelope[InitiateResult],
    responses=error_responses(400, 401, 422, 503),
)
async def initiate(
    body: Annotated[
        InitiateRequest,
        Body(
            examples=[
                {
                    "userId": "7d0f3c1e-5d0e-4c55-9a55-1f4f2b8f7a10",
                    "provider": "github",
                    "redirectUri": "http://localhost:3000/integrations/done",
                    "metadata": {"source": "settings"},
                }
            ]
        ),
    ],
    settings: SettingsDep,
    engine: EngineDep,
    keyring: KeyringDep,
    catalog: CatalogDep,
    client: TemporalDep,
) -> dict[str, Any]:
    entry = catalog.require(body.provider)
    credentials = settings.oauth_clients.get(entry.key)
    if credentials is None:
        name = entry.key.upper()
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            f"{entry.display_name} is not configured: set {name}_CLIENT_ID and {name}_CLIENT_SECRET",
        )
    if not redirect_allowed(body.redirect_uri, settings.oauth_allowed_redirects):
        raise _validation(
            "redirectUri", "not under OAUTH_ALLOWED_REDIRECTS (or has a fragment or credentials)"
        )
    try:
        connection_config = entry.check_connection_config(body.connection_config)
    except ConnectionConfigError as exc:
        raise _validation(f"connectionConfig.{exc.field}", str(exc)) from None
    scopes = body.scopes if body.scopes is not None else list(entry.default_scopes)
    require_confirmation = (
        body.require_confirmation
        if body.require_confirmation is not None
        else settings.oauth_require_confirmation
    )
    pending = await asyncio.to_thread(
        create_authorization,
        engine,
        keyring,
        entry,
        client_id=credentials[0],
        user_id=body.user_id,
        organization_id=body.organization_id,
        redirect_uri=body.redirect_uri,
        scopes=scopes,
        connection_config=connection_config,
        metadata=body.metadata or {},
        callback=callback_url(settings.base_url, entry.key),
        require_confirmation=require_confirmation,
    )
    integration = pending.integration
    try:
        await workflow_client.start_integration(client, settings, integration, pending.expires_at)
    except BaseException:
        await asyncio.to_thread(discard_authorization, engine, integration.id)
        raise
    return ok(
        InitiateResult(
            integration_id=integration.id,
            authorization_url=pending.authorization_url,
            state=pending.state,
            expires_at=pending.expires_at,
            require_confirmation=require_confirmation,
        )
    )


@public.get(
    "/oauth/callback/{provider}",
    summary="Where the provider sends the user back (public)",
    description=(
        "Consumes the state (once), hands the code to the integration's workflow and waits "
        "for the exchange, then redirects (302) to the application's redirectUri with "
        "`status=success&integrationId=…` or `status=error&code=OAUTH_FAILED&message=…`; "
        "with requireConfirmation, `status=pending_confirmation&relay_confirmation=<code>` "
        "(the one-time code for POST /v1/integrations/{id}/confirm). "
        "An unknown, expired or used state gets 400 OAUTH_FAILED and touches no workflow."
    ),
    status_code=302,
    response_class=Response,
    responses={302: {"description": "back to the application"}, **error_responses(400, 503)},
)
async def callback(
    request: Request,
    provider: Annotated[str, Path(max_length=64)],
    settings: SettingsDep,
    engine: EngineDep,
    keyring: KeyringDep,
    catalog: CatalogDep,
    client: TemporalDep,
) -> Response:
    entry = catalog.get(provider)
    params = request.query_params
    state = params.get("state")
    if entry is None or not state:
        raise RelayError(ErrorCode.OAUTH_FAILED, "the callback carries no valid state")
    code = params.get(entry.code_param) or params.get("code")
    error = params.get("error")
    error_text = None
    if error or not code:
        description = params.get("error_description")
        error_text = _safe_message(
            f"{error}: {description}" if error and description else error or "no code returned"
        )
    consumed = await asyncio.to_thread(
        consume_state,
        engine,
        keyring,
        provider=entry.key,
        state=state,
        code=None if error_text else code,
        error=error_text,
        confirmation_window=settings.oauth_confirmation_window,
    )
    if consumed is None:
        raise RelayError(
            ErrorCode.OAUTH_FAILED, "the authorization state is unknown, expired or already used"
        )
    integration = await _load(engine, consumed.integration_id)
    back = consumed.redirect_uri
    identity = {"integrationId": str(integration.id), "provider": integration.provider}
    # The application confirms with this once it has checked its own session: the browser
    # coming back may not belong to the user who started the connection.
    confirm = {CONFIRMATION_PARAM: consumed.confirmation_code} if consumed.confirmation_code else {}
    try:
        outcome: AuthorizationOutcome = await asyncio.wait_for(
            workflow_client.complete_authorization(
                client, settings, integration, AuthorizationCallback(str(consumed.state_id))
            ),
            CALLBACK_WAIT.total_seconds(),
        )
    except TimeoutError:
        return _redirect(with_query(back, {"status": "pending", **identity, **confirm}))
    except RelayError as exc:
        return _redirect(
            with_query(
                back,
                {
                    "status": "error",
                    "code": ErrorCode.OAUTH_FAILED.value,
                    "message": _safe_message(exc.message),
                    **identity,
                },
            )
        )
    if outcome.connected:
        return _redirect(with_query(back, {"status": "success", **identity, **confirm}))
    if outcome.status == IntegrationStatus.PENDING_CONFIRMATION:
        return _redirect(
            with_query(back, {"status": "pending_confirmation", **identity, **confirm})
        )
    return _redirect(
        with_query(
            back,
            {
                "status": "error",
                "code": ErrorCode.OAUTH_FAILED.value,
                "message": _safe_message(outcome.message),
                **identity,
            },
        )
    )


@protected.get(
    "/integrations",
    summary="List integrations",
    response_model=Page[IntegrationPublic],
    responses=error_responses(401, 422),
)
async def list_integrations(
    engine: EngineDep,
    catalog: CatalogDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    is_active: Annotated[bool | None, Query(alias="isActive")] = None,
    status: Annotated[IntegrationStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    query = repository.integrations_query(
        user_id=user_id, provider=provider, is_active=is_active, status=status
    )
    rows, next_cursor = await newest_first_page(
        engine, repository.INTEGRATIONS, query, cursor, limit
    )
    return page([_public(row, catalog) for row in rows], next_cursor)


@protected.get(
    "/integrations/{integration_id}",
    summary="One integration (never its tokens)",
    response_model=Envelope[IntegrationPublic],
    responses=error_responses(401, 404, 422),
)
async def get_integration(
    integration_id: uuid.UUID, engine: EngineDep, catalog: CatalogDep
) -> dict[str, Any]:
    return ok(_public(await _load(engine, integration_id), catalog))


@protected.patch(
    "/integrations/{integration_id}",
    summary="Rename, annotate, or (de)activate an integration",
    response_model=Envelope[IntegrationPublic],
    responses=error_responses(401, 404, 409, 422),
)
async def update_integration(
    integration_id: uuid.UUID,
    body: Annotated[IntegrationUpdate, Body(examples=[{"name": "@acme", "isActive": False}])],
    engine: EngineDep,
    catalog: CatalogDep,
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise _validation("body", "give at least one of name, metadata, isActive")
    integration = await asyncio.to_thread(
        repository.update_integration, engine, integration_id, changes
    )
    if integration is None:
        raise _not_found(integration_id)
    return ok(_public(integration, catalog))


@protected.delete(
    "/integrations/{integration_id}",
    summary="Disconnect: revoke at the provider, wipe the tokens, end the workflow",
    response_model=Envelope[IntegrationPublic],
    responses=error_responses(401, 404, 422, 503),
)
async def delete_integration(
    integration_id: uuid.UUID,
    settings: SettingsDep,
    engine: EngineDep,
    catalog: CatalogDep,
    client: TemporalDep,
) -> dict[str, Any]:
    integration = await _load(engine, integration_id)
    if integration.status not in TERMINAL_STATUSES:
        await workflow_client.disconnect(
            client, settings, integration, DisconnectRequest(reason="api")
        )
        integration = await _load(engine, integration_id)
    return ok(_public(integration, catalog))


@protected.get(
    "/integrations/{integration_id}/sync-logs",
    summary="Token exchanges, refreshes, revocations and account lookups, newest first",
    response_model=Page[SyncLogPublic],
    responses=error_responses(401, 404, 422),
)
async def list_sync_logs(
    integration_id: uuid.UUID,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    await _load(engine, integration_id)
    rows, next_cursor = await newest_first_page(
        engine,
        repository.SYNC_LOGS,
        repository.sync_logs_query(integration_id),
        cursor,
        limit,
        order_column="started_at",
    )
    return page([SyncLogPublic.model_validate(row) for row in rows], next_cursor)


def _require_connected(integration: Integration) -> None:
    if integration.status == IntegrationStatus.PENDING_CONFIRMATION:
        raise RelayError(
            ErrorCode.CONFLICT,
            "the connection awaits the application's confirmation: POST "
            f"/v1/integrations/{integration.id}/confirm with the relay_confirmation code",
            {"status": str(integration.status)},
        )
    if integration.status == IntegrationStatus.NEEDS_REAUTH:
        raise RelayError(
            ErrorCode.REFRESH_FAILED,
            integration.last_error or "the provider refused the refresh token; reconnect",
            {"status": str(integration.status)},
        )
    if integration.status != IntegrationStatus.CONNECTED:
        raise RelayError(
            ErrorCode.CONFLICT,
            f"the integration is {integration.status}, not CONNECTED",
            {"status": str(integration.status)},
        )


@protected.post(
    "/integrations/{integration_id}/refresh",
    summary="Refresh the access token now",
    description="Returns the new expiresAt, or 401 REFRESH_FAILED with the provider's reason.",
    response_model=Envelope[RefreshResult],
    responses=error_responses(401, 404, 409, 422, 502, 503),
)
async def refresh_integration(
    integration_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    client: TemporalDep,
) -> dict[str, Any]:
    integration = await _load(engine, integration_id)
    _require_connected(integration)
    outcome: RefreshOutcome = await _flights(request).run(
        ("refresh", integration_id),
        lambda: workflow_client.refresh(
            client, settings, integration, RefreshRequest(force=True, reason="api")
        ),
    )
    return ok(
        RefreshResult(
            integration_id=integration.id,
            expires_at=outcome.expires_at,
            refreshed=outcome.refreshed,
        )
    )


@protected.get(
    "/integrations/{integration_id}/credentials",
    dependencies=[Depends(require_scope("credentials:read"))],
    summary="A valid access token (the only route that returns one)",
    description=(
        "Refreshed first (by the integration's workflow, so concurrent callers share one "
        "refresh) when the token is within its provider's expiration buffer. Every call "
        "is recorded in the credential access log."
    ),
    response_model=Envelope[Credentials],
    responses=error_responses(401, 404, 409, 422, 502, 503),
)
async def get_credentials(
    integration_id: uuid.UUID,
    request: Request,
    response: Response,
    api_key: ApiKeyDep,
) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1
    # The hottest route reads app state itself: each declared dependency costs FastAPI
    # a solving step per request. The Temporal client is still required first (503
    # TEMPORAL_UNAVAILABLE while Temporal is unreachable, as with TemporalDep).
    state = request.app.state
    settings: Settings = state.settings
    client = await get_temporal(request)
    # The integration, its confirmation state and its tokens, the route's checks and the
    # access-log row: one thread hop and one transaction, shared with concurrent reads; the
    # answer comes only once the row is committed.
    catalog = await get_catalog(request)
    access = repository.CredentialAccess(
        integration_id=integration_id,
        api_key_id=api_key.id,
        refreshed=False,
        client_address=(request.client.host if request.client else None),
        accessed_at=utcnow(),
    )
    reads = _credential_reads(request)
    read = await reads.submit(
        repository.CredentialRequest(access, functools.partial(_admit, integration_id, catalog))
    )
    integration = read.integration
    if not read.logged:
        # Within the provider's expiration buffer: the workflow refreshes first (and
        # concurrent callers share that refresh), then the new token is read and logged.
        outcome: RefreshOutcome = await _flights(request).run(
            ("credentials", integration_id),
            lambda: workflow_client.refresh(
                client, settings, integration, RefreshRequest(force=False, reason="credentials")
            ),
        )
        read = await reads.submit(
            repository.CredentialRequest(
                dataclasses.replace(access, refreshed=outcome.refreshed, accessed_at=utcnow()),
                functools.partial(_admit_refreshed, integration_id),
            )
        )
        integration = read.integration
    tokens = read.tokens
    assert tokens is not None  # admitted
    return ok(
        Credentials(
            access_token=tokens.access_token,
            token_type=integration.token_type,
            expires_at=integration.expires_at,
            scope=list(integration.scope or []),
            # Rows written before extras were sealed kept them in providerData.
            extras=tokens.extras if tokens.extras is not None else integration.provider_data,
        )
    )


def _admit(
    integration_id: uuid.UUID, catalog: Catalog, read: repository.CredentialRead | None
) -> bool:
    """The credentials route's checks, in its order, on what was read (run in the reading
    thread): a refusal raises; False hands the read back for a refresh; True logs it."""
    if read is None:
        raise _not_found(integration_id)
    integration = read.integration
    if not integration.is_active:
        raise RelayError(ErrorCode.CONFLICT, "the integration is inactive (PATCH isActive)")
    _require_connected(integration)
    if read.awaiting_confirmation:
        # Defence in depth: the status says CONNECTED, the state row says unconfirmed.
        raise RelayError(
            ErrorCode.CONFLICT,
            "the connection awaits the application's confirmation",
            {"status": IntegrationStatus.PENDING_CONFIRMATION.value},
        )
    entry = catalog.get(integration.provider)
    buffer = entry.token_expiration_buffer if entry else 300
    issued_at = read.tokens_stored_at or integration.last_sync_at
    if integration.expires_at is not None and utcnow() >= refresh_due_at(
        integration.expires_at, issued_at, buffer
    ):
        return False
    return _admit_refreshed(integration_id, read)


def _admit_refreshed(integration_id: uuid.UUID, read: repository.CredentialRead | None) -> bool:
    """The checks after a refresh (or when none was due): a token, not expired."""
    if read is None:
        raise _not_found(integration_id)
    if read.tokens is None:
        raise RelayError(ErrorCode.CONFLICT, "the integration holds no token")
    expires_at = read.integration.expires_at
    if expires_at is not None and expires_at <= utcnow():
        raise RelayError(ErrorCode.TOKEN_EXPIRED, "the access token has expired")
    return True


# Reads per transaction at most; concurrent reads share one thread hop and one commit.
CREDENTIAL_READ_BATCH = 500


def _credential_reads(
    request: Request,
) -> GroupCommit[repository.CredentialRequest, repository.CredentialRead]:
    """The process's group commit of credential reads and their access-log rows: a read is
    answered after the commit holding its row, so a crash loses no read answered."""
    reads = getattr(request.app.state, "credential_reads", None)
    if reads is None:
        engine, keyring = request.app.state.engine, request.app.state.keyring
        reads = request.app.state.credential_reads = GroupCommit(
            lambda batch: repository.read_and_log_credentials(engine, keyring, batch),
            max_batch=CREDENTIAL_READ_BATCH,
        )
    return reads  # type: ignore[no-any-return]


_CONFIRMATION_REFUSALS = {
    Confirmation.NOT_REQUIRED: "the connection was initiated without requireConfirmation",
    Confirmation.NOT_READY: "the user has not come back from the provider yet",
    Confirmation.ALREADY_CONFIRMED: "the connection is already confirmed; a code is single use",
    Confirmation.EXPIRED: "the confirmation window closed or the connection ended; connect again",
}


@protected.post(
    "/integrations/{integration_id}/confirm",
    summary="Confirm a connection initiated with requireConfirmation",
    description=(
        "The defence against connection fixation: call it only once your own session "
        "shows that the browser which came back with `relay_confirmation` belongs to the "
        "user who initiated the connection. The right code (once, within "
        "OAUTH_CONFIRMATION_WINDOW) makes the integration CONNECTED; a wrong one is 400 "
        f"INVALID_CONFIRMATION_CODE, and the {MAX_CONFIRMATION_ATTEMPTS}th wrong one burns "
        "the confirmation (429 TOO_MANY_ATTEMPTS from then on; the connection is revoked "
        "and wiped). A used, expired or unneeded confirmation is 409 CONFLICT."
    ),
    response_model=Envelope[IntegrationPublic],
    responses=error_responses(400, 401, 404, 409, 422, 429, 503),
)
async def confirm_integration(
    integration_id: uuid.UUID,
    body: ConfirmRequest,
    settings: SettingsDep,
    engine: EngineDep,
    catalog: CatalogDep,
    client: TemporalDep,
) -> dict[str, Any]:
    integration = await _load(engine, integration_id)
    attempt = await asyncio.to_thread(confirm_connection, engine, integration_id, body.code)
    if attempt.result == Confirmation.CONFIRMED:
        outcome = await workflow_client.settle_confirmation(client, settings, integration)
        if not outcome.connected:
            raise RelayError(
                ErrorCode.CONFLICT,
                outcome.message or f"the integration is {outcome.status}",
                {"status": outcome.status},
            )
        return ok(_public(await _load(engine, integration_id), catalog))
    if attempt.result == Confirmation.WRONG_CODE:
        raise RelayError(
            ErrorCode.INVALID_CONFIRMATION_CODE,
            "the confirmation code is wrong",
            {"attemptsLeft": attempt.attempts_left},
        )
    if attempt.result == Confirmation.TOO_MANY_ATTEMPTS:
        if (await _load(engine, integration_id)).status not in TERMINAL_STATUSES:
            # End it now (revoke, wipe); the workflow's deadline would otherwise.
            with contextlib.suppress(RelayError, RPCError):
                await workflow_client.settle_confirmation(client, settings, integration)
        raise RelayError(
            ErrorCode.TOO_MANY_ATTEMPTS,
            f"{MAX_CONFIRMATION_ATTEMPTS} wrong confirmation codes: the connection cannot be "
            "confirmed any more; connect again",
        )
    if attempt.result == Confirmation.ALREADY_CONFIRMED and (
        integration.status == IntegrationStatus.PENDING_CONFIRMATION
    ):
        # The first confirmation's message to the workflow was lost: deliver it again.
        with contextlib.suppress(RelayError, RPCError):
            await workflow_client.settle_confirmation(client, settings, integration)
        integration = await _load(engine, integration_id)
    raise RelayError(
        ErrorCode.CONFLICT,
        _CONFIRMATION_REFUSALS[attempt.result],
        {"status": str(integration.status), "reason": attempt.result.value},
    )


@protected.delete(
    "/users/{user_id}/integrations",
    summary="Disconnect every integration of a user (user.deleted)",
    description=(
        "Revokes and wipes the tokens of each connection, marks them DISCONNECTED and "
        "clears their personal data (account name, metadata, provider data)."
    ),
    response_model=Envelope[UserIntegrationsDeleted],
    responses=error_responses(401, 422, 503),
)
async def delete_user_integrations(
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    settings: SettingsDep,
    engine: EngineDep,
    client: TemporalDep,
) -> dict[str, Any]:
    integrations = await asyncio.to_thread(repository.user_integrations, engine, user_id)
    live = [i for i in integrations if i.status not in TERMINAL_STATUSES]
    gate = asyncio.Semaphore(USER_DELETE_CONCURRENCY)

    async def disconnect(integration: Integration) -> None:
        async with gate:
            await workflow_client.disconnect(
                client,
                settings,
                integration,
                DisconnectRequest(reason="user.deleted", scrub_personal_data=True),
            )

    await asyncio.gather(*(disconnect(integration) for integration in live))

    # The ones that ended before (the workflow scrubbed the rest as it disconnected them).
    await asyncio.to_thread(
        repository.scrub_personal_data,
        engine,
        [i.id for i in integrations if i.status in TERMINAL_STATUSES],
    )
    return ok(
        UserIntegrationsDeleted(
            user_id=user_id,
            disconnected=len(live),
            integration_ids=[integration.id for integration in integrations],
        )
    )
