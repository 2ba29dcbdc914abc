"""Webhook endpoints: create, list, read, change, delete, rotate the secret, deliveries, recover."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field, field_validator
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Engine

from api.deps import EngineDep, KeyringDep, SettingsDep, require_api_key
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
from relay.crypto import Keyring
from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import DeliveryStatus, WebhookEndpoint
from relay.settings import Settings
from relay.webhooks import outbox
from relay.webhooks.endpoints import header_problems, masked, open_headers, seal_headers
from relay.webhooks.patterns import is_valid_pattern
from relay.webhooks.publish import deliveries_table as D
from relay.webhooks.publish import endpoints_table as E
from relay.webhooks.signing import generate_secret, rotate, seal_secret
from relay.webhooks.ssrf import SsrfGuard, UnsafeUrlError

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_api_key)]
)

MAX_PATTERNS = 50
MAX_METADATA_BYTES = 16_384
MAX_RATE_LIMIT = 10_000


# --- wire schemas ---------------------------------------------------------------------


def _check_patterns(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    if not events or len(events) > MAX_PATTERNS:
        raise ValueError(f"1 to {MAX_PATTERNS} event types or patterns")
    bad = [pattern for pattern in events if not is_valid_pattern(pattern)]
    if bad:
        raise ValueError(f"not an event type or pattern (order.created, order.*, *): {bad[0]!r}")
    return list(dict.fromkeys(events))


def _check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is not None and len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return metadata


class WebhookCreate(ApiModel):
    url: str = Field(max_length=2048, examples=["https://api.example.com/webhooks/relay"])
    events: list[str] = Field(examples=[["order.created", "order.*"]])
    description: str | None = Field(default=None, max_length=500)
    headers: dict[str, str] = Field(default_factory=dict, examples=[{"X-Team": "billing"}])
    rate_limit: int | None = Field(
        default=None, ge=1, le=MAX_RATE_LIMIT, description="Attempts per second, across workers."
    )
    integration_id: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None

    _patterns = field_validator("events")(_check_patterns)
    _metadata = field_validator("metadata")(_check_metadata)


class WebhookUpdate(ApiModel):
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    headers: dict[str, str] | None = None
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    metadata: dict[str, Any] | None = None
    is_active: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint and clears its failure clock"
    )

    _patterns = field_validator("events")(_check_patterns)
    _metadata = field_validator("metadata")(_check_metadata)


class Webhook(ApiModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    headers: dict[str, str] = Field(description="Credential-like header values are masked.")
    rate_limit: int | None
    integration_id: uuid.UUID | None
    metadata: dict[str, Any] | None
    is_active: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    last_triggered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook):
    secret: str = Field(description="Shown only now; store it to verify signatures.")


class RotatedSecret(ApiModel):
    id: uuid.UUID
    secret: str
    previous_secret_expires_at: datetime = Field(
        description="Until then deliveries carry signatures with the old and the new secret."
    )


class Deleted(ApiModel):
    id: uuid.UUID
    deleted: bool = True


class Delivery(ApiModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    message_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RecoverRequest(ApiModel):
    since: datetime = Field(description="Re-deliver every FAILED delivery created since then.")


class Recovered(ApiModel):
    endpoint_id: uuid.UUID
    requeued: int


# --- helpers --------------------------------------------------------------------------


def _guard(settings: Settings) -> SsrfGuard:
    return SsrfGuard(
        settings.webhook_allowed_networks, require_https=settings.requires_https_webhooks
    )


async def _check_url(settings: Settings, url: str) -> None:
    try:
        await _guard(settings).check_url(url)
    except UnsafeUrlError as exc:
        raise RelayError(ErrorCode.INVALID_WEBHOOK_URL, str(exc), {"url": url}) from None


def _check_headers(headers: dict[str, str]) -> None:
    problems = header_problems(headers)
    if problems:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "the request is invalid", problems)


def _webhook(row: Any, keyring: Keyring) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "headers": masked(open_headers(keyring, row.id, row.headers)),
        "rate_limit": row.rate_limit,
        "integration_id": row.integration_id,
        "metadata": row.meta if isinstance(row, WebhookEndpoint) else row.metadata,
        "is_active": row.is_active,
        "disabled_at": as_utc(row.disabled_at),
        "disabled_reason": row.disabled_reason,
        "failing_since": as_utc(row.failing_since),
        "last_triggered_at": as_utc(row.last_triggered_at),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "message_id": f"msg_{row.id.hex}",
        "status": row.status,
        "attempt_count": row.attempts,
        "next_attempt_at": as_utc(row.next_attempt_at)
        if row.status == DeliveryStatus.RETRYING
        else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "delivered_at": as_utc(row.delivered_at),
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }


def after_cursor(table: Any, cursor: tuple[datetime, uuid.UUID] | None) -> Any:
    """Newest first: rows strictly after the cursor's (created_at, id)."""
    if cursor is None:
        return None
    created, row_id = cursor
    return or_(
        table.c.created_at < created, and_(table.c.created_at == created, table.c.id < row_id)
    )


async def newest_first_page(
    engine: Engine, table: Any, query: Any, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """One page of `query` over `table`, newest first, and the cursor of the next page."""
    if (after := after_cursor(table, decode_cursor(cursor))) is not None:
        query = query.where(after)
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)

    def load() -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    rows = await asyncio.to_thread(load)
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    return page, encode_cursor(as_utc(page[-1].created_at), page[-1].id)  # type: ignore[arg-type]


def _load(engine: Engine, webhook_id: uuid.UUID) -> Any:
    with engine.connect() as connection:
        row = connection.execute(
            select(E).where(E.c.id == webhook_id, E.c.deleted_at.is_(None))
        ).first()
    if row is None:
        raise RelayError(ErrorCode.WEBHOOK_NOT_FOUND, "no webhook endpoint with that id")
    return row


# --- routes ---------------------------------------------------------------------------


@router.post(
    "",
    summary="Create a webhook endpoint",
    description="The URL is resolved and refused when it points at a private, loopback, "
    "link-local, CGNAT, multicast, reserved or unique-local address (SSRF guard). "
    "The signing secret is returned only here and on rotate-secret.",
    status_code=201,
    response_model=Envelope[WebhookWithSecret],
    responses=error_responses(400, 401, 422),
)
async def create_webhook(
    body: WebhookCreate, engine: EngineDep, keyring: KeyringDep, settings: SettingsDep
) -> dict[str, Any]:
    _check_headers(body.headers)
    await _check_url(settings, body.url)
    endpoint_id = uuid.uuid4()
    secret = generate_secret()
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=body.url,
        events=body.events,
        description=body.description,
        headers=seal_headers(keyring, endpoint_id, body.headers),
        rate_limit=body.rate_limit,
        integration_id=body.integration_id,
        meta=body.metadata,
        secret=seal_secret(keyring, endpoint_id, secret),
        created_at=now,
        updated_at=now,
    )

    def save() -> None:
        with engine.begin() as connection:
            connection.execute(E.insert().values(**_columns(endpoint)))

    await asyncio.to_thread(save)
    data = _webhook(endpoint, keyring) | {"secret": secret}
    return {"success": True, "data": WebhookWithSecret.model_validate(data)}


def _columns(endpoint: WebhookEndpoint) -> dict[str, Any]:
    values = endpoint.model_dump()
    values["metadata"] = values.pop("meta")
    return values


@router.get(
    "",
    summary="List webhook endpoints",
    response_model=Page[Webhook],
    responses=error_responses(401, 422),
)
async def list_webhooks(
    engine: EngineDep,
    keyring: KeyringDep,
    is_active: Annotated[bool | None, Query(alias="isActive")] = None,
    integration_id: Annotated[uuid.UUID | None, Query(alias="integrationId")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    query = select(E).where(E.c.deleted_at.is_(None))
    if is_active is not None:
        query = query.where(E.c.is_active.is_(is_active))
    if integration_id is not None:
        query = query.where(E.c.integration_id == integration_id)
    page, next_cursor = await newest_first_page(engine, E, query, cursor, limit)
    return {
        "success": True,
        "data": [Webhook.model_validate(_webhook(row, keyring)) for row in page],
        "nextCursor": next_cursor,
    }


@router.get(
    "/{webhook_id}",
    summary="One webhook endpoint",
    response_model=Envelope[Webhook],
    responses=error_responses(401, 404),
)
async def get_webhook(
    webhook_id: uuid.UUID, engine: EngineDep, keyring: KeyringDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(_load, engine, webhook_id)
    return {"success": True, "data": Webhook.model_validate(_webhook(row, keyring))}


@router.patch(
    "/{webhook_id}",
    summary="Change a webhook endpoint",
    description="`isActive: true` re-enables a disabled endpoint and clears its failure clock; "
    "`isActive: false` disables it and ends its waiting deliveries as FAILED.",
    response_model=Envelope[Webhook],
    responses=error_responses(400, 401, 404, 422),
)
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    await asyncio.to_thread(_load, engine, webhook_id)
    changes: dict[str, Any] = {}
    fields = body.model_fields_set
    if "url" in fields and body.url is not None:
        await _check_url(settings, body.url)
        changes["url"] = body.url
    if "events" in fields and body.events is not None:
        changes["events"] = body.events
    if "description" in fields:
        changes["description"] = body.description
    if "headers" in fields:
        _check_headers(body.headers or {})
        changes["headers"] = seal_headers(keyring, webhook_id, body.headers or {})
    if "rate_limit" in fields:
        changes["rate_limit"] = body.rate_limit
    if "metadata" in fields:
        changes["metadata"] = body.metadata
    now = utcnow()

    def save() -> Any:
        with engine.begin() as connection:
            if body.is_active is True:
                changes.update(
                    is_active=True, failing_since=None, disabled_at=None, disabled_reason=None
                )
            if changes:
                connection.execute(
                    update(E).where(E.c.id == webhook_id).values(**changes, updated_at=now)
                )
            if body.is_active is False:
                outbox.disable_endpoint(
                    connection, webhook_id, "disabled through the API", now=now, publish=False
                )
            return connection.execute(select(E).where(E.c.id == webhook_id)).one()

    row = await asyncio.to_thread(save)
    return {"success": True, "data": Webhook.model_validate(_webhook(row, keyring))}


@router.delete(
    "/{webhook_id}",
    summary="Delete a webhook endpoint",
    description="Its waiting deliveries end as FAILED; its delivery history stays readable "
    "through GET /v1/deliveries/{id}.",
    response_model=Envelope[Deleted],
    responses=error_responses(401, 404),
)
async def delete_webhook(webhook_id: uuid.UUID, engine: EngineDep) -> dict[str, Any]:
    await asyncio.to_thread(_load, engine, webhook_id)
    now = utcnow()

    def delete() -> None:
        with engine.begin() as connection:
            outbox.disable_endpoint(connection, webhook_id, "deleted", now=now, publish=False)
            connection.execute(
                update(E)
                .where(E.c.id == webhook_id)
                .values(
                    deleted_at=now,
                    updated_at=now,
                    is_active=False,
                    secret="",
                    old_secrets=[],
                    headers={},
                )
            )

    await asyncio.to_thread(delete)
    return {"success": True, "data": Deleted(id=webhook_id)}


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Rotate the signing secret",
    description="Returns the new secret. The old one keeps signing beside it for 24 hours: "
    "`webhook-signature` then carries both signatures.",
    response_model=Envelope[RotatedSecret],
    responses=error_responses(401, 404),
)
async def rotate_secret(
    webhook_id: uuid.UUID, engine: EngineDep, keyring: KeyringDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(_load, engine, webhook_id)
    now = utcnow()
    rotation = rotate(keyring, webhook_id, row.secret, list(row.old_secrets or []), now)

    def save() -> None:
        with engine.begin() as connection:
            connection.execute(
                update(E)
                .where(E.c.id == webhook_id)
                .values(secret=rotation.sealed, old_secrets=rotation.old_secrets, updated_at=now)
            )

    await asyncio.to_thread(save)
    return {
        "success": True,
        "data": RotatedSecret(
            id=webhook_id,
            secret=rotation.secret,
            previous_secret_expires_at=datetime.fromisoformat(rotation.old_secrets[0]["expiresAt"]),
        ),
    }


@router.get(
    "/{webhook_id}/deliveries",
    summary="An endpoint's deliveries, newest first",
    response_model=Page[Delivery],
    responses=error_responses(401, 404, 422),
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    engine: EngineDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    await asyncio.to_thread(_load, engine, webhook_id)
    query = select(D).where(D.c.endpoint_id == webhook_id)
    if status is not None:
        query = query.where(D.c.status == status.value)
    if since is not None:
        query = query.where(D.c.created_at >= since)
    if until is not None:
        query = query.where(D.c.created_at < until)
    page, next_cursor = await newest_first_page(engine, D, query, cursor, limit)
    return {
        "success": True,
        "data": [Delivery.model_validate(_delivery(row)) for row in page],
        "nextCursor": next_cursor,
    }


@router.post(
    "/{webhook_id}/recover",
    summary="Re-deliver every failed delivery since a time",
    description="Every FAILED delivery of this endpoint created since `since` is queued again "
    "with a fresh retry schedule. Re-enable a disabled endpoint first.",
    status_code=202,
    response_model=Envelope[Recovered],
    responses=error_responses(401, 404, 409, 422),
)
async def recover(webhook_id: uuid.UUID, body: RecoverRequest, engine: EngineDep) -> dict[str, Any]:
    row = await asyncio.to_thread(_load, engine, webhook_id)
    if not row.is_active:
        raise RelayError(
            ErrorCode.CONFLICT, "the endpoint is disabled; re-enable it (PATCH isActive) first"
        )
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=utcnow().tzinfo)
    count = await asyncio.to_thread(outbox.requeue_failed, engine, webhook_id, since, utcnow())
    return {"success": True, "data": Recovered(endpoint_id=webhook_id, requeued=count)}
