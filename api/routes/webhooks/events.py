"""Publishing events: recorded with their deliveries in one transaction, delivered by the dispatcher."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api.deps import EngineDep, SettingsDep, require_api_key
from api.envelope import Envelope, error_responses, ok
from api.schemas.webhooks import EventAccepted, EventCreate
from relay.errors import ErrorCode, RelayError
from relay.webhooks.group_publish import GroupPublisher
from relay.webhooks.publish import EventRequest, validate_event

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
