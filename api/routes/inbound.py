"""Inbound provider events: what arrived, and re-feeding one to its workflow.

The provider routes themselves (`POST /webhooks/stripe`, …) belong to their
capabilities; they record into the same inbox (relay/inbound).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.deps import EngineDep, SettingsDep, forwarded_marks, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.pagination import newest_first_page, page
from api.schemas.inbound import InboundEvent, inbound_fields
from relay.errors import RelayError
from relay.inbound import repository
from relay.inbound.contracts import InboundStatus
from relay.inbound.forward import forward

router = APIRouter(
    prefix="/v1/inbound-events", tags=["inbound events"], dependencies=[Depends(require_api_key)]
)


@router.get(
    "",
    summary="List the provider events Relay received",
    description="Newest first. Filter by `provider` (stripe), `type` (the provider's event "
    "type) and `status` (PENDING: not yet accepted by Temporal; FORWARDED; IGNORED: no "
    "workflow takes this type). Payloads are stored sealed and not listed.",
    response_model=Page[InboundEvent],
    responses=error_responses(401, 422),
)
async def list_inbound_events(
    request: Request,
    engine: EngineDep,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[InboundStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    # What this process answered FORWARDED is listed FORWARDED (marks are group-committed).
    await forwarded_marks(request).flush()
    query = repository.events_query(
        provider=provider, type=type, status=status.value if status else None
    )
    rows, next_cursor = await newest_first_page(engine, repository.T, query, cursor, limit)
    return page([InboundEvent.model_validate(inbound_fields(row)) for row in rows], next_cursor)


@router.post(
    "/{event_id}/replay",
    summary="Forward a received event to its workflow once more",
    description="The event goes back to PENDING and is signalled to its workflow now; the "
    "workflow acts on it even if it saw the id before. When Temporal is unreachable the "
    "event stays PENDING and the forwarder sends it when Temporal is back (202-like: the "
    "answer shows the status). 409 when no workflow takes the event's type.",
    response_model=Envelope[InboundEvent],
    responses=error_responses(401, 404, 409),
)
async def replay_inbound_event(
    event_id: uuid.UUID, request: Request, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    await forwarded_marks(request).flush()
    claimed = await asyncio.to_thread(repository.replay, engine, event_id)
    try:
        client = await request.app.state.temporal.client()
    except RelayError:
        client = None
    await forward(engine, client, settings.temporal_task_queue, claimed)
    row = await asyncio.to_thread(repository.load, engine, event_id)
    return ok(InboundEvent.model_validate(inbound_fields(row)))


routers = (router,)
