"""One delivery with its full attempt history, and a manual retry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends
from temporalio.client import WorkflowUpdateFailedError

from api.deps import EngineDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import Envelope, error_responses, ok
from api.schemas.webhooks import DeliveryDetail, ManualAttempt, attempt_fields, delivery_fields
from relay.errors import ErrorCode, RelayError
from relay.webhooks import repository
from relay.webhooks.contracts import ManualRetryInput
from workflows.clients import application_failure
from workflows.clients.webhooks import dispatcher_handle
from workflows.webhooks import WebhookDispatchWorkflow

router = APIRouter(
    prefix="/v1/deliveries", tags=["deliveries"], dependencies=[Depends(require_api_key)]
)

MANUAL_RETRY_RPC_TIMEOUT = timedelta(seconds=45)


@router.get(
    "/{delivery_id}",
    summary="A delivery and every attempt made",
    response_model=Envelope[DeliveryDetail],
    responses=error_responses(401, 404),
)
async def get_delivery(delivery_id: uuid.UUID, engine: EngineDep) -> dict[str, Any]:
    row, attempts = await asyncio.to_thread(repository.find_delivery, engine, delivery_id)
    data = delivery_fields(row) | {"attempts": [attempt_fields(a) for a in attempts]}
    return ok(DeliveryDetail.model_validate(data))


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
    row, _ = await asyncio.to_thread(repository.find_delivery, engine, delivery_id)
    if await asyncio.to_thread(repository.endpoint_deleted, engine, row.endpoint_id):
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
        cause = application_failure(exc)
        if cause is not None and cause.type == ErrorCode.DELIVERY_NOT_FOUND:
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
    return ok(ManualAttempt.model_validate(data))
