"""Publishing events: recorded with their deliveries in one transaction, delivered by the dispatcher."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from api.deps import EngineDep, SettingsDep, require_api_key
from api.envelope import ApiModel, Envelope, error_responses
from relay.errors import ErrorCode, RelayError
from relay.webhooks.group_publish import GroupPublisher
from relay.webhooks.publish import EventRequest, validate_event

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[Depends(require_api_key)])


class EventCreate(ApiModel):
    type: str = Field(
        max_length=200,
        examples=["order.created"],
        description="Dot-separated words: letters, digits, _ and -.",
    )
    data: dict[str, Any] = Field(examples=[{"orderId": "ord_123", "total": 4200}])
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The same key within 24 hours returns the first event; nothing is "
        "delivered again.",
    )


class EventAccepted(ApiModel):
    event_id: uuid.UUID
    endpoints: int = Field(description="How many endpoints the event is delivered to.")
    duplicate: bool = Field(description="True when the idempotency key was seen already.")


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
    return {
        "success": True,
        "data": EventAccepted(
            event_id=result.event_id, endpoints=result.endpoints, duplicate=result.duplicate
        ),
    }
