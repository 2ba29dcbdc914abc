"""Content publishing: /v1/publications… Each publication is a `publication-{id}` workflow;
the route checks the request against the user's connections and stored files, writes the
publication and its targets in one transaction, starts the workflow and answers from the
rows it keeps (docs/publishing.md).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import EngineDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import require_same_request
from api.pagination import newest_first_page, page
from api.schemas.publishing import Publication, PublicationCreate, publication_of
from relay.db import as_utc, utcnow
from relay.errors import ErrorCode, RelayError
from relay.files import repository as files
from relay.files.contracts import FileStatus
from relay.oauth import repository as oauth_repository
from relay.oauth.contracts import IntegrationStatus
from relay.publishing import repository
from relay.publishing.adapters import ACCOUNT_INCOMPLETE, MediaItem, PublishRequest
from relay.publishing.contracts import (
    PublicationInput,
    PublicationStatus,
    TargetRef,
    TargetStatus,
)
from relay.publishing.providers import PUBLISHING_PROVIDERS, skip_reason
from relay.publishing.repository import NewPublication
from workflows.clients import WorkflowClosed
from workflows.clients.publishing import (
    cancel_publication,
    start_publication,
    unpublish_publication,
)

router = APIRouter(
    prefix="/v1/publications", tags=["publishing"], dependencies=[Depends(require_api_key)]
)

# Publication ids are random: a retried request is found by (contentId, idempotencyKey),
# unique in `publications`, so two racing requests under one key insert one row.


def _details(integration: Any) -> dict[str, Any]:
    return {
        "integrationId": str(integration.id),
        "provider": integration.provider,
        "status": str(integration.status),
    }


def _targets(engine: Any, body: PublicationCreate) -> list[Any]:
    """The target integrations; every refusal before anything is written."""
    if body.integration_ids is None:
        found = repository.publishable_integrations(engine, body.user_id, PUBLISHING_PROVIDERS)
        if not found:
            raise RelayError(
                ErrorCode.CONFLICT,
                "the user has no CONNECTED integration that can publish",
                {"userId": body.user_id, "providers": list(PUBLISHING_PROVIDERS)},
            )
        return list(found)
    targets: list[Any] = []
    for integration_id in dict.fromkeys(body.integration_ids):
        integration = oauth_repository.get_integration(engine, integration_id)
        if integration is None or integration.user_id != body.user_id:
            # Another user's connection is as unknown as a missing one.
            raise RelayError(
                ErrorCode.INTEGRATION_NOT_FOUND,
                f"no integration {integration_id} for this user",
                {"integrationId": str(integration_id)},
            )
        if integration.provider not in PUBLISHING_PROVIDERS:
            raise RelayError(
                ErrorCode.VALIDATION_ERROR,
                f"{integration.provider} cannot publish",
                [
                    {
                        "field": "integrationIds",
                        "in": "body",
                        "message": f"{integration.provider} is not one of "
                        f"{', '.join(PUBLISHING_PROVIDERS)}",
                    }
                ],
            )
        if integration.status != IntegrationStatus.CONNECTED or not integration.is_active:
            status = integration.status if integration.is_active else "inactive"
            raise RelayError(
                ErrorCode.CONFLICT,
                f"the integration is {status}, not CONNECTED",
                _details(integration),
            )
        targets.append(integration)
    return targets


def _media(engine: Any, body: PublicationCreate) -> list[MediaItem]:
    """The stored files to post, as the adapters' checks see them (type and size; the
    activity fetches the bytes or a URL)."""
    media: list[MediaItem] = []
    for file_id in body.media_file_ids:
        view = files.find_view(engine, str(file_id))
        if view is None or view.status == FileStatus.DELETED or view.user_id != body.user_id:
            raise RelayError(
                ErrorCode.NOT_FOUND, f"no file {file_id} for this user", {"fileId": str(file_id)}
            )
        if view.status != FileStatus.READY:
            raise RelayError(
                ErrorCode.CONFLICT,
                f"the file is {view.status}, not READY",
                {"fileId": str(file_id), "status": str(view.status)},
            )
        media.append(
            MediaItem(
                content_type=view.detected_type or view.content_type,
                size=view.size or view.declared_size,
                filename=view.filename,
            )
        )
    return media


def _skipped(
    body: PublicationCreate, integrations: list[Any], media: list[MediaItem]
) -> dict[str, tuple[str, str]]:
    """The targets whose platform cannot take the post, decided now (no I/O): they are
    answered SKIPPED with the reason and never run."""
    skipped: dict[str, tuple[str, str]] = {}
    for integration in integrations:
        request = PublishRequest(
            text=body.text,
            access_token="",
            link=body.link,
            media=media,
            account=repository.account_of(integration),
        )
        skip = skip_reason(integration.provider, request)
        # What the account lacks may still arrive (the provider's account lookup after
        # connect, metadata set later): that is the activity's to decide when it runs.
        if skip is not None and skip.code != ACCOUNT_INCOMPLETE:
            skipped[str(integration.id)] = (skip.code, skip.message)
    return skipped


async def _answer(engine: Any, publication_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, publication_id)
    targets = await asyncio.to_thread(repository.targets, engine, str(row.id))
    return ok(publication_of(row, targets))


@router.post(
    "",
    status_code=201,
    summary="Publish content to the user's connected platforms (now or at scheduledAt)",
    description="One `publication-{id}` workflow posts to every target at once: X, "
    "LinkedIn, Facebook Pages, Instagram, YouTube, TikTok. A target the platform cannot "
    "take (text over its limit, media it does not accept) is SKIPPED with the reason; one "
    "that fails does not stop the others (PARTIAL). The same contentId with the same "
    "idempotencyKey lands on the same publication (409 if the body differs).",
    response_model=Envelope[Publication],
    responses=error_responses(401, 404, 409, 422, 503),
)
async def create(
    body: PublicationCreate, engine: EngineDep, settings: SettingsDep, client: TemporalDep
) -> dict[str, Any]:
    integrations = await asyncio.to_thread(_targets, engine, body)
    media = await asyncio.to_thread(_media, engine, body)
    scheduled_at = as_utc(body.scheduled_at)
    due = scheduled_at is None or scheduled_at <= utcnow()
    new = NewPublication(
        content_id=body.content_id,
        user_id=body.user_id,
        text=body.text,
        link=body.link,
        media_file_ids=[str(file_id) for file_id in body.media_file_ids],
        scheduled_at=body.scheduled_at,
        idempotency_key=body.idempotency_key,
        targets=[(str(i.id), i.provider) for i in integrations],
        skipped=_skipped(body, integrations, media),
        due=due,
    )
    publication_id = str(uuid.uuid4())
    row, created = await asyncio.to_thread(
        repository.insert_publication, engine, publication_id, new
    )
    if not created:
        require_same_request({"body": (new.request_hash(), row.request_hash)})
    publication_id = str(row.id)
    if created or row.status in (PublicationStatus.SCHEDULED, PublicationStatus.PUBLISHING):
        # A retry of a request that died between the insert and the start starts it now
        # (a start of a run that exists already is a no-op).
        stored = await asyncio.to_thread(repository.targets, engine, publication_id)
        scheduled = as_utc(row.scheduled_at)
        await start_publication(
            client,
            settings,
            body.user_id,
            PublicationInput(
                publication_id=publication_id,
                targets=[
                    TargetRef(
                        t.integration_id,
                        t.provider,
                        t.skip_reason if t.status == TargetStatus.SKIPPED else None,
                    )
                    for t in stored
                ],
                scheduled_at=scheduled.isoformat() if scheduled else None,
                poll_interval_seconds=settings.publish_poll_interval.total_seconds(),
                status_written=row.status == PublicationStatus.PUBLISHING,
            ),
        )
    return await _answer(engine, publication_id)


@router.get(
    "",
    summary="List publications",
    description="Newest first; filter by `userId`, `contentId` and `status`.",
    response_model=Page[Publication],
    responses=error_responses(401, 422),
)
async def list_publications(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    content_id: Annotated[str | None, Query(alias="contentId", max_length=255)] = None,
    status: Annotated[PublicationStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    query = repository.publications_query(
        user_id=user_id, content_id=content_id, status=status.value if status else None
    )
    rows, next_cursor = await newest_first_page(engine, repository.P, query, cursor, limit)
    targets = await asyncio.to_thread(repository.targets_of, engine, [row.id for row in rows])
    return page([publication_of(row, targets[row.id]) for row in rows], next_cursor)


@router.get(
    "/{publication_id}",
    summary="One publication and, per target, its status, post id and URL, attempts, error",
    response_model=Envelope[Publication],
    responses=error_responses(401, 404),
)
async def get_publication(publication_id: str, engine: EngineDep) -> dict[str, Any]:
    return await _answer(engine, publication_id)


@router.post(
    "/{publication_id}/cancel",
    summary="Cancel a SCHEDULED publication before it runs (nothing is posted)",
    description="409 once it has started publishing: DELETE unpublishes instead.",
    response_model=Envelope[Publication],
    responses=error_responses(401, 404, 409, 503),
)
async def cancel(publication_id: str, engine: EngineDep, client: TemporalDep) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, publication_id)
    publication_id = str(row.id)
    try:
        await cancel_publication(client, publication_id)
    except WorkflowClosed:
        row = await asyncio.to_thread(repository.load, engine, publication_id)
        raise RelayError(
            ErrorCode.CONFLICT,
            f"the publication is {row.status}; only a SCHEDULED one can be canceled",
            {"publicationId": publication_id, "status": str(row.status)},
        ) from None
    return await _answer(engine, publication_id)


@router.delete(
    "/{publication_id}",
    summary="Unpublish: delete the post at every platform it was published to",
    description="A compensation per target; a platform that cannot delete (Instagram, "
    "TikTok) or refuses leaves that target DELETE_FAILED with the reason in `deleteError`. "
    "A SCHEDULED publication is canceled instead.",
    response_model=Envelope[Publication],
    responses=error_responses(401, 404, 409, 502, 503),
)
async def unpublish(
    publication_id: str, engine: EngineDep, settings: SettingsDep, client: TemporalDep
) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, publication_id)
    publication_id = str(row.id)
    await unpublish_publication(client, settings, row.user_id, publication_id)
    return await _answer(engine, publication_id)


routers = (router,)
