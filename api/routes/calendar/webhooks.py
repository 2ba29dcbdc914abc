"""Zoom's webhook, POST /webhooks/zoom (public; verified by x-zm-signature).

Every delivery is verified first (relay.calendar.zoom_webhooks: HMAC-SHA256 over
`v0:{timestamp}:{raw body}` with ZOOM_WEBHOOK_SECRET, constant-time, 5-minute tolerance);
a refused one writes nothing. Zoom's `endpoint.url_validation` challenge is answered with
Zoom's bare `{plainToken, encryptedToken}` (Zoom reads those two fields at the top level,
so this answer is not in Relay's envelope) and is not recorded. Every other event is
recorded once in the inbound inbox under its derived id (Zoom events carry none) and, for
meeting.started, meeting.ended and recording.completed of a meeting Relay booked, forwarded
to that meeting's workflow (`meeting-{id}`, signal-with-start); anything else is IGNORED.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import EngineDep, SettingsDep
from api.envelope import Envelope, error_responses
from api.inbound import accept_event
from api.schemas.inbound import InboundAccepted
from relay.calendar import repository, zoom_webhooks
from relay.calendar.contracts import PROVIDER

webhooks_router = APIRouter(prefix="/webhooks", tags=["provider webhooks"])


@webhooks_router.post(
    "/zoom",
    summary="Zoom's webhook (public; verified by x-zm-signature)",
    description="Verified with ZOOM_WEBHOOK_SECRET (HMAC-SHA256 over `v0:{timestamp}:{body}`, "
    "300 s tolerance). `endpoint.url_validation` is answered `{plainToken, encryptedToken}` "
    "(Zoom's shape, no envelope). meeting.started, meeting.ended and recording.completed of a "
    "meeting Relay booked are recorded once (by event type, meeting uuid and event_ts) and "
    "forwarded to its workflow; other events and unknown meetings are recorded IGNORED. 400 "
    "INVALID_SIGNATURE (a header missing, a forged or stale signature) writes nothing; a "
    "duplicate is 200 with `duplicate: true`; 503 when the event could not be recorded.",
    response_model=Envelope[InboundAccepted],
    responses=error_responses(400, 422, 503),
)
async def zoom_webhook(
    request: Request, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any] | JSONResponse:
    payload = await request.body()
    secret = (
        settings.zoom_webhook_secret.get_secret_value() if settings.zoom_webhook_secret else None
    )
    event = zoom_webhooks.verify(
        secret,
        payload,
        request.headers.get(zoom_webhooks.TIMESTAMP_HEADER),
        request.headers.get(zoom_webhooks.SIGNATURE_HEADER),
        now=time.time(),
    )
    if event["event"] == zoom_webhooks.URL_VALIDATION:
        assert secret is not None  # verify refused an unset secret
        return JSONResponse(zoom_webhooks.validation_answer(secret, event))

    zoom_meeting_id = zoom_webhooks.zoom_meeting_id(event)
    relay_id = None
    if zoom_meeting_id is not None:
        relay_id = await asyncio.to_thread(repository.meeting_id_for_zoom, engine, zoom_meeting_id)
    target = zoom_webhooks.forward_target(relay_id) if relay_id is not None else None
    return await accept_event(
        request,
        engine,
        settings,
        provider=PROVIDER,
        event_id=zoom_webhooks.event_id(event, payload),
        kind=zoom_webhooks.event_type(event),
        payload=payload,
        target=target,
        object_id=zoom_meeting_id,
    )
