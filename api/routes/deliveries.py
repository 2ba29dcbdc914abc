"""One delivery with its full attempt history, and a manual retry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from api.deps import EngineDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import ApiModel, Envelope, error_responses
from api.routes.webhooks import Delivery, _delivery
from relay.db import as_utc
from relay.errors import ErrorCode, RelayError
from relay.models.webhooks import AttemptTrigger, DeliveryStatus, WebhookAttempt
from relay.webhooks.contracts import ManualRetryInput
from relay.webhooks.publish import deliveries_table as D
from relay.webhooks.publish import endpoints_table as E
from workflows.clients.webhooks import dispatcher_handle
from workflows.webhooks import WebhookDispatchWorkflow

router = APIRouter(
    prefix="/v1/deliveries", tags=["deliveries"], dependencies=[Depends(require_api_key)]
)

A = WebhookAttempt.__table__  # type: ignore[attr-defined]
MANUAL_RETRY_RPC_TIMEOUT = timedelta(seconds=45)


class Attempt(ApiModel):
    attempt: int
    trigger: AttemptTrigger
    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_body: str | None
    error: str | None
    url: str | None = None


class DeliveryDetail(Delivery):
    attempts: list[Attempt]


class ManualAttempt(Attempt):
    delivery_id: uuid.UUID
    status: DeliveryStatus


def _endpoint_deleted(engine: Any, endpoint_id: uuid.UUID) -> bool:
    with engine.connect() as connection:
        deleted = connection.execute(
            select(E.c.deleted_at).where(E.c.id == endpoint_id)
        ).scalar_one_or_none()
    return deleted is not None


def _find(engine: Any, delivery_id: uuid.UUID) -> tuple[Any, list[Any]]:
    with engine.connect() as connection:
        row = connection.execute(select(D).where(D.c.id == delivery_id)).first()
        if row is None:
            raise RelayError(ErrorCode.DELIVERY_NOT_FOUND, "no delivery with that id")
        attempts = list(
            connection.execute(
                select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt)
            )
        )
    return row, attempts


@router.get(
    "/{delivery_id}",
    summary="A delivery and every attempt made",
    response_model=Envelope[DeliveryDetail],
    responses=error_responses(401, 404),
)
async def get_delivery(delivery_id: uuid.UUID, engine: EngineDep) -> dict[str, Any]:
    row, attempts = await asyncio.to_thread(_find, engine, delivery_id)
    data = _delivery(row) | {
        "attempts": [
            {
                "attempt": a.attempt,
                "trigger": a.trigger,
                "started_at": as_utc(a.started_at),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "response_body": a.response_body,
                "error": a.error,
                "url": a.url,
            }
            for a in attempts
        ]
    }
    return {"success": True, "data": DeliveryDetail.model_validate(data)}


@router.post(
    "/{delivery_id}/retry",
    summary="Attempt a delivery once more, now",
    description="One manual attempt (trigger `manual`), whatever the delivery's status; the "
    "attempt is recorded and returned. A success marks the delivery DELIVERED; a failure "
    "leaves its schedule as it was.",
    response_model=Envelope[ManualAttempt],
    responses=error_responses(401, 404, 409, 503),
)
async def retry_delivery(
    delivery_id: uuid.UUID, engine: EngineDep, client: TemporalDep, settings: SettingsDep
) -> dict[str, Any]:
    row, _ = await asyncio.to_thread(_find, engine, delivery_id)
    if await asyncio.to_thread(_endpoint_deleted, engine, row.endpoint_id):
        raise RelayError(ErrorCode.CONFLICT, "the delivery's endpoint was deleted")
    handle = dispatcher_handle(client, settings)
    try:
        result = await handle.execute_update(
            WebhookDispatchWorkflow.retry_delivery,
            ManualRetryInput(str(delivery_id)),
            # No worker running the dispatcher: 503 TEMPORAL_UNAVAILABLE, not a hung request.
            rpc_timeout=MANUAL_RETRY_RPC_TIMEOUT,
        )
    except WorkflowUpdateFailedError as exc:
        cause: BaseException | None = exc.cause
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = getattr(cause, "cause", None)
        if isinstance(cause, ApplicationError) and cause.type == ErrorCode.DELIVERY_NOT_FOUND:
            raise RelayError(ErrorCode.DELIVERY_NOT_FOUND, "no delivery with that id") from None
        raise RelayError(ErrorCode.INTERNAL_ERROR, "the manual attempt could not run") from None
    data = {
        "delivery_id": result.delivery_id,
        "attempt": result.attempt,
        "trigger": result.trigger,
        "started_at": result.started_at,
        "duration_ms": result.duration_ms,
        "status_code": result.status_code,
        "response_body": result.response_body,
        "error": result.error,
        "status": result.status,
    }
    return {"success": True, "data": ManualAttempt.model_validate(data)}
