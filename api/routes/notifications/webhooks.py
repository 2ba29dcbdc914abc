"""Providers' callbacks about notifications: SendGrid's Event Webhook, Twilio's status
callbacks and incoming messages (STOP / START).

Each is verified with the provider's own scheme, recorded once per event in the inbound
inbox (a duplicate does nothing), and applied at once: the status moves only forward,
the event is kept, suppressions are added. Applying is the fast path; the inbox row names
the notification dispatcher as its target, so an event recorded but not applied (the
process died, the database failed in between) is signalled to the dispatcher by the
inbound forwarder and applied there. The provider gets 503 only when the event cannot be
recorded, so it retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import EngineDep, SettingsDep, forwarded_marks, group_recorder
from api.envelope import error_responses, ok
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.inbound import repository as inbox
from relay.inbound.contracts import ForwardTarget
from relay.notifications import effects, repository, sendgrid_events, twilio_events
from relay.notifications.contracts import (
    PROVIDER_EVENT_SIGNAL,
    ProviderEvent,
    SuppressionChannel,
    dispatcher_workflow_id,
)
from relay.settings import Settings
from workflows.clients.notifications import dispatcher_input

webhooks_router = APIRouter(prefix="/webhooks", tags=["provider webhooks"])

log = logging.getLogger("relay.notifications")

# SendGrid posts up to a few thousand events a request; a body past this is not SendGrid's.
MAX_EVENTS = 10_000


def _target(settings: Settings) -> ForwardTarget:
    return ForwardTarget(
        workflow_type="NotificationDispatchWorkflow",
        workflow_id=dispatcher_workflow_id(settings.temporal_task_queue),
        signal=PROVIDER_EVENT_SIGNAL,
        start_arg=asdict(dispatcher_input(settings)),
    )


async def record_and_apply(
    request: Request,
    settings: Settings,
    provider: str,
    items: list[tuple[ProviderEvent, bytes]],
) -> dict[str, int]:
    """Record each event once, then apply the new ones; returns counts for the answer."""
    engine = request.app.state.engine
    target = _target(settings)
    recorder = group_recorder(request)
    recorded = await asyncio.gather(
        *(
            recorder.record(
                inbox.Incoming(
                    provider=provider,
                    event_id=event.event_id,
                    type=event.event[:200],
                    payload=payload,
                    target=target,
                    object_id=event.notification_id or event.provider_message_id,
                )
            )
            for event, payload in items
        )
    )
    fresh = [
        (event, row) for (event, _), row in zip(items, recorded, strict=True) if not row.duplicate
    ]
    if fresh:
        try:
            changes, _ = await asyncio.to_thread(
                repository.apply, engine, [event for event, _ in fresh], now=utcnow()
            )
        except Exception as exc:
            # Recorded: the forwarder hands it to the dispatcher when the lease runs out. The
            # error's type only: a database error's text carries the rows' values.
            log.error(
                "%s events recorded but not applied (%s); the dispatcher will",
                provider,
                type(exc).__name__,
            )
        else:
            marks = forwarded_marks(request)
            for _, row in fresh:
                if row.lease_until is not None:
                    marks.add(row.id, row.lease_until)
            try:
                client = await request.app.state.temporal.client()
            except RelayError:
                client = None
            await effects.follow_up(engine, client, changes)
    return {"received": len(items), "duplicates": len(items) - len(fresh)}


@webhooks_router.post(
    "/sendgrid/events",
    summary="SendGrid's Event Webhook (signed with ECDSA; SENDGRID_WEBHOOK_PUBLIC_KEY)",
    responses=error_responses(400, 503),
)
async def sendgrid_event_webhook(request: Request, settings: SettingsDep) -> dict[str, Any]:
    body = await request.body()
    sendgrid_events.verify(settings, body, request.headers)
    events = sendgrid_events.parse(body)
    if len(events) > MAX_EVENTS:
        raise RelayError(ErrorCode.PAYLOAD_TOO_LARGE, f"at most {MAX_EVENTS} events a request")
    raw = {item.get("sg_event_id"): item for item in json.loads(body) if isinstance(item, dict)}
    items = [(event, json.dumps(raw.get(event.event_id, {})).encode()) for event in events]
    return ok(await record_and_apply(request, settings, "sendgrid", items))


async def _twilio_params(request: Request, settings: Settings) -> dict[str, str]:
    form = await request.form()
    params = {key: str(value) for key, value in form.multi_items()}
    url = twilio_events.public_request_url(settings, request.url.path, request.url.query)
    twilio_events.verify(settings, url, params, request.headers.get("X-Twilio-Signature"))
    return params


@webhooks_router.post(
    "/twilio/status",
    summary="Twilio's status callbacks (X-Twilio-Signature, against PUBLIC_BASE_URL)",
    responses=error_responses(400, 503),
)
async def twilio_status_callback(request: Request, settings: SettingsDep) -> dict[str, Any]:
    params = await _twilio_params(request, settings)
    notification_id = request.query_params.get("notificationId")
    event = twilio_events.parse_status(params, notification_id)
    payload = json.dumps({"params": params, "notificationId": notification_id}).encode()
    return ok(await record_and_apply(request, settings, "twilio", [(event, payload)]))


@webhooks_router.post(
    "/twilio/incoming",
    summary="Twilio's incoming messages: STOP and its synonyms suppress the number, START lifts it",
    responses=error_responses(400, 503),
)
async def twilio_incoming(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    params = await _twilio_params(request, settings)
    reply = twilio_events.parse_incoming(params)
    if reply is not None:
        await group_recorder(request).record(
            inbox.Incoming(
                provider="twilio",
                event_id=reply.event_id,
                type="incoming." + ("stop" if reply.opt_out else "start"),
                payload=json.dumps(params).encode(),
                target=None,
            )
        )
        if reply.opt_out:
            await asyncio.to_thread(
                repository.suppress,
                engine,
                SuppressionChannel.PHONE,
                reply.number,
                "stop",
                "twilio",
            )
        else:
            await asyncio.to_thread(
                repository.unsuppress, engine, SuppressionChannel.PHONE, reply.number
            )
    # Empty TwiML: Twilio's own opt-out reply (Advanced Opt-Out) answers the sender.
    return Response("<Response/>", media_type="text/xml")
