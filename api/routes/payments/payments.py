"""Payments' routes: /v1/payments (Stripe PaymentIntents and PayPal orders, each a
`payment-{id}` workflow) and PayPal's webhook, `POST /webhooks/paypal`.

Stripe's events about payments arrive on `POST /webhooks/stripe` (billing's route, routed
by `relay.stripe_router`). PayPal's are verified by PayPal's verify-webhook-signature
API, recorded once in the inbound inbox and forwarded to the payment's workflow, as
Stripe's are. Reads come from the read model the workflow writes; every change is an
update on the workflow, its single writer.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.deps import (
    EngineDep,
    SettingsDep,
    TemporalDep,
    require_api_key,
)
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.idempotency import require_same_request, uuid_for
from api.inbound import accept_event
from api.pagination import newest_first_page, page
from api.schemas.inbound import InboundAccepted
from api.schemas.payments import (
    Payment,
    PaymentCapture,
    PaymentConfirm,
    PaymentCreate,
    RefundCreate,
    RefundCreated,
    row_fields,
    view_fields,
)
from relay.errors import ErrorCode, RelayError
from relay.payments import paypal, repository
from relay.payments.contracts import (
    FINAL,
    CapturePayment,
    ConfirmPayment,
    CreatePayment,
    PaymentStatus,
    PaymentView,
    RefundPayment,
)
from relay.payments.inbound import paypal_target
from workflows.clients.payments import (
    cancel_payment,
    capture_payment,
    confirm_payment,
    create_payment,
    payment_state,
    refund_payment,
)

router = APIRouter(
    prefix="/v1/payments", tags=["payments"], dependencies=[Depends(require_api_key)]
)

# Relay's payment ids are UUIDs; one derived from the client's idempotencyKey (v5), so a
# retried request lands on the same workflow and so the same PaymentIntent.
_ID_NAMESPACE = uuid.UUID("6f1c9b3e-5a7d-4c2e-9b8f-0d3e2a1c4b5f")


def payment_id_for(idempotency_key: str | None) -> str:
    return uuid_for(_ID_NAMESPACE, idempotency_key)


def _answer(view: PaymentView) -> dict[str, Any]:
    return ok(Payment.model_validate(view_fields(view)))


def _declined(payment: Payment) -> RelayError:
    error = payment.last_error
    return RelayError(
        ErrorCode.PAYMENT_DECLINED,
        "the card was declined",
        {
            "declineCode": error.decline_code if error else None,
            "payment": payment.model_dump(mode="json", by_alias=True),
        },
    )


def _answer_confirmed(payment: Payment) -> dict[str, Any]:
    """A confirmation's answer: 402 with the payment when the card was declined."""
    if payment.relay_status == PaymentStatus.FAILED:
        raise _declined(payment)
    return ok(payment)


@router.post(
    "",
    status_code=201,
    summary="Create a payment (a Stripe PaymentIntent), and confirm it when asked",
    description="`amount` is an integer in the currency's minor unit (9999 is 99.99). "
    "The same `idempotencyKey` lands on the same payment and creates one PaymentIntent. "
    "With `confirm: true` a declined card is 402 PAYMENT_DECLINED with the payment "
    "(`relayStatus: FAILED`, `lastError.declineCode`) in `details`; a card needing 3-D "
    "Secure is `REQUIRES_ACTION` with `nextAction` and `clientSecret`. Stripe refusing "
    "the request (an unknown customer or payment method) is 400 VALIDATION_ERROR with "
    "Stripe's code in `details`, and nothing is created; Stripe down is 502 "
    "PROVIDER_ERROR (retry with the same idempotencyKey).",
    response_model=Envelope[Payment],
    responses=error_responses(400, 401, 402, 422, 502, 503),
)
async def create(
    body: PaymentCreate, client: TemporalDep, settings: SettingsDep, engine: EngineDep
) -> dict[str, Any]:
    payment_id = payment_id_for(body.idempotency_key)
    if body.idempotency_key:
        # A payment that exists is answered as it is: its workflow may have ended, and a
        # new run must never create a second PaymentIntent.
        row = await asyncio.to_thread(repository.find, engine, payment_id)
        if row is not None:
            existing = await _existing(client, payment_id, row)
            _require_same_request(body, existing)
            return _answer_confirmed(existing) if body.confirm else ok(existing)
    request = CreatePayment(
        provider=body.provider,
        cancel_url=body.cancel_url,
        amount=body.amount,
        currency=body.currency,
        user_id=body.user_id,
        customer_id=body.customer_id,
        description=body.description,
        metadata=body.metadata,
        payment_method_id=body.payment_method_id,
        confirm=body.confirm,
        capture_method=body.capture_method,
        return_url=body.return_url,
    )
    payment = Payment.model_validate(
        view_fields(await create_payment(client, settings, payment_id, request))
    )
    if body.idempotency_key:
        _require_same_request(body, payment)  # another request may have taken the key first
    return _answer_confirmed(payment) if body.confirm else ok(payment)


def _require_same_request(body: PaymentCreate, payment: Payment) -> None:
    compared: dict[str, tuple[object, object]] = {
        "provider": (body.provider, payment.provider),
        "amount": (body.amount, payment.amount),
        "currency": (body.currency, payment.currency),
        "userId": (body.user_id, payment.user_id),
        "description": (body.description, payment.description),
    }
    if body.customer_id is not None:
        compared["customerId"] = (body.customer_id, payment.stripe_customer_id)
    if body.provider == "stripe":
        compared["captureMethod"] = (body.capture_method, payment.capture_method)
    require_same_request(compared)


async def _existing(client: Client, payment_id: str, row: Any) -> Payment:
    if row.relay_status in FINAL:
        # Its run has ended: a query would replay it for nothing the row lacks but the
        # client secret, which a final payment no longer needs.
        return Payment.model_validate(row_fields(row))
    try:
        state = await payment_state(client, payment_id)
    except (RPCError, WorkflowQueryFailedError):
        state = None  # the run is gone (retention): the read model answers
    if state is not None and state.view is not None:
        return Payment.model_validate(view_fields(state.view))
    return Payment.model_validate(row_fields(row))


@router.get(
    "",
    summary="List payments",
    description="Newest first; filter by `userId` and `status` (Relay's status).",
    response_model=Page[Payment],
    responses=error_responses(401, 422),
)
async def list_payments(
    engine: EngineDep,
    user_id: Annotated[str | None, Query(alias="userId", max_length=255)] = None,
    status: Annotated[PaymentStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    query = repository.payments_query(
        user_id=user_id, relay_status=status.value if status else None
    )
    rows, next_cursor = await newest_first_page(engine, repository.P, query, cursor, limit)
    return page([Payment.model_validate(row_fields(row)) for row in rows], next_cursor)


@router.get(
    "/{payment_id}",
    summary="One payment: Stripe's status and Relay's, the last error, the refunds",
    response_model=Envelope[Payment],
    responses=error_responses(401, 404),
)
async def get_payment(payment_id: str, engine: EngineDep) -> dict[str, Any]:
    row = await asyncio.to_thread(repository.load, engine, payment_id)
    return ok(Payment.model_validate(row_fields(row)))


async def _known(engine: Any, payment_id: str) -> Any:
    return await asyncio.to_thread(repository.load, engine, payment_id)


@router.post(
    "/{payment_id}/confirm",
    summary="Confirm on the server with a payment method",
    description="402 PAYMENT_DECLINED when the card is declined (the payment is FAILED and "
    "may be confirmed again with another method until PAYMENT_EXPIRY); 409 when the "
    "payment is not awaiting confirmation.",
    response_model=Envelope[Payment],
    responses=error_responses(400, 401, 402, 404, 409, 502, 503),
)
async def confirm(
    payment_id: str, body: PaymentConfirm, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    await _known(engine, payment_id)
    request = ConfirmPayment(payment_method_id=body.payment_method_id, return_url=body.return_url)
    view = await confirm_payment(client, payment_id, request)
    return _answer_confirmed(Payment.model_validate(view_fields(view)))


@router.post(
    "/{payment_id}/capture",
    summary="Capture an authorized payment (captureMethod: manual)",
    response_model=Envelope[Payment],
    responses=error_responses(400, 401, 404, 409, 422, 502, 503),
)
async def capture(
    payment_id: str, body: PaymentCapture, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    row = await _known(engine, payment_id)
    if row.provider == paypal.PROVIDER and body.amount is not None:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "the request is invalid",
            [{"field": "amount", "in": "body", "message": "a PayPal order is captured whole"}],
        )
    if body.amount is not None and body.amount > row.amount:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "the request is invalid",
            [
                {
                    "field": "amount",
                    "in": "body",
                    "message": f"at most the authorized amount, {row.amount}",
                }
            ],
        )
    return _answer(
        await capture_payment(client, payment_id, CapturePayment(amount=body.amount), row.provider)
    )


@router.post(
    "/{payment_id}/cancel",
    summary="Cancel a payment not yet captured",
    response_model=Envelope[Payment],
    responses=error_responses(401, 404, 409, 502, 503),
)
async def cancel(payment_id: str, engine: EngineDep, client: TemporalDep) -> dict[str, Any]:
    row = await _known(engine, payment_id)
    return _answer(await cancel_payment(client, payment_id, row.provider))


@router.post(
    "/{payment_id}/refunds",
    status_code=201,
    summary="Refund all that remains, or part of it",
    description="Several refunds per payment, up to the captured amount; more than remains "
    "is 409 CONFLICT with `remaining` in `details`. Each refund's status is tracked.",
    response_model=Envelope[RefundCreated],
    responses=error_responses(400, 401, 404, 409, 422, 502, 503),
)
async def refund(
    payment_id: str, body: RefundCreate, engine: EngineDep, client: TemporalDep
) -> dict[str, Any]:
    row = await _known(engine, payment_id)
    if row.provider == paypal.PROVIDER and body.reason:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "the request is invalid",
            [{"field": "reason", "in": "body", "message": "Stripe only"}],
        )
    result = await refund_payment(
        client, payment_id, RefundPayment(amount=body.amount, reason=body.reason), row.provider
    )
    return ok(
        RefundCreated.model_validate(
            {
                "refund": {
                    "id": result.refund.id,
                    "amount": result.refund.amount,
                    "status": result.refund.status,
                    "reason": result.refund.reason,
                    "created": result.refund.created,
                },
                "payment": view_fields(result.payment),
            }
        )
    )


# --- PayPal's webhook ----------------------------------------------------------------------

webhooks_router = APIRouter(prefix="/webhooks", tags=["provider webhooks"])

# PayPal's transmission headers, as verify-webhook-signature names them.
_PAYPAL_HEADERS = {
    "auth_algo": "PAYPAL-AUTH-ALGO",
    "cert_url": "PAYPAL-CERT-URL",
    "transmission_id": "PAYPAL-TRANSMISSION-ID",
    "transmission_sig": "PAYPAL-TRANSMISSION-SIG",
    "transmission_time": "PAYPAL-TRANSMISSION-TIME",
}


def _paypal_client(request: Request, settings: Any) -> paypal.PayPalClient:
    """One client per app, so its OAuth token is fetched once and reused."""
    client = getattr(request.app.state, "paypal_payments_client", None)
    if client is None:
        client = paypal.PayPalClient(settings)
        request.app.state.paypal_payments_client = client
    return client  # type: ignore[no-any-return]


async def _verified_paypal_event(request: Request, settings: Any) -> tuple[bytes, dict[str, Any]]:
    if not paypal.configured(settings) or not settings.paypal_webhook_id:
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "PayPal is not configured (PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET, PAYPAL_WEBHOOK_ID)",
        )
    headers = {key: request.headers.get(name) for key, name in _PAYPAL_HEADERS.items()}
    missing = sorted(_PAYPAL_HEADERS[key] for key, value in headers.items() if not value)
    if missing:
        raise RelayError(
            ErrorCode.INVALID_SIGNATURE, "PayPal's signature headers are missing", missing
        )
    payload = await request.body()
    try:
        event = json.loads(payload)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "the body is not a PayPal event")
    try:
        valid = await _paypal_client(request, settings).verify_webhook(
            {key: str(value) for key, value in headers.items()}, event
        )
    except ApplicationError as exc:
        if exc.type == ErrorCode.VALIDATION_ERROR.value:
            valid = False  # PayPal refused the verification request: not PayPal's event
        else:
            # PayPal's verification is down: the event is neither refused nor recorded,
            # and PayPal delivers it again.
            raise RelayError(
                ErrorCode.PROVIDER_ERROR,
                "PayPal's signature verification could not be reached",
                {"retryable": True},
            ) from None
    if not valid:
        raise RelayError(ErrorCode.INVALID_SIGNATURE, "PayPal did not verify the signature")
    return payload, event


@webhooks_router.post(
    "/paypal",
    summary="PayPal's webhook (public; verified by PayPal's verify-webhook-signature API)",
    description="Each event is verified by PayPal (POST /v1/notifications/"
    "verify-webhook-signature with PAYPAL_WEBHOOK_ID and the PAYPAL-* headers), recorded "
    "once by event id and forwarded to its payment's workflow. 400 INVALID_SIGNATURE "
    "(a header missing, or FAILURE) writes nothing; a duplicate is 200 with "
    "`duplicate: true`; 502 when PayPal cannot verify now, 503 when the event could not be "
    "recorded (PayPal retries).",
    response_model=Envelope[InboundAccepted],
    responses=error_responses(400, 502, 503),
)
async def paypal_webhook(
    request: Request, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    payload, event = await _verified_paypal_event(request, settings)
    event_id = str(event["id"])
    kind = str(event.get("event_type", ""))
    target, object_id = await asyncio.to_thread(
        paypal_target,
        event,
        lambda rid, oid, cid: repository.paypal_payment_of(engine, rid, oid, cid),
    )
    return await accept_event(
        request,
        engine,
        settings,
        provider=paypal.PROVIDER,
        event_id=event_id,
        kind=kind,
        payload=payload,
        target=target,
        object_id=object_id,
    )
