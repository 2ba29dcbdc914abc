"""Notifications' send and read routes: /v1/notifications… and /v1/suppressions.

A send is checked (recipient, template, provider configured, suppression) and queued in
one transaction: 202 with the notification's id. The send pump sends it; providers'
callbacks move it to its final status. No Temporal call is made for a single-channel
send; `POST /v1/notifications` (several channels, fallback) starts the notification's
workflow.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import and_, or_, select

from api.deps import EngineDep, KeyringDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Envelope,
    Page,
    decode_cursor,
    encode_cursor,
    error_responses,
    ok,
)
from api.pagination import page
from api.schemas.notifications import (
    BulkQueued,
    BulkRecipientResult,
    EmailBulkSend,
    EmailSend,
    MultiChannelSend,
    NotificationEventOut,
    NotificationOut,
    PushSend,
    Queued,
    SmsBulkSend,
    SmsSend,
    SuppressionOut,
    WhatsAppSend,
)
from relay.db import as_utc
from relay.errors import ErrorCode, RelayError
from relay.notifications import repository
from relay.notifications.contracts import (
    FINAL,
    Channel,
    NotificationStatus,
    SuppressionChannel,
    suppression_channel,
)
from relay.notifications.providers import configured
from relay.notifications.repository import NewMessage
from relay.notifications.templates import TemplateStore
from relay.settings import Settings
from workflows.clients.notifications import start_notification

router = APIRouter(
    prefix="/v1/notifications", tags=["notifications"], dependencies=[Depends(require_api_key)]
)
suppressions_router = APIRouter(
    prefix="/v1/suppressions", tags=["notifications"], dependencies=[Depends(require_api_key)]
)

# SendGrid takes at most 1,000 personalizations a request: one bulk chunk each.
BULK_CHUNK = 1000
SEND_ERRORS = error_responses(400, 401, 409, 422, 503)


# --- checks before anything is queued ---------------------------------------------------------


def _require_provider(settings: Settings, channel: Channel) -> None:
    if not configured(settings, channel):
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            f"no provider is configured for {channel.value}",
            [{"field": "channel", "in": "body", "message": "see docs/notifications.md"}],
        )


def _require_template(request: Request, settings: Settings, template_id: str | None) -> None:
    """A templateId must exist where Relay can render it: in EMAIL_TEMPLATES_DIR when set
    (so SMTP can take over), and there or nowhere when SMTP is the only path."""
    if template_id is None:
        return
    from relay.notifications import sendgrid

    store = _templates(request, settings)
    if settings.email_templates_dir is None and sendgrid.SendGridSender.configured(settings):
        return  # SendGrid's own dynamic templates: SendGrid checks the id
    if not store.exists(template_id):
        raise RelayError(
            ErrorCode.TEMPLATE_NOT_FOUND,
            f"no template {template_id!r} in EMAIL_TEMPLATES_DIR",
            [{"field": "templateId", "in": "body", "message": "unknown template"}],
        )


def _templates(request: Request, settings: Settings) -> TemplateStore:
    store = getattr(request.app.state, "email_templates", None)
    if store is None:
        store = request.app.state.email_templates = TemplateStore(settings.email_templates_dir)
    return store  # type: ignore[no-any-return]


async def _refuse_suppressed(
    engine: Any, channel: Channel, to: str, *, critical: bool, field: str = "to"
) -> None:
    kind = suppression_channel(channel)
    if kind is None or critical:
        return
    if await asyncio.to_thread(repository.suppressed, engine, kind, [to]):
        raise RelayError(
            ErrorCode.RECIPIENT_SUPPRESSED,
            "the recipient is on the suppression list (send with critical: true to override)",
            [{"field": field, "in": "body", "message": "suppressed"}],
        )


_OPTIONS = {"to", "user_id", "idempotency_key", "critical"}


async def _queue_send(
    engine: Any,
    keyring: Any,
    settings: Settings,
    response: Response,
    channel: Channel,
    body: Any,
    *,
    to: str | None,
) -> dict[str, Any]:
    """Check and queue one message: the provider is configured, the recipient is not
    suppressed (unless critical); 202, or 200 for an idempotencyKey seen before."""
    _require_provider(settings, channel)
    if to is not None:
        await _refuse_suppressed(engine, channel, to, critical=body.critical)
    message = NewMessage(
        channel=channel,
        content=body.model_dump(by_alias=True, exclude_none=True, exclude=_OPTIONS),
        to=to,
        user_id=body.user_id,
        idempotency_key=body.idempotency_key,
        critical=body.critical,
    )
    (queued,) = await asyncio.to_thread(repository.enqueue, engine, keyring, [message])
    if queued.duplicate:
        response.status_code = 200
    return ok(Queued(id=queued.id, status=queued.status, duplicate=queued.duplicate))


# --- single sends -----------------------------------------------------------------------------


@router.post(
    "/email",
    status_code=202,
    summary="Queue an email (SendGrid, or SMTP when SendGrid is absent or failing)",
    response_model=Envelope[Queued],
    responses=SEND_ERRORS,
)
async def send_email(
    body: EmailSend,
    request: Request,
    response: Response,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    _require_template(request, settings, body.template_id)
    return await _queue_send(engine, keyring, settings, response, Channel.EMAIL, body, to=body.to)


@router.post(
    "/sms",
    status_code=202,
    summary="Queue an SMS (Twilio)",
    response_model=Envelope[Queued],
    responses=SEND_ERRORS,
)
async def send_sms(
    body: SmsSend,
    response: Response,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return await _queue_send(engine, keyring, settings, response, Channel.SMS, body, to=body.to)


@router.post(
    "/whatsapp",
    status_code=202,
    summary="Queue a WhatsApp message (Twilio): text, media or a content template",
    response_model=Envelope[Queued],
    responses=SEND_ERRORS,
)
async def send_whatsapp(
    body: WhatsAppSend,
    response: Response,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return await _queue_send(
        engine, keyring, settings, response, Channel.WHATSAPP, body, to=body.to
    )


@router.post(
    "/push",
    status_code=202,
    summary="Queue a push (FCM) to a user's devices or to tokens",
    description="Tokens FCM reports dead (UNREGISTERED, SENDER_ID_MISMATCH, INVALID_ARGUMENT "
    "about the token) are removed from the user's devices and listed in `result`.",
    response_model=Envelope[Queued],
    responses=SEND_ERRORS,
)
async def send_push(
    body: PushSend,
    response: Response,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return await _queue_send(engine, keyring, settings, response, Channel.PUSH, body, to=None)


# --- bulk sends -------------------------------------------------------------------------------


async def _queue_bulk(
    engine: Any,
    keyring: Any,
    channel: Channel,
    recipients: list[tuple[str, dict[str, Any], str | None]],
    *,
    idempotency_key: str | None,
    critical: bool,
) -> BulkQueued:
    """Queue one message per recipient, in chunks of BULK_CHUNK (one SendGrid request each
    for email); suppressed recipients are refused one by one, not the batch."""
    batch_id = str(uuid.uuid4())
    kind = suppression_channel(channel)
    refused: set[str] = set()
    if kind is not None and not critical:
        refused = await asyncio.to_thread(
            repository.suppressed, engine, kind, [to for to, _, _ in recipients]
        )
    messages: list[NewMessage] = []
    results: list[BulkRecipientResult] = []
    for index, (to, content, user_id) in enumerate(recipients):
        if to in refused:
            results.append(
                BulkRecipientResult(
                    to=to, status="REFUSED", error_code=ErrorCode.RECIPIENT_SUPPRESSED.value
                )
            )
            continue
        message = NewMessage(
            channel=channel,
            content=content,
            to=to,
            user_id=user_id,
            idempotency_key=f"{idempotency_key}:{index}" if idempotency_key else None,
            critical=critical,
            batch_id=batch_id if channel is Channel.EMAIL else None,
            batch_chunk=len(messages) // BULK_CHUNK if channel is Channel.EMAIL else None,
        )
        messages.append(message)
        results.append(BulkRecipientResult(to=to, id=message.id, status="PENDING"))
    queued = await asyncio.to_thread(repository.enqueue, engine, keyring, messages)
    by_id = {m.id: q for m, q in zip(messages, queued, strict=True)}
    for result in results:
        if result.id in by_id:
            found = by_id[result.id]
            result.id, result.status = found.id, found.status
    return BulkQueued(
        batch_id=batch_id,
        queued=len(messages),
        refused=len(results) - len(messages),
        recipients=results,
    )


@router.post(
    "/email/bulk",
    status_code=202,
    summary="Queue one templated email per recipient (SendGrid: 1,000 a request)",
    response_model=Envelope[BulkQueued],
    responses=SEND_ERRORS,
)
async def send_email_bulk(
    body: EmailBulkSend,
    request: Request,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    _require_provider(settings, Channel.EMAIL)
    _require_template(request, settings, body.template_id)
    shared = body.model_dump(
        by_alias=True,
        exclude_none=True,
        exclude={"recipients", "idempotency_key", "critical"},
    )
    recipients = [
        (r.to, {**shared, "templateData": r.template_data or {}}, r.user_id)
        for r in body.recipients
    ]
    result = await _queue_bulk(
        engine,
        keyring,
        Channel.EMAIL,
        recipients,
        idempotency_key=body.idempotency_key,
        critical=body.critical,
    )
    return ok(result)


@router.post(
    "/sms/bulk",
    status_code=202,
    summary="Queue one SMS per recipient",
    response_model=Envelope[BulkQueued],
    responses=SEND_ERRORS,
)
async def send_sms_bulk(
    body: SmsBulkSend,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    _require_provider(settings, Channel.SMS)
    recipients = [(r.to, {"body": r.body or body.body}, r.user_id) for r in body.recipients]
    result = await _queue_bulk(
        engine,
        keyring,
        Channel.SMS,
        recipients,
        idempotency_key=body.idempotency_key,
        critical=body.critical,
    )
    return ok(result)


# --- several channels, with fallback ----------------------------------------------------------


@router.post(
    "",
    status_code=202,
    summary="Send on the first channel; fall back to the next when it fails or is not "
    "delivered within NOTIFICATION_FALLBACK_AFTER",
    response_model=Envelope[Queued],
    responses=SEND_ERRORS,
)
async def send_multi_channel(
    body: MultiChannelSend,
    request: Request,
    response: Response,
    engine: EngineDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> dict[str, Any]:
    for channel in body.channels:
        _require_provider(settings, channel)
    if body.email is not None:
        _require_template(request, settings, body.email.template_id)
    content = body.model_dump(
        by_alias=True,
        exclude_none=True,
        exclude={"channels", "user_id", "idempotency_key", "critical"},
    )
    channels = [channel.value for channel in body.channels]
    message = NewMessage(
        channel=None,
        channels=channels,
        content=content,
        user_id=body.user_id,
        idempotency_key=body.idempotency_key,
        critical=body.critical,
    )
    (queued,) = await asyncio.to_thread(repository.enqueue, engine, keyring, [message])
    if queued.status not in {status.value for status in FINAL}:
        # Started (or found running) on every attempt: a request retried after Temporal
        # was down lands on the same row and starts its workflow then.
        await start_notification(client, settings, queued.id, channels)
    if queued.duplicate:
        response.status_code = 200
    return ok(Queued(id=queued.id, status=queued.status, duplicate=queued.duplicate))


# --- reading ----------------------------------------------------------------------------------


def _out(row: Any, events: list[Any] | None = None) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        channel=row.channel,
        channels=row.channels,
        parent_id=row.parent_id,
        status=row.status,
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        user_id=row.user_id,
        to=row.to_address,
        critical=row.critical,
        batch_id=row.batch_id,
        attempts=row.attempts,
        error_code=row.error_code,
        error_message=row.error_message,
        result=row.result,
        sent_at=row.sent_at,
        final_at=row.final_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        events=None
        if events is None
        else [NotificationEventOut.model_validate(event, from_attributes=True) for event in events],
    )


@router.get(
    "",
    summary="Notifications, newest first",
    description="`providerMessageId` finds the notification a provider id belongs to (seed "
    "001's /sms/{messageSid}/status).",
    response_model=Page[NotificationOut],
    responses=error_responses(401, 422),
)
async def list_notifications(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    channel: Annotated[Channel | None, Query()] = None,
    status: Annotated[NotificationStatus | None, Query()] = None,
    provider_message_id: Annotated[
        str | None, Query(alias="providerMessageId", max_length=255)
    ] = None,
    batch_id: Annotated[str | None, Query(alias="batchId", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    table = repository.notifications
    query = select(table)
    for column, value in (
        (table.c.user_id, user_id),
        (table.c.channel, channel.value if channel else None),
        (table.c.status, status.value if status else None),
        (table.c.provider_message_id, provider_message_id),
        (table.c.batch_id, batch_id),
    ):
        if value is not None:
            query = query.where(column == value)
    after = decode_cursor(cursor)
    if after is not None:
        moment, last_id = after
        query = query.where(
            or_(
                table.c.created_at < moment,
                and_(table.c.created_at == moment, table.c.id < str(last_id)),
            )
        )
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)

    def load() -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    rows = await asyncio.to_thread(load)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(as_utc(last.created_at) or last.created_at, uuid.UUID(last.id))
    return page([_out(row) for row in rows], next_cursor)


@router.get(
    "/{notification_id}",
    summary="A notification: status, provider, provider message id, every event",
    response_model=Envelope[NotificationOut],
    responses=error_responses(401, 404),
)
async def get_notification(notification_id: str, engine: EngineDep) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, notification_id)
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no such notification")
    events = await asyncio.to_thread(repository.load_events, engine, notification_id)
    return ok(_out(row, events))


# --- suppressions -----------------------------------------------------------------------------


@suppressions_router.get(
    "",
    summary="The suppression list, newest first",
    response_model=Page[SuppressionOut],
    responses=error_responses(401, 422),
)
async def list_suppressions(
    engine: EngineDep,
    channel: Annotated[SuppressionChannel | None, Query()] = None,
    address: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
) -> dict[str, Any]:
    offset = int(cursor or 0)  # the list is small and rarely read: an offset is enough
    table = repository.suppressions
    query = select(table)
    if channel is not None:
        query = query.where(table.c.channel == channel.value)
    if address is not None:
        query = query.where(table.c.address == address.strip().lower())
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc())
    query = query.offset(offset).limit(limit + 1)

    def load() -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    rows = await asyncio.to_thread(load)
    more = len(rows) > limit
    data = [SuppressionOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    return page(data, str(offset + limit) if more else None)


@suppressions_router.delete(
    "",
    status_code=204,
    summary="Take an address or number off the suppression list",
    responses=error_responses(401, 404, 422),
)
async def delete_suppression(
    engine: EngineDep,
    channel: Annotated[SuppressionChannel, Query()],
    address: Annotated[str, Query(min_length=1, max_length=320)],
) -> Response:
    removed = await asyncio.to_thread(
        repository.unsuppress, engine, channel, _normalized(channel, address)
    )
    if not removed:
        raise RelayError(ErrorCode.NOT_FOUND, "that address is not suppressed")
    return Response(status_code=204)


def _normalized(channel: SuppressionChannel, address: str) -> str:
    address = address.strip()
    return address.lower() if channel is SuppressionChannel.EMAIL else address
