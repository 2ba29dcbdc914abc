"""Webhook endpoints: create, list, read, change, delete, rotate the secret, deliveries, recover."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from api.deps import EngineDep, KeyringDep, SettingsDep, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.pagination import newest_first_page, page
from api.schemas.webhooks import (
    Deleted,
    Delivery,
    Recovered,
    RecoverRequest,
    RotatedSecret,
    RotateSecretRequest,
    Webhook,
    WebhookCreate,
    WebhookUpdate,
    WebhookWithSecret,
    delivery_fields,
    webhook_fields,
)
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import WebhookEndpoint
from relay.settings import Settings
from relay.webhooks import outbox, repository
from relay.webhooks.contracts import DeliveryStatus
from relay.webhooks.endpoints import header_problems, seal_headers
from relay.webhooks.publish import deliveries_table, endpoints_table
from relay.webhooks.signing import generate_secret, seal_secret
from relay.webhooks.ssrf import SsrfGuard, UnsafeUrlError

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_api_key)]
)


async def _check_url(settings: Settings, url: str) -> None:
    guard = SsrfGuard(
        settings.webhook_allowed_networks, require_https=settings.requires_https_webhooks
    )
    try:
        await guard.check_url(url)
    except UnsafeUrlError as exc:
        raise RelayError(ErrorCode.INVALID_WEBHOOK_URL, str(exc), {"url": url}) from None


def _check_headers(headers: dict[str, str]) -> None:
    problems = header_problems(headers)
    if problems:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "the request is invalid", problems)


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
    await asyncio.to_thread(repository.insert_endpoint, engine, endpoint)
    data = webhook_fields(endpoint, keyring) | {"secret": secret}
    return ok(WebhookWithSecret.model_validate(data))


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
    query = repository.endpoints_query(is_active=is_active, integration_id=integration_id)
    rows, next_cursor = await newest_first_page(engine, endpoints_table, query, cursor, limit)
    return page([Webhook.model_validate(webhook_fields(row, keyring)) for row in rows], next_cursor)


@router.get(
    "/{webhook_id}",
    summary="One webhook endpoint",
    response_model=Envelope[Webhook],
    responses=error_responses(401, 404),
)
async def get_webhook(
    webhook_id: uuid.UUID, engine: EngineDep, keyring: KeyringDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load_endpoint, engine, webhook_id)
    return ok(Webhook.model_validate(webhook_fields(row, keyring)))


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
    await asyncio.to_thread(repository.load_endpoint, engine, webhook_id)
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
    row = await asyncio.to_thread(
        repository.update_endpoint,
        engine,
        webhook_id,
        changes,
        is_active=body.is_active,
        now=utcnow(),
    )
    return ok(Webhook.model_validate(webhook_fields(row, keyring)))


@router.delete(
    "/{webhook_id}",
    summary="Delete a webhook endpoint",
    description="Its waiting deliveries end as FAILED; its delivery history stays readable "
    "through GET /v1/deliveries/{id}.",
    response_model=Envelope[Deleted],
    responses=error_responses(401, 404),
)
async def delete_webhook(webhook_id: uuid.UUID, engine: EngineDep) -> dict[str, Any]:
    await asyncio.to_thread(repository.load_endpoint, engine, webhook_id)
    await asyncio.to_thread(repository.delete_endpoint, engine, webhook_id, now=utcnow())
    return ok(Deleted(id=webhook_id))


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Rotate the signing secret",
    description="Returns the new secret. The old one keeps signing beside it for 24 hours: "
    '`webhook-signature` then carries both signatures. With `{"expirePrevious": true}` '
    "(after a leak) every earlier secret stops signing at once and the next delivery carries "
    "only the new signature. The body is optional. Concurrent rotations are applied one after "
    "another; none loses another's secret.",
    response_model=Envelope[RotatedSecret],
    responses=error_responses(401, 404, 409, 422),
)
async def rotate_secret(
    webhook_id: uuid.UUID,
    engine: EngineDep,
    keyring: KeyringDep,
    body: Annotated[RotateSecretRequest | None, Body()] = None,
) -> dict[str, Any]:
    expire_previous = body.expire_previous if body is not None else False
    applied = await asyncio.to_thread(
        repository.rotate_secret,
        engine,
        keyring,
        webhook_id,
        expire_previous=expire_previous,
        now=utcnow(),
    )
    return ok(
        RotatedSecret(
            id=webhook_id,
            secret=applied.rotation.secret,
            previous_secret_expires_at=applied.rotation.previous_expires_at,
            previous_secrets_expired=expire_previous,
            secret_version=applied.version,
        )
    )


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
    await asyncio.to_thread(repository.load_endpoint, engine, webhook_id)
    query = repository.deliveries_query(webhook_id, status=status, since=since, until=until)
    rows, next_cursor = await newest_first_page(engine, deliveries_table, query, cursor, limit)
    return page([Delivery.model_validate(delivery_fields(row)) for row in rows], next_cursor)


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
    row = await asyncio.to_thread(repository.load_endpoint, engine, webhook_id)
    if not row.is_active:
        raise RelayError(
            ErrorCode.CONFLICT, "the endpoint is disabled; re-enable it (PATCH isActive) first"
        )
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=utcnow().tzinfo)
    count = await asyncio.to_thread(outbox.requeue_failed, engine, webhook_id, since, utcnow())
    return ok(Recovered(endpoint_id=webhook_id, requeued=count))
