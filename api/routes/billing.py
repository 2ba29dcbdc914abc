"""Billing's routes: Stripe's webhooks (public, verified) and /v1/subscriptions.

`POST /webhooks/stripe` verifies the signature over the raw body against every secret
in STRIPE_WEBHOOK_SECRET, records the event once in the inbound inbox (sealed) before
answering 2xx, and forwards it at once to the workflow `relay.stripe_router` names (a
subscription's or a payment's); when Temporal is
down the event stays PENDING and the inbound forwarder sends it later. A duplicate gets
2xx and does nothing else; a database that cannot record the event gets 503, so Stripe
retries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy import and_, or_

from api.deps import (
    EngineDep,
    SettingsDep,
    TemporalDep,
    require_api_key,
)
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import require_same_request
from api.inbound import accept_event
from api.pagination import page
from api.schemas.billing import (
    StripeEventAccepted,
    Subscription,
    SubscriptionCancel,
    SubscriptionChange,
    SubscriptionCreate,
    SubscriptionPause,
    row_fields,
    view_fields,
)
from relay.billing import repository as billing_repository
from relay.billing.contracts import (
    CancelSubscription,
    ChangeSubscription,
    CreateSubscription,
    PauseSubscription,
    SubscriptionStatus,
    SubscriptionView,
)
from relay.billing.signature import verify_event, webhook_secrets
from relay.db import as_utc
from relay.errors import ErrorCode, RelayError
from relay.stripe_router import PROVIDER, stripe_target
from workflows.clients.billing import (
    cancel_subscription,
    change_subscription,
    create_subscription,
    pause_subscription,
    resume_subscription,
)

webhooks_router = APIRouter(prefix="/webhooks", tags=["provider webhooks"])


@webhooks_router.post(
    "/stripe",
    summary="Stripe's webhook (public; verified by Stripe-Signature)",
    description="Stripe events are verified (HMAC over the raw body, 300 s tolerance, every "
    "secret in STRIPE_WEBHOOK_SECRET), recorded once by event id and forwarded to the "
    "workflow of its subscription or payment. 400 INVALID_SIGNATURE writes nothing; a duplicate is 200 "
    "with `duplicate: true`; 503 when the event could not be recorded (Stripe retries).",
    response_model=Envelope[StripeEventAccepted],
    responses=error_responses(400, 503),
)
async def stripe_webhook(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> dict[str, Any]:
    payload = await request.body()
    secrets = webhook_secrets(
        settings.stripe_webhook_secret.get_secret_value()
        if settings.stripe_webhook_secret
        else None
    )
    event = verify_event(payload, stripe_signature, secrets)

    # Billing's subscriptions first, then payments' intents (relay.stripe_router).
    target, object_id = await asyncio.to_thread(stripe_target, event, engine)
    # Committed before the answer; concurrent deliveries share one transaction.
    return await accept_event(
        request,
        engine,
        settings,
        provider=PROVIDER,
        event_id=event["id"],
        kind=str(event.get("type", "")),
        payload=payload,
        target=target,
        object_id=object_id,
    )


# --- /v1/subscriptions ---------------------------------------------------------------------

router = APIRouter(
    prefix="/v1/subscriptions", tags=["subscriptions"], dependencies=[Depends(require_api_key)]
)


def subscription_id_for(idempotency_key: str | None) -> str:
    """Relay's id: derived from the client's idempotencyKey, so a retried request lands on
    the same workflow (and so the same Stripe customer and subscription)."""
    if idempotency_key:
        return "rsub_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return "rsub_" + uuid.uuid4().hex[:24]


def _answer(view: SubscriptionView) -> dict[str, Any]:
    return ok(Subscription.model_validate(view_fields(view)))


@router.post(
    "",
    status_code=201,
    summary="Subscribe a user to a price",
    description="Creates the user's Stripe customer on first use (metadata.userId) and the "
    "subscription, each with an Idempotency-Key derived from the workflow id and the step. "
    "An unknown price or customer is 400 VALIDATION_ERROR with Stripe's code in `details`, "
    "and nothing is created; a card declined on the first invoice is status `incomplete` "
    "with its `declineCode` (and `clientSecret` to retry on the client); a card refused "
    "when attached is 402 PAYMENT_DECLINED; Stripe down is 502 PROVIDER_ERROR (retry with "
    "the same idempotencyKey: the workflow keeps trying on its own).",
    response_model=Envelope[Subscription],
    responses=error_responses(400, 401, 402, 422, 502, 503),
)
async def create(
    body: SubscriptionCreate, client: TemporalDep, settings: SettingsDep
) -> dict[str, Any]:
    subscription_id = subscription_id_for(body.idempotency_key)
    request = CreateSubscription(
        user_id=body.user_id,
        price_id=body.price_id,
        email=body.email,
        quantity=body.quantity,
        trial_days=body.trial_days,
        payment_method_id=body.payment_method_id,
        metadata=body.metadata,
    )
    view = await create_subscription(client, settings, subscription_id, request)
    if body.idempotency_key:
        require_same_request(
            {
                "userId": (body.user_id, view.user_id),
                "priceId": (body.price_id, view.price_id),
                "quantity": (body.quantity, view.quantity),
            }
        )
    return _answer(view)


def _encode(row: Any) -> str:
    raw = json.dumps([as_utc(row.created_at).isoformat(), row.id])  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        moment, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(moment), str(row_id)
    except (binascii.Error, ValueError, TypeError):
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "cursor is not valid",
            [{"field": "cursor", "in": "query", "message": "pass nextCursor unchanged"}],
        ) from None


@router.get(
    "",
    summary="List subscriptions",
    description="Newest first; filter by `userId` and `status` (Stripe's statuses).",
    response_model=Page[Subscription],
    responses=error_responses(401, 422),
)
async def list_subscriptions(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    status: Annotated[SubscriptionStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    table = billing_repository.S
    query = billing_repository.subscriptions_query(
        user_id=user_id, status=status.value if status else None
    )
    if cursor:
        moment, last_id = _decode(cursor)
        query = query.where(
            or_(
                table.c.created_at < moment,
                and_(table.c.created_at == moment, table.c.id < last_id),
            )
        )
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)

    def load() -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    rows = await asyncio.to_thread(load)
    next_cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
    items = [Subscription.model_validate(row_fields(row)) for row in rows[:limit]]
    return page(items, next_cursor)


@router.get(
    "/{subscription_id}",
    summary="One subscription",
    response_model=Envelope[Subscription],
    responses=error_responses(401, 404),
)
async def get_subscription(subscription_id: str, engine: EngineDep) -> dict[str, Any]:
    row = await asyncio.to_thread(billing_repository.load, engine, subscription_id)
    return ok(Subscription.model_validate(row_fields(row)))


async def _known(engine: Any, subscription_id: str) -> None:
    await asyncio.to_thread(billing_repository.load, engine, subscription_id)


@router.post(
    "/{subscription_id}/cancel",
    summary="Cancel now, or at the period's end",
    response_model=Envelope[Subscription],
    responses=error_responses(401, 404, 409, 502),
)
async def cancel(
    subscription_id: str, body: SubscriptionCancel, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    await _known(engine, subscription_id)
    request = CancelSubscription(at_period_end=body.at_period_end)
    return _answer(await cancel_subscription(client, subscription_id, request))


@router.post(
    "/{subscription_id}/change",
    summary="Change the price or quantity (prorated by default)",
    response_model=Envelope[Subscription],
    responses=error_responses(400, 401, 404, 409, 502),
)
async def change(
    subscription_id: str, body: SubscriptionChange, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    await _known(engine, subscription_id)
    request = ChangeSubscription(
        price_id=body.price_id,
        quantity=body.quantity,
        proration_behavior=body.proration_behavior,
    )
    return _answer(await change_subscription(client, subscription_id, request))


@router.post(
    "/{subscription_id}/pause",
    summary="Pause payment collection",
    description="Stripe's `pause_collection`: the subscription stays `active` while its "
    "invoices are kept as drafts, marked uncollectible or voided, until `resumesAt` or "
    "`/resume`.",
    response_model=Envelope[Subscription],
    responses=error_responses(401, 404, 409, 502),
)
async def pause(
    subscription_id: str, body: SubscriptionPause, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    await _known(engine, subscription_id)
    request = PauseSubscription(behavior=body.behavior, resumes_at=body.resumes_at)
    return _answer(await pause_subscription(client, subscription_id, request))


@router.post(
    "/{subscription_id}/resume",
    summary="Resume payment collection (or a paused subscription)",
    response_model=Envelope[Subscription],
    responses=error_responses(401, 404, 409, 502),
)
async def resume(subscription_id: str, engine: EngineDep, client: TemporalDep) -> dict[str, Any]:
    await _known(engine, subscription_id)
    return _answer(await resume_subscription(client, subscription_id))


routers = (webhooks_router, router)
