"""OAuth connections: /v1/integrations…, the public callback, and DELETE /v1/users/{userId}/integrations.

Every change to a connection goes through its `IntegrationWorkflow` (the single writer
of its tokens) as a Temporal update; the routes read the database directly. The update
is sent with update-with-start (`USE_EXISTING`), so a connection whose run ended
unexpectedly (terminated by an operator, a lost Temporal cluster) resumes from the
database on its next request. GET …/credentials is the only route that returns a token.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import Field, field_validator
from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import (
    ApiKeyDep,
    EngineDep,
    KeyringDep,
    SettingsDep,
    TemporalDep,
    require_api_key,
)
from api.envelope import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ApiModel,
    Envelope,
    Page,
    decode_cursor,
    encode_cursor,
    error_responses,
)
from relay import search_attributes
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import (
    Integration,
    IntegrationCredentialAccess,
    IntegrationStatus,
    IntegrationSyncLog,
)
from relay.oauth.catalog import Catalog, ConnectionConfigError, load_catalog
from relay.oauth.contracts import (
    AuthorizationCallback,
    AuthorizationOutcome,
    DisconnectRequest,
    IntegrationInput,
    RefreshOutcome,
    RefreshRequest,
)
from relay.oauth.flow import (
    callback_url,
    consume_state,
    create_authorization,
    discard_authorization,
    redirect_allowed,
    with_query,
)
from relay.oauth.schedule import refresh_due_at
from relay.oauth.tokens import TokenStore
from relay.settings import Settings
from workflows.oauth import IntegrationWorkflow

# The browser waits on the callback while the code is exchanged; past this it is sent
# back with status=pending and the application learns the outcome from the
# integration.connected / integration.error event or GET /v1/integrations/{id}.
CALLBACK_WAIT = timedelta(seconds=60)
USER_DELETE_CONCURRENCY = 8
_ID = r"^[A-Za-z0-9_.:@/+-]{1,200}$"
_MESSAGE_LIMIT = 200
_METADATA_LIMIT = 16_384
TERMINAL = (IntegrationStatus.DISCONNECTED, IntegrationStatus.EXPIRED)

public = APIRouter(prefix="/v1/integrations", tags=["integrations"])
protected = APIRouter(prefix="/v1", tags=["integrations"], dependencies=[Depends(require_api_key)])

T = TypeVar("T")


def get_catalog(request: Request) -> Catalog:
    catalog = getattr(request.app.state, "catalog", None)
    if catalog is None:
        catalog = request.app.state.catalog = load_catalog(
            request.app.state.settings.providers_file
        )
    return catalog  # type: ignore[no-any-return]


CatalogDep = Annotated[Catalog, Depends(get_catalog)]


# --- wire models ---------------------------------------------------------------------------


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, default=str)) > _METADATA_LIMIT:
        raise ValueError(f"at most {_METADATA_LIMIT} bytes of JSON")
    return value


class InitiateRequest(ApiModel):
    user_id: str = Field(pattern=_ID, examples=["7d0f3c1e-5d0e-4c55-9a55-1f4f2b8f7a10"])
    provider: str = Field(min_length=1, max_length=64, examples=["github"])
    redirect_uri: str = Field(
        min_length=1, max_length=2048, examples=["http://localhost:3000/integrations/done"]
    )
    scopes: list[str] | None = Field(
        default=None, max_length=100, description="Defaults to the catalog's default_scopes."
    )
    connection_config: dict[str, str] | None = Field(
        default=None, examples=[{"shop": "acme"}], description="Values the provider needs."
    )
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"source": "settings"}])
    organization_id: str | None = Field(default=None, pattern=_ID)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        for scope in value or []:
            if not scope or len(scope) > 200 or any(ch.isspace() for ch in scope):
                raise ValueError("each scope is 1 to 200 characters without whitespace")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


class InitiateResult(ApiModel):
    integration_id: uuid.UUID
    authorization_url: str
    state: str = Field(description="Single use, valid 10 minutes; Relay keeps only its hash.")
    expires_at: datetime


class IntegrationPublic(ApiModel):
    id: uuid.UUID
    user_id: str
    organization_id: str | None
    provider: str
    name: str | None
    status: IntegrationStatus
    is_active: bool
    scope: list[str]
    token_type: str | None
    expires_at: datetime | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    connection_config: dict[str, str]
    provider_data: dict[str, Any]
    last_sync_at: datetime | None
    last_error: str | None
    connected_at: datetime | None
    disconnected_at: datetime | None
    created_at: datetime
    updated_at: datetime


class IntegrationUpdate(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    is_active: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_metadata(value)


class Credentials(ApiModel):
    access_token: str
    token_type: str | None
    expires_at: datetime | None
    scope: list[str]


class RefreshResult(ApiModel):
    integration_id: uuid.UUID
    expires_at: datetime | None
    refreshed: bool


class SyncLogPublic(ApiModel):
    id: uuid.UUID
    integration_id: uuid.UUID
    action: str
    resource_type: str | None
    resource_id: str | None
    status: str
    items_processed: int
    items_failed: int
    error: str | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    started_at: datetime
    completed_at: datetime | None


class UserIntegrationsDeleted(ApiModel):
    user_id: str
    disconnected: int
    integration_ids: list[uuid.UUID]


# --- helpers -------------------------------------------------------------------------------


def workflow_id(integration_id: uuid.UUID | str) -> str:
    return f"integration-{integration_id}"


def _search_attributes(integration: Integration) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.INTEGRATION_ID, str(integration.id)),
            SearchAttributePair(search_attributes.USER_ID, integration.user_id),
            SearchAttributePair(search_attributes.PROVIDER, integration.provider),
            SearchAttributePair(search_attributes.ENTITY_ID, str(integration.id)),
        ]
    )


async def _db(engine: Engine, fn: Callable[[Session], T]) -> T:
    def run() -> T:
        with Session(engine, expire_on_commit=False) as session:
            return fn(session)

    return await asyncio.to_thread(run)


async def _load(engine: Engine, integration_id: uuid.UUID) -> Integration:
    integration = await _db(engine, lambda s: s.get(Integration, integration_id))
    if integration is None:
        raise RelayError(
            ErrorCode.INTEGRATION_NOT_FOUND, f"no integration with id {integration_id}"
        )
    return integration


def _public(integration: Integration) -> IntegrationPublic:
    return IntegrationPublic.model_validate(integration)


def _update_error(exc: WorkflowUpdateFailedError) -> RelayError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        try:
            code = ErrorCode(cause.type or "")
        except ValueError:
            code = ErrorCode.CONFLICT  # a validator's rejection: the workflow's state forbids it
        details = cause.details[0] if cause.details else None
        return RelayError(code, cause.message, details if isinstance(details, dict) else None)
    return RelayError(ErrorCode.INTERNAL_ERROR, "the integration's workflow failed the request")


async def _update(
    client: Client,
    settings: Settings,
    integration: Integration,
    update: Any,
    arg: Any,
) -> Any:
    """Send `update` to the integration's workflow, starting a recovering run if none runs."""
    handle = client.get_workflow_handle(workflow_id(integration.id))
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc) from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    # No running workflow (terminated by an operator, a lost cluster): the database knows
    # the connection, so a run is started that resumes from it and takes the update.
    start = WithStartWorkflowOperation(
        IntegrationWorkflow.run,
        IntegrationInput(
            integration_id=str(integration.id),
            user_id=integration.user_id,
            provider=integration.provider,
            recover=True,
        ),
        id=workflow_id(integration.id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_search_attributes(integration),
    )
    try:
        return await client.execute_update_with_start_workflow(
            update, arg, start_workflow_operation=start
        )
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc) from None


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
    )
    integration = pending.integration
    try:
        await client.start_workflow(
            IntegrationWorkflow.run,
            IntegrationInput(
                integration_id=str(integration.id),
                user_id=integration.user_id,
                provider=integration.provider,
                callback_deadline=pending.expires_at,
            ),
            id=workflow_id(integration.id),
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=_search_attributes(integration),
        )
    except BaseException:
        await asyncio.to_thread(discard_authorization, engine, integration.id)
        raise
    return {
        "success": True,
        "data": InitiateResult(
            integration_id=integration.id,
            authorization_url=pending.authorization_url,
            state=pending.state,
            expires_at=pending.expires_at,
        ),
    }


@public.get(
    "/oauth/callback/{provider}",
    summary="Where the provider sends the user back (public)",
    description=(
        "Consumes the state (once), hands the code to the integration's workflow and waits "
        "for the exchange, then redirects (302) to the application's redirectUri with "
        "`status=success&integrationId=…` or `status=error&code=OAUTH_FAILED&message=…`. "
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
    )
    if consumed is None:
        raise RelayError(
            ErrorCode.OAUTH_FAILED, "the authorization state is unknown, expired or already used"
        )
    integration = await _load(engine, consumed.integration_id)
    back = consumed.redirect_uri
    identity = {"integrationId": str(integration.id), "provider": integration.provider}
    try:
        outcome: AuthorizationOutcome = await asyncio.wait_for(
            _update(
                client,
                settings,
                integration,
                IntegrationWorkflow.complete_authorization,
                AuthorizationCallback(str(consumed.state_id)),
            ),
            CALLBACK_WAIT.total_seconds(),
        )
    except TimeoutError:
        return _redirect(with_query(back, {"status": "pending", **identity}))
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
        return _redirect(with_query(back, {"status": "success", **identity}))
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
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    is_active: Annotated[bool | None, Query(alias="isActive")] = None,
    status: Annotated[IntegrationStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    after = decode_cursor(cursor)

    def query(session: Session) -> list[Integration]:
        statement = select(Integration)
        if user_id is not None:
            statement = statement.where(col(Integration.user_id) == user_id)
        if provider is not None:
            statement = statement.where(col(Integration.provider) == provider.lower())
        if is_active is not None:
            statement = statement.where(col(Integration.is_active) == is_active)
        if status is not None:
            statement = statement.where(col(Integration.status) == status.value)
        if after is not None:
            moment, row_id = after
            statement = statement.where(
                or_(
                    col(Integration.created_at) < moment,
                    and_(col(Integration.created_at) == moment, col(Integration.id) < row_id),
                )
            )
        statement = statement.order_by(
            col(Integration.created_at).desc(), col(Integration.id).desc()
        ).limit(limit + 1)
        return list(session.exec(statement).all())

    rows = await _db(engine, query)
    page, more = rows[:limit], len(rows) > limit
    return {
        "success": True,
        "data": [_public(row) for row in page],
        "nextCursor": encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    }


@protected.get(
    "/integrations/{integration_id}",
    summary="One integration (never its tokens)",
    response_model=Envelope[IntegrationPublic],
    responses=error_responses(401, 404, 422),
)
async def get_integration(integration_id: uuid.UUID, engine: EngineDep) -> dict[str, Any]:
    return {"success": True, "data": _public(await _load(engine, integration_id))}


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
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise _validation("body", "give at least one of name, metadata, isActive")

    def apply(session: Session) -> Integration | None:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return None
        if changes.get("is_active") and integration.status in TERMINAL:
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

    integration = await _db(engine, apply)
    if integration is None:
        raise RelayError(
            ErrorCode.INTEGRATION_NOT_FOUND, f"no integration with id {integration_id}"
        )
    return {"success": True, "data": _public(integration)}


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
    client: TemporalDep,
) -> dict[str, Any]:
    integration = await _load(engine, integration_id)
    if integration.status not in TERMINAL:
        await _update(
            client,
            settings,
            integration,
            IntegrationWorkflow.disconnect,
            DisconnectRequest(reason="api"),
        )
        integration = await _load(engine, integration_id)
    return {"success": True, "data": _public(integration)}


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
    after = decode_cursor(cursor)

    def query(session: Session) -> list[IntegrationSyncLog]:
        statement = select(IntegrationSyncLog).where(
            col(IntegrationSyncLog.integration_id) == integration_id
        )
        if after is not None:
            moment, row_id = after
            statement = statement.where(
                or_(
                    col(IntegrationSyncLog.started_at) < moment,
                    and_(
                        col(IntegrationSyncLog.started_at) == moment,
                        col(IntegrationSyncLog.id) < row_id,
                    ),
                )
            )
        statement = statement.order_by(
            col(IntegrationSyncLog.started_at).desc(), col(IntegrationSyncLog.id).desc()
        ).limit(limit + 1)
        return list(session.exec(statement).all())

    rows = await _db(engine, query)
    page, more = rows[:limit], len(rows) > limit
    return {
        "success": True,
        "data": [SyncLogPublic.model_validate(row) for row in page],
        "nextCursor": encode_cursor(page[-1].started_at, page[-1].id) if more else None,
    }


def _require_connected(integration: Integration) -> None:
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
        lambda: _update(
            client,
            settings,
            integration,
            IntegrationWorkflow.refresh,
            RefreshRequest(force=True, reason="api"),
        ),
    )
    return {
        "success": True,
        "data": RefreshResult(
            integration_id=integration.id,
            expires_at=outcome.expires_at,
            refreshed=outcome.refreshed,
        ),
    }


@protected.get(
    "/integrations/{integration_id}/credentials",
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
    settings: SettingsDep,
    engine: EngineDep,
    keyring: KeyringDep,
    catalog: CatalogDep,
    client: TemporalDep,
) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1
    integration = await _load(engine, integration_id)
    if not integration.is_active:
        raise RelayError(ErrorCode.CONFLICT, "the integration is inactive (PATCH isActive)")
    _require_connected(integration)
    entry = catalog.get(integration.provider)
    buffer = entry.token_expiration_buffer if entry else 300
    refreshed = False
    if integration.expires_at is not None and utcnow() >= refresh_due_at(
        integration.expires_at, integration.last_sync_at, buffer
    ):
        outcome: RefreshOutcome = await _flights(request).run(
            ("credentials", integration_id),
            lambda: _update(
                client,
                settings,
                integration,
                IntegrationWorkflow.refresh,
                RefreshRequest(force=False, reason="credentials"),
            ),
        )
        refreshed = outcome.refreshed
        integration = await _load(engine, integration_id)
    tokens = await asyncio.to_thread(TokenStore(engine, keyring).read, integration_id)
    if tokens is None:
        raise RelayError(ErrorCode.CONFLICT, "the integration holds no token")
    if integration.expires_at is not None and integration.expires_at <= utcnow():
        raise RelayError(ErrorCode.TOKEN_EXPIRED, "the access token has expired")

    def log(session: Session) -> None:
        session.add(
            IntegrationCredentialAccess(
                integration_id=integration_id,
                api_key_id=api_key.id,
                refreshed=refreshed,
                client_address=(request.client.host if request.client else None),
            )
        )
        session.commit()

    await _db(engine, log)
    return {
        "success": True,
        "data": Credentials(
            access_token=tokens.access_token,
            token_type=integration.token_type,
            expires_at=integration.expires_at,
            scope=list(integration.scope or []),
        ),
    }


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
    user_id: Annotated[str, Path(pattern=_ID)],
    settings: SettingsDep,
    engine: EngineDep,
    client: TemporalDep,
) -> dict[str, Any]:
    integrations = await _db(
        engine,
        lambda s: list(
            s.exec(select(Integration).where(col(Integration.user_id) == user_id)).all()
        ),
    )
    live = [i for i in integrations if i.status not in TERMINAL]
    gate = asyncio.Semaphore(USER_DELETE_CONCURRENCY)

    async def disconnect(integration: Integration) -> None:
        async with gate:
            await _update(
                client,
                settings,
                integration,
                IntegrationWorkflow.disconnect,
                DisconnectRequest(reason="user.deleted", scrub_personal_data=True),
            )

    await asyncio.gather(*(disconnect(integration) for integration in live))

    def scrub(session: Session) -> None:
        for integration in integrations:
            if integration.status in TERMINAL:
                row = session.get(Integration, integration.id)
                if row is not None:
                    row.name, row.meta, row.provider_data = None, {}, {}
                    row.updated_at = utcnow()
                    session.add(row)
        session.commit()

    await _db(engine, scrub)
    return {
        "success": True,
        "data": UserIntegrationsDeleted(
            user_id=user_id,
            disconnected=len(live),
            integration_ids=[integration.id for integration in integrations],
        ),
    }


router = APIRouter()
router.include_router(public)
router.include_router(protected)
