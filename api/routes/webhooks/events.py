"""Publishing events: recorded with their deliveries in one transaction, delivered by the dispatcher."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from api.deps import EngineDep, SettingsDep, require_api_key
from api.envelope import Envelope, error_responses, ok
from api.schemas.webhooks import (
    EventAccepted,
    EventBatchAccepted,
    EventBatchCreate,
    EventBatchResult,
    EventCreate,
    EventRefused,
)
from relay.errors import ErrorCode, RelayError
from relay.webhooks.group_publish import GroupPublisher
from relay.webhooks.publish import EventRequest, publish_many, validate_event

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[Depends(require_api_key)])


async def limit_payload(request: Request, settings: SettingsDep) -> None:
    """413 before anything is parsed or written when the body is over the limit."""
    limit = settings.webhook_max_payload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RelayError(ErrorCode.PAYLOAD_TOO_LARGE, f"the event is over {limit} bytes")
    if len(await request.body()) > limit:
        raise RelayError(ErrorCode.PAYLOAD_TOO_LARGE, f"the event is over {limit} bytes")


@router.post(
    "",
    summary="Publish an event to every subscribed endpoint",
    description="Accepted once it is stored with one delivery per subscribed, active endpoint "
    "(a single transaction); the dispatcher delivers them, signed, retrying for more than a day.",
    status_code=202,
    response_model=Envelope[EventAccepted],
    responses=error_responses(401, 413, 422),
    dependencies=[Depends(limit_payload)],
)
async def publish(body: EventCreate, request: Request, engine: EngineDep) -> dict[str, Any]:
    validate_event(body.type, body.data, body.idempotency_key)
    publisher = getattr(request.app.state, "webhook_publisher", None)
    if publisher is None:
        # One per app, created on first use inside the serving event loop.
        publisher = request.app.state.webhook_publisher = GroupPublisher(engine)
    result = await publisher.publish(EventRequest(body.type, body.data, body.idempotency_key))
    return ok(
        EventAccepted(
            event_id=result.event_id, endpoints=result.endpoints, duplicate=result.duplicate
        )
    )


def _refusal(index: int, error: RelayError) -> EventBatchResult:
    details = error.details if isinstance(error.details, list) else None
    return EventBatchResult(
        index=index,
        error=EventRefused(code=error.code.value, message=error.message, details=details),
    )


def _checked(item: dict[str, Any], limit: int) -> EventRequest:
    """One batch item as POST /v1/events would take it, or the RelayError it would answer."""
    try:
        event = EventCreate.model_validate(item)
    except ValidationError as exc:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "the event is invalid",
            [
                {
                    "field": ".".join(str(part) for part in error["loc"]) or "event",
                    "in": "body",
                    "message": error["msg"],
                }
                for error in exc.errors()
            ],
        ) from None
    validate_event(event.type, event.data, event.idempotency_key)
    if len(json.dumps(event.data, separators=(",", ":")).encode()) > limit:
        raise RelayError(ErrorCode.PAYLOAD_TOO_LARGE, f"the event's data is over {limit} bytes")
    return EventRequest(event.type, event.data, event.idempotency_key)


@router.post(
    "/batch",
    summary="Publish up to 1,000 events in one request",
    description="Each event is checked and stored on its own terms, as POST /v1/events would: "
    "`results` has one entry per event, in order — its `eventId`, `endpoints` and "
    "`duplicate` (its own `idempotencyKey`, 24 hours), or the `error` that refused it, "
    "with nothing of that event stored. One bad event never refuses the others. The "
    "accepted events and their deliveries are stored before the 202.",
    status_code=202,
    response_model=Envelope[EventBatchAccepted],
    responses=error_responses(401, 413, 422),
)
async def publish_batch(
    body: EventBatchCreate, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    results: list[EventBatchResult | None] = []
    requests: list[tuple[int, EventRequest]] = []
    for index, item in enumerate(body.events):
        try:
            requests.append((index, _checked(item, settings.webhook_max_payload_bytes)))
            results.append(None)
        except RelayError as error:
            results.append(_refusal(index, error))
    if requests:
        # One transaction for the batch's events (a key already known, or repeated within
        # the batch, lands on its first event, as it would one request at a time).
        published = await asyncio.to_thread(publish_many, engine, [r for _, r in requests])
        for (index, _), result in zip(requests, published, strict=True):
            results[index] = EventBatchResult(
                index=index,
                event_id=result.event_id,
                endpoints=result.endpoints,
                duplicate=result.duplicate,
            )
    answered = [result for result in results if result is not None]
    refused = sum(1 for result in answered if result.error is not None)
    return ok(
        EventBatchAccepted(accepted=len(answered) - refused, refused=refused, results=answered)
    )
