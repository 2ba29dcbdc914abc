"""The PayPal sandbox: a small, stateful HTTP server speaking the part of PayPal's REST API
that Relay uses, since no PayPal sandbox can be reached from here.

`relay dev` can run it when PayPal has no credentials in development (SANDBOX=auto), and the
tests run it in a thread (`PayPalSandbox(port=0).run_in_thread()`). Relay's PayPal code is
pointed at it by PAYPAL_API_BASE and authenticates with the client id and secret it accepts.

Routes (PayPal's documented paths and shapes):

    POST /v1/oauth2/token                         HTTP Basic client_id:client_secret,
                                                  grant_type=client_credentials
    POST /v2/checkout/orders                      intent CAPTURE; PayPal-Request-Id; Prefer
    GET  /v2/checkout/orders/{id}
    POST /v2/checkout/orders/{id}/capture         PayPal-Request-Id; Prefer
    GET  /v2/payments/captures/{id}
    POST /v2/payments/captures/{id}/refund        PayPal-Request-Id; Prefer
    GET  /v2/payments/refunds/{id}
    POST /v1/notifications/verify-webhook-signature
    GET  /v1/notifications/webhooks-events/{id}
    GET  /v1/notifications/certs/{cert}           the signing certificate (public, as PayPal's)
    GET|POST /checkoutnow?token={orderId}         the buyer's approval page (public)

Every /v1 and /v2 route but the token and the certificate wants `Authorization: Bearer` with a
token this server issued (401 AUTHENTICATION_FAILURE otherwise). Errors have PayPal's shape:
`{name, message, debug_id, details: [{field?, value?, location?, issue, description}], links}`.
As PayPal does, `Prefer` defaults to `return=minimal` (id, status and links; a capture's
minimal answer still carries its captures), and a `PayPal-Request-Id` seen before returns the
first successful answer again instead of acting twice.

Controls for `/sandbox` and tests (not PayPal's; camelCase like Relay's own API):

    POST /_sandbox/orders/{id}/approve     approve as the buyer would, without a browser
    POST /_sandbox/captures/{id}/deny      mark a capture DENIED, send PAYMENT.CAPTURE.DENIED
    GET  /_sandbox/events?limit=           {data: events sent, newest first, with deliveries}
    GET|POST /_sandbox/webhooks            list / add {url, webhookId} webhook targets
    POST /_sandbox/faults                  {count}: the next `count` API calls answer 503

Webhooks. CHECKOUT.ORDER.APPROVED, PAYMENT.CAPTURE.COMPLETED, PAYMENT.CAPTURE.DENIED and
PAYMENT.CAPTURE.REFUNDED go to every target from a thread pool (a few attempts, never on the
request path), signed as PayPal signs them: the PAYPAL-TRANSMISSION-SIG header is base64
RSA-SHA256 (PAYPAL-AUTH-ALGO SHA256withRSA) over

    {PAYPAL-TRANSMISSION-ID}|{PAYPAL-TRANSMISSION-TIME}|{webhook id}|{crc32(raw body), decimal}

with a 2048-bit key made at start, whose self-signed certificate PAYPAL-CERT-URL serves; so a
receiver can check a delivery itself with the certificate, or ask the verify route.

PayPal's verify route receives `webhook_event` parsed, not the bytes that were signed, so it
must recover them. This server does it in two steps: when `webhook_event` equals (as JSON
values, key order aside) an event it sent, it takes the CRC of the exact bytes it sent; any
other event is re-serialised compactly (`json.dumps(event, separators=(",", ":"),
ensure_ascii=False)`, keys in the order received), which is also how it serialises what it
sends. A changed event thus gets a different CRC and FAILURE.

Not modelled: intent AUTHORIZE, PATCH on orders, payment sources other than PayPal wallets,
fees beyond a flat illustrative one, token scopes, and PayPal's 3-day retry schedule.
Everything lives in memory for the life of the process. No secret is logged.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import datetime as dt
import functools
import html
import json
import logging
import re
import secrets
import socket
import string
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import uvicorn
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from relay.errors import ConfigError
from relay.settings import Settings

logger = logging.getLogger(__name__)

# The credentials the sandbox accepts unless told otherwise; like localstripe's test key,
# they open nothing but this local server.
SANDBOX_CLIENT_ID = "relay-sandbox-client"
SANDBOX_CLIENT_SECRET = "relay-sandbox-secret"  # noqa: S105 - a local sandbox's credential
TOKEN_SECONDS = 32400
READY_SECONDS = 30
AUTH_ALGO = "SHA256withRSA"
# Delays before each delivery attempt of one event to one target.
DELIVERY_DELAYS: tuple[float, ...] = (0.0, 0.5, 2.0)
DELIVERY_TIMEOUT_SECONDS = 5.0
DELIVERY_THREADS = 4
# GET /_sandbox/events?limit= (as the Stripe sandbox's).
EVENTS_LIMIT = 50
MAX_EVENTS_LIMIT = 1000
APP_ID = "APP-80W284485P519543T"
SCOPE = (
    "https://uri.paypal.com/services/payments/payment/authcapture openid "
    "https://uri.paypal.com/services/payments/refund "
    "https://uri.paypal.com/services/applications/webhooks"
)
MERCHANT = {"email_address": "merchant@example.com", "merchant_id": "RELAYSANDBOX01"}
BUYER_NAME = {"given_name": "Sandbox", "surname": "Buyer"}
BUYER_EMAIL = "buyer@example.com"

# PayPal's currencies for Orders v2; the three that take no decimals.
CURRENCIES = frozenset(
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD SEK CHF "
    "THB USD".split()
)
ZERO_DECIMAL_CURRENCIES = frozenset({"HUF", "JPY", "TWD"})
# PayPal's pattern for `amount.value`.
_VALUE = re.compile(r"-?[0-9]+|-?[0-9]*\.[0-9]+")

_MESSAGES = {
    400: (
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    401: (
        "AUTHENTICATION_FAILURE",
        "Authentication failed due to invalid authentication credentials or a missing "
        "Authorization header.",
    ),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
    ),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
}


# PayPal's descriptions of the issues the sandbox raises (`details[].description`).
_ISSUES = {
    "MISSING_REQUIRED_PARAMETER": "A required field / parameter is missing.",
    "INVALID_PARAMETER_SYNTAX": "The value of a field does not conform to the expected format.",
    "INVALID_PARAMETER_VALUE": "The value of a field is invalid.",
    "INVALID_STRING_LENGTH": "The value of a field is either too short or too long.",
    "INVALID_ARRAY_MAX_ITEMS": "The number of items in an array parameter is too large.",
    "MALFORMED_REQUEST_JSON": "The request JSON is not well formed.",
    "INVALID_RESOURCE_ID": "Specified resource ID does not exist. Please check the resource ID "
    "and try again.",
    "CURRENCY_NOT_SUPPORTED": "Currency code is not currently supported.",
    "CURRENCY_MISMATCH": "Currency code should be the same for all purchase units.",
    "DECIMALS_NOT_SUPPORTED": "Currency does not support decimals.",
    "DECIMAL_PRECISION": "If the currency supports decimals, only two decimal place precision "
    "is supported.",
    "CANNOT_BE_ZERO_OR_NEGATIVE": "Must be greater than zero. If the currency supports "
    "decimals, only two decimal place precision is supported.",
    "DUPLICATE_REFERENCE_ID": "`reference_id` must be unique if multiple `purchase_unit` are "
    "provided.",
    "ORDER_NOT_APPROVED": "Payer has not yet approved the Order for payment. Please redirect "
    "the payer to the 'rel':'approve' url returned as part of the HATEOAS links within the "
    "Create Order call or provide a valid payment_source in the request.",
    "ORDER_ALREADY_CAPTURED": "Order already captured.If 'intent=CAPTURE' only one capture per "
    "order is allowed.",
    "PAYER_ACTION_REQUIRED": "Transaction cannot complete successfully, instruct the buyer to "
    "return to PayPal.",
    "DUPLICATE_INVOICE_ID": "Duplicate Invoice ID detected. To avoid a potential duplicate "
    "transaction your account setting requires that Invoice Id be unique for each transaction.",
    "CAPTURE_FULLY_REFUNDED": "The capture has already been fully refunded",
    "REFUND_NOT_ALLOWED": "Capture cannot be refunded.",
    "REFUND_CAPTURE_CURRENCY_MISMATCH": "Refund must be in the same currency as the capture",
    "REFUND_AMOUNT_EXCEEDED": "The refund amount must be less than or equal to the capture "
    "amount that has not yet been refunded.",
}


class PayPalError(Exception):
    """A refusal rendered in PayPal's error shape; `issue` is the `details[0].issue`."""

    def __init__(
        self,
        status: int,
        issue: str | None = None,
        description: str | None = None,
        *,
        field: str | None = None,
        value: str | None = None,
        location: str = "body",
    ) -> None:
        super().__init__(issue or str(status))
        self.status = status
        self.issue = issue
        self.description = description or _ISSUES.get(issue or "", "")
        self.field = field
        self.value = value
        self.location = location

    def body(self) -> dict[str, Any]:
        name, message = _MESSAGES.get(
            self.status, ("INTERNAL_SERVER_ERROR", "An internal server error occurred.")
        )
        body: dict[str, Any] = {"name": name, "message": message, "debug_id": _debug_id()}
        if self.issue is not None:
            detail: dict[str, Any] = {}
            if self.field is not None:
                detail["field"] = self.field
                if self.value is not None:
                    detail["value"] = self.value
                detail["location"] = self.location
            detail["issue"] = self.issue
            detail["description"] = self.description
            body["details"] = [detail]
            body["links"] = [
                {
                    "href": f"https://developer.paypal.com/docs/api/orders/v2/#error-{self.issue}",
                    "rel": "information_link",
                    "method": "GET",
                }
            ]
        else:
            body["links"] = [
                {
                    "href": "https://developer.paypal.com/docs/api/overview/#error",
                    "rel": "information_link",
                }
            ]
        return body

    def response(self) -> JSONResponse:
        body = self.body()
        return JSONResponse(body, self.status, headers={"Paypal-Debug-Id": body["debug_id"]})


def _debug_id() -> str:
    return secrets.token_hex(7)[:13]


def _paypal_id(length: int = 17) -> str:
    """An id shaped like PayPal's order, capture and refund ids (17 upper-case alphanumerics)."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_ms() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def serialize(event: dict[str, Any]) -> bytes:
    """The bytes the sandbox sends for an event, and how it re-serialises one it must verify."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """PayPal's signed string: `{transmission id}|{time}|{webhook id}|{crc32 of the body}`."""
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


# --- money ---------------------------------------------------------------------------------


def _money(value: Decimal, currency: str) -> dict[str, str]:
    places = Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    return {"currency_code": currency, "value": str(value.quantize(places))}


def _parse_money(raw: object, path: str) -> tuple[Decimal, str]:
    """An `amount` object validated as PayPal validates one (400 for syntax, 422 for rules)."""
    if not isinstance(raw, dict):
        raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field=path)
    currency, value = raw.get("currency_code"), raw.get("value")
    if currency is None:
        raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field=f"{path}/currency_code")
    if value is None:
        raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field=f"{path}/value")
    if not isinstance(currency, str) or len(currency) != 3:
        raise PayPalError(
            400, "INVALID_PARAMETER_SYNTAX", field=f"{path}/currency_code", value=str(currency)
        )
    if currency not in CURRENCIES:
        raise PayPalError(
            422, "CURRENCY_NOT_SUPPORTED", field=f"{path}/currency_code", value=currency
        )
    if not (isinstance(value, str) and len(value) <= 32 and _VALUE.fullmatch(value)):
        raise PayPalError(400, "INVALID_PARAMETER_SYNTAX", field=f"{path}/value", value=str(value))
    text = value
    amount = Decimal(text)
    decimals = max(0, -int(amount.as_tuple().exponent))
    if currency in ZERO_DECIMAL_CURRENCIES and decimals > 0:
        raise PayPalError(422, "DECIMALS_NOT_SUPPORTED", field=f"{path}/value", value=text)
    if decimals > 2:
        raise PayPalError(422, "DECIMAL_PRECISION", field=f"{path}/value", value=text)
    if amount <= 0:
        raise PayPalError(422, "CANNOT_BE_ZERO_OR_NEGATIVE", field=f"{path}/value", value=text)
    return amount, currency


def _fee(amount: Decimal, currency: str) -> Decimal:
    """An illustrative PayPal fee (3.49% + 0.49), never above the amount."""
    places = Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    fixed = Decimal(49) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.49")
    return min(amount, (amount * Decimal("0.0349") + fixed).quantize(places))


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Unit:
    reference_id: str
    amount: Decimal
    currency: str
    extra: dict[str, Any]  # custom_id, invoice_id, description, soft_descriptor
    capture_ids: list[str] = field(default_factory=list)


@dataclass
class _Order:
    id: str
    units: list[_Unit]
    status: str
    return_url: str | None
    cancel_url: str | None
    create_time: str
    update_time: str
    payer_id: str | None = None


@dataclass
class _Capture:
    id: str
    order_id: str
    amount: Decimal
    currency: str
    fee: Decimal
    extra: dict[str, Any]
    status: str
    create_time: str
    update_time: str
    refund_ids: list[str] = field(default_factory=list)
    refunded: Decimal = Decimal(0)


@dataclass
class _Refund:
    id: str
    capture_id: str
    amount: Decimal
    currency: str
    total_refunded: Decimal
    extra: dict[str, Any]
    create_time: str


@dataclass
class _Delivery:
    url: str
    webhook_id: str
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    transmission_id: str | None = None
    response_status: int | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "webhookId": self.webhook_id,
            "status": self.status,
            "attempts": self.attempts,
            "transmissionId": self.transmission_id,
            "responseStatus": self.response_status,
            "error": self.error,
        }


@dataclass
class _Event:
    event: dict[str, Any]
    body: bytes
    deliveries: list[_Delivery]


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    webhook_id: str


class _Signer:
    """The sandbox's RSA key and its self-signed certificate, made once per process."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Relay PayPal sandbox")])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: bytes) -> str:
        signature = self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def verify(self, message: bytes, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.public_key().verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


@functools.cache
def _signer() -> _Signer:
    """One key pair per process, made on first use (RSA key generation is slow enough to
    matter when the tests start a sandbox per test)."""
    return _Signer()


class PayPalState:
    """Everything the sandbox knows, behind one lock: every public method is safe to call
    from the server's event loop, the delivery threads and a test at once."""

    def __init__(
        self,
        *,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        webhooks: list[WebhookTarget] | None = None,
        base_url: str = "http://127.0.0.1",
        token_seconds: int = TOKEN_SECONDS,
        delivery_delays: tuple[float, ...] = DELIVERY_DELAYS,
    ) -> None:
        self._lock = threading.RLock()
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = base_url
        self.token_seconds = token_seconds
        self.delivery_delays = delivery_delays
        self.cert_id = f"CERT-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}"
        self.signer = _signer()
        self.webhooks: list[WebhookTarget] = list(webhooks or [])
        self._tokens: dict[str, float] = {}
        self._orders: dict[str, _Order] = {}
        self._captures: dict[str, _Capture] = {}
        self._refunds: dict[str, _Refund] = {}
        self._events: list[_Event] = []
        self._replies: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._faults = 0
        self._pool = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="paypal-webhook")
        self._http = httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS)
        self._closed = False

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/v1/notifications/certs/{self.cert_id}"

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- controls ---------------------------------------------------------------------------

    def add_webhook(self, url: str, webhook_id: str) -> None:
        """Send every event to `url` too (one target per webhook id: a new url replaces)."""
        with self._lock:
            self.webhooks = [t for t in self.webhooks if t.webhook_id != webhook_id]
            self.webhooks.append(WebhookTarget(url, webhook_id))

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._faults = count

    def take_fault(self) -> None:
        with self._lock:
            if self._faults > 0:
                self._faults -= 1
                raise PayPalError(503)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "id": e.event["id"],
                    "eventType": e.event["event_type"],
                    "createTime": e.event["create_time"],
                    "event": copy.deepcopy(e.event),
                    "deliveries": [d.public() for d in e.deliveries],
                }
                for e in reversed(self._events)
            ]

    # -- OAuth ------------------------------------------------------------------------------

    def issue_token(self, authorization: str | None, grant_type: str | None) -> dict[str, Any]:
        """Raises `_OAuthError` (OAuth's own error shape, as PayPal's token route uses)."""
        client = _basic_credentials(authorization)
        if client is None or not (
            secrets.compare_digest(client[0].encode(), self.client_id.encode())
            and secrets.compare_digest(client[1].encode(), self._client_secret.encode())
        ):
            raise _OAuthError(401, "invalid_client", "Client Authentication failed")
        if grant_type != "client_credentials":
            raise _OAuthError(
                400, "unsupported_grant_type", f"Grant Type is {grant_type or 'NULL'}"
            )
        token = f"A21AA{secrets.token_urlsafe(48)}"
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + self.token_seconds
        return {
            "scope": SCOPE,
            "access_token": token,
            "token_type": "Bearer",
            "app_id": APP_ID,
            "expires_in": self.token_seconds,
            "nonce": f"{_now()}{secrets.token_urlsafe(16)}",
        }

    def authenticate(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry < time.monotonic():
            raise PayPalError(401)

    # -- idempotency ------------------------------------------------------------------------

    def _replay(self, scope: str, request_id: str | None) -> tuple[int, dict[str, Any]] | None:
        if not request_id:
            return None
        found = self._replies.get((scope, request_id))
        return (found[0], copy.deepcopy(found[1])) if found else None

    def _remember(
        self, scope: str, request_id: str | None, status: int, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if request_id:
            self._replies[(scope, request_id)] = (status, copy.deepcopy(body))
        return status, body

    # -- orders -----------------------------------------------------------------------------

    def create_order(
        self, body: dict[str, Any], request_id: str | None, representation: bool
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            replay = self._replay("create-order", request_id)
            if replay:
                return replay
            units, return_url, cancel_url, wallet = _validate_order(body)
            now = _now()
            order = _Order(
                id=_paypal_id(),
                units=units,
                status="PAYER_ACTION_REQUIRED" if wallet else "CREATED",
                return_url=return_url,
                cancel_url=cancel_url,
                create_time=now,
                update_time=now,
            )
            self._orders[order.id] = order
            full = self._order_json(order)
            reply = full if representation else _minimal(full)
            return self._remember("create-order", request_id, 201, reply)

    def get_order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            return self._order_json(self._order(order_id))

    def approve(self, order_id: str) -> dict[str, Any]:
        """The buyer approves: APPROVED with a payer, and CHECKOUT.ORDER.APPROVED is sent.
        Approving an approved order changes nothing (a double click on the page)."""
        with self._lock:
            order = self._order(order_id)
            if order.status in ("CREATED", "PAYER_ACTION_REQUIRED"):
                order.status = "APPROVED"
                order.payer_id = _paypal_id(13)
                order.update_time = _now()
                resource = self._order_json(order)
                self._emit(
                    "CHECKOUT.ORDER.APPROVED",
                    "checkout-order",
                    "An order has been approved by buyer",
                    resource,
                )
            elif order.status == "COMPLETED":
                raise PayPalError(422, "ORDER_ALREADY_CAPTURED")
            return self._order_json(order)

    def return_target(self, order_id: str, approved: bool) -> str | None:
        """Where the approval page sends the buyer back to, with PayPal's query parameters."""
        with self._lock:
            order = self._order(order_id)
            if approved:
                if order.return_url is None:
                    return None
                return _with_query(order.return_url, token=order.id, PayerID=order.payer_id or "")
            if order.cancel_url is None:
                return None
            return _with_query(order.cancel_url, token=order.id)

    def capture_order(
        self, order_id: str, request_id: str | None, representation: bool
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            scope = f"capture:{order_id}"
            replay = self._replay(scope, request_id)
            if replay:
                return replay
            order = self._order(order_id)
            if order.status == "COMPLETED":
                raise PayPalError(422, "ORDER_ALREADY_CAPTURED")
            if order.status == "PAYER_ACTION_REQUIRED":
                raise PayPalError(422, "PAYER_ACTION_REQUIRED")
            if order.status != "APPROVED":
                raise PayPalError(422, "ORDER_NOT_APPROVED")
            for unit in order.units:
                invoice_id = unit.extra.get("invoice_id")
                if invoice_id and any(
                    c.extra.get("invoice_id") == invoice_id and c.status != "DENIED"
                    for c in self._captures.values()
                ):
                    raise PayPalError(
                        422,
                        "DUPLICATE_INVOICE_ID",
                        field=f"/purchase_units/@reference_id=='{unit.reference_id}'/invoice_id",
                        value=invoice_id,
                    )
            now = _now()
            for unit in order.units:
                capture = _Capture(
                    id=_paypal_id(),
                    order_id=order.id,
                    amount=unit.amount,
                    currency=unit.currency,
                    fee=_fee(unit.amount, unit.currency),
                    extra={k: v for k, v in unit.extra.items() if k in ("custom_id", "invoice_id")},
                    status="COMPLETED",
                    create_time=now,
                    update_time=now,
                )
                self._captures[capture.id] = capture
                unit.capture_ids.append(capture.id)
                self._emit(
                    "PAYMENT.CAPTURE.COMPLETED",
                    "capture",
                    f"Payment completed for {_summary_money(capture.amount, capture.currency)}",
                    self._capture_json(capture),
                )
            order.status = "COMPLETED"
            order.update_time = now
            full = self._order_json(order)
            reply = full if representation else _minimal_capture(full)
            return self._remember(scope, request_id, 201, reply)

    # -- payments ---------------------------------------------------------------------------

    def get_capture(self, capture_id: str) -> dict[str, Any]:
        with self._lock:
            return self._capture_json(self._capture(capture_id))

    def get_refund(self, refund_id: str) -> dict[str, Any]:
        with self._lock:
            refund = self._refunds.get(refund_id)
            if refund is None:
                raise _not_found()
            return self._refund_json(refund)

    def refund(
        self, capture_id: str, body: dict[str, Any], request_id: str | None, representation: bool
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            scope = f"refund:{capture_id}"
            replay = self._replay(scope, request_id)
            if replay:
                return replay
            capture = self._capture(capture_id)
            remaining = capture.amount - capture.refunded
            if capture.status == "REFUNDED" or remaining <= 0:
                raise PayPalError(422, "CAPTURE_FULLY_REFUNDED")
            if capture.status not in ("COMPLETED", "PARTIALLY_REFUNDED"):
                raise PayPalError(422, "REFUND_NOT_ALLOWED")
            if body.get("amount") is None:
                amount = remaining
            else:
                amount, currency = _parse_money(body["amount"], "/amount")
                if currency != capture.currency:
                    raise PayPalError(
                        422,
                        "REFUND_CAPTURE_CURRENCY_MISMATCH",
                        field="/amount/currency_code",
                        value=currency,
                    )
                if amount > remaining:
                    raise PayPalError(
                        422,
                        "REFUND_AMOUNT_EXCEEDED",
                        field="/amount/value",
                        value=body["amount"].get("value"),
                    )
            extra = {
                k: body[k]
                for k in ("note_to_payer", "invoice_id", "custom_id")
                if isinstance(body.get(k), str)
            }
            capture.refunded += amount
            capture.status = (
                "REFUNDED" if capture.refunded >= capture.amount else "PARTIALLY_REFUNDED"
            )
            capture.update_time = _now()
            refund = _Refund(
                id=_paypal_id(),
                capture_id=capture.id,
                amount=amount,
                currency=capture.currency,
                total_refunded=capture.refunded,
                extra=extra,
                create_time=capture.update_time,
            )
            self._refunds[refund.id] = refund
            capture.refund_ids.append(refund.id)
            full = self._refund_json(refund)
            self._emit(
                "PAYMENT.CAPTURE.REFUNDED",
                "refund",
                f"A {_summary_money(amount, refund.currency)} capture payment was refunded",
                full,
            )
            reply = full if representation else _minimal(full)
            return self._remember(scope, request_id, 201, reply)

    def deny_capture(self, capture_id: str) -> dict[str, Any]:
        """A capture PayPal later denies (a failed review): DENIED, and PAYMENT.CAPTURE.DENIED."""
        with self._lock:
            capture = self._capture(capture_id)
            if capture.status != "COMPLETED":
                raise ValueError(f"the capture is {capture.status}; only a COMPLETED one is denied")
            capture.status = "DENIED"
            capture.update_time = _now()
            resource = self._capture_json(capture)
            self._emit(
                "PAYMENT.CAPTURE.DENIED",
                "capture",
                f"A payment capture for {_summary_money(capture.amount, capture.currency)} was denied",
                resource,
            )
            return resource

    # -- webhooks ---------------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any]:
        with self._lock:
            for e in self._events:
                if e.event["id"] == event_id:
                    return copy.deepcopy(e.event)
        raise _not_found()

    def verify(self, body: dict[str, Any]) -> bool:
        """PayPal's verify-webhook-signature: does `transmission_sig` sign this event? (See
        the module docstring for how the CRC of a parsed event is recovered.)"""
        fields = (
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
        )
        for name in (*fields, "webhook_event"):
            if body.get(name) in (None, ""):
                raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field=f"/{name}")
        if not all(isinstance(body[name], str) for name in fields) or not isinstance(
            body["webhook_event"], dict
        ):
            raise PayPalError(400, "INVALID_PARAMETER_SYNTAX")
        if body["auth_algo"] != AUTH_ALGO or body["cert_url"] != self.cert_url:
            return False
        event = body["webhook_event"]
        with self._lock:
            sent = next(
                (
                    e.body
                    for e in self._events
                    if e.event.get("id") == event.get("id") and e.event == event
                ),
                None,
            )
        raw = sent if sent is not None else serialize(event)
        message = signed_message(
            body["transmission_id"], body["transmission_time"], body["webhook_id"], raw
        )
        return self.signer.verify(message, body["transmission_sig"])

    def _emit(
        self, event_type: str, resource_type: str, summary: str, resource: dict[str, Any]
    ) -> None:
        event_id = f"WH-{_paypal_id()}-{_paypal_id()}"
        event: dict[str, Any] = {
            "id": event_id,
            "event_version": "1.0",
            "create_time": _now_ms(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
            "links": [
                {
                    "href": f"{self.base_url}/v1/notifications/webhooks-events/{event_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base_url}/v1/notifications/webhooks-events/{event_id}/resend",
                    "rel": "resend",
                    "method": "POST",
                },
            ],
        }
        record = _Event(
            event, serialize(event), [_Delivery(t.url, t.webhook_id) for t in self.webhooks]
        )
        self._events.append(record)
        if self._closed:
            return
        for delivery in record.deliveries:
            self._pool.submit(self._deliver, record.body, delivery)

    def _deliver(self, body: bytes, delivery: _Delivery) -> None:
        for delay in self.delivery_delays:
            time.sleep(delay)
            with self._lock:
                if self._closed:
                    return
            transmission_id = str(uuid.uuid4())
            transmission_time = _now()
            signature = self.signer.sign(
                signed_message(transmission_id, transmission_time, delivery.webhook_id, body)
            )
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "PayPal/AUHD-214.0-RelaySandbox",
                "PAYPAL-TRANSMISSION-ID": transmission_id,
                "PAYPAL-TRANSMISSION-TIME": transmission_time,
                "PAYPAL-TRANSMISSION-SIG": signature,
                "PAYPAL-CERT-URL": self.cert_url,
                "PAYPAL-AUTH-ALGO": AUTH_ALGO,
            }
            status: int | None = None
            error: str | None = None
            try:
                status = self._http.post(delivery.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            except RuntimeError:  # the client was closed while we slept: shutting down
                return
            with self._lock:
                delivery.attempts += 1
                delivery.transmission_id = transmission_id
                delivery.response_status = status
                delivery.error = error
                if status is not None and 200 <= status < 300:
                    delivery.status = "delivered"
                    return
            logger.info("PayPal sandbox webhook to %s: %s", delivery.url, status or error)
        with self._lock:
            delivery.status = "failed"

    # -- rendering --------------------------------------------------------------------------

    def _order(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise _not_found()
        return order

    def _capture(self, capture_id: str) -> _Capture:
        capture = self._captures.get(capture_id)
        if capture is None:
            raise _not_found()
        return capture

    def _payer(self, order: _Order) -> dict[str, Any]:
        return {
            "name": dict(BUYER_NAME),
            "email_address": BUYER_EMAIL,
            "payer_id": order.payer_id,
            "address": {"country_code": "US"},
        }

    def _order_json(self, order: _Order) -> dict[str, Any]:
        base = f"{self.base_url}/v2/checkout/orders/{order.id}"
        units = []
        for unit in order.units:
            rendered: dict[str, Any] = {
                "reference_id": unit.reference_id,
                "amount": _money(unit.amount, unit.currency),
                "payee": dict(MERCHANT),
                **copy.deepcopy(unit.extra),
            }
            if unit.capture_ids:
                captures = [self._captures[c] for c in unit.capture_ids]
                payments: dict[str, Any] = {"captures": [self._capture_json(c) for c in captures]}
                refunds = [self._refunds[r] for c in captures for r in c.refund_ids]
                if refunds:
                    payments["refunds"] = [self._refund_json(r) for r in refunds]
                rendered["payments"] = payments
            units.append(rendered)
        body: dict[str, Any] = {"id": order.id, "intent": "CAPTURE", "status": order.status}
        if order.payer_id is not None:
            body["payment_source"] = {
                "paypal": {
                    "email_address": BUYER_EMAIL,
                    "account_id": order.payer_id,
                    "account_status": "VERIFIED",
                    "name": dict(BUYER_NAME),
                    "address": {"country_code": "US"},
                }
            }
        body["purchase_units"] = units
        if order.payer_id is not None:
            body["payer"] = self._payer(order)
        body["create_time"] = order.create_time
        body["update_time"] = order.update_time
        checkout = f"{self.base_url}/checkoutnow?token={order.id}"
        links = [{"href": base, "rel": "self", "method": "GET"}]
        if order.status == "PAYER_ACTION_REQUIRED":
            links.append({"href": checkout, "rel": "payer-action", "method": "GET"})
        elif order.status in ("CREATED", "APPROVED"):
            if order.status == "CREATED":
                links.append({"href": checkout, "rel": "approve", "method": "GET"})
            links.append({"href": base, "rel": "update", "method": "PATCH"})
            links.append({"href": f"{base}/capture", "rel": "capture", "method": "POST"})
        body["links"] = links
        return body

    def _capture_json(self, capture: _Capture) -> dict[str, Any]:
        base = f"{self.base_url}/v2/payments/captures/{capture.id}"
        body: dict[str, Any] = {
            "id": capture.id,
            "status": capture.status,
            "amount": _money(capture.amount, capture.currency),
            "final_capture": True,
            "seller_protection": {
                "status": "ELIGIBLE",
                "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
            },
            "seller_receivable_breakdown": {
                "gross_amount": _money(capture.amount, capture.currency),
                "paypal_fee": _money(capture.fee, capture.currency),
                "net_amount": _money(capture.amount - capture.fee, capture.currency),
            },
            **copy.deepcopy(capture.extra),
            "supplementary_data": {"related_ids": {"order_id": capture.order_id}},
            "links": [
                {"href": base, "rel": "self", "method": "GET"},
                {"href": f"{base}/refund", "rel": "refund", "method": "POST"},
                {
                    "href": f"{self.base_url}/v2/checkout/orders/{capture.order_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
            "create_time": capture.create_time,
            "update_time": capture.update_time,
        }
        if capture.status == "DENIED":
            body["links"] = body["links"][:1] + body["links"][2:]
        return body

    def _refund_json(self, refund: _Refund) -> dict[str, Any]:
        return {
            "id": refund.id,
            "amount": _money(refund.amount, refund.currency),
            **copy.deepcopy(refund.extra),
            "seller_payable_breakdown": {
                "gross_amount": _money(refund.amount, refund.currency),
                "paypal_fee": _money(Decimal(0), refund.currency),
                "net_amount": _money(refund.amount, refund.currency),
                "total_refunded_amount": _money(refund.total_refunded, refund.currency),
            },
            "status": "COMPLETED",
            "create_time": refund.create_time,
            "update_time": refund.create_time,
            "links": [
                {
                    "href": f"{self.base_url}/v2/payments/refunds/{refund.id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base_url}/v2/payments/captures/{refund.capture_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


def _not_found() -> PayPalError:
    return PayPalError(404, "INVALID_RESOURCE_ID", location="path")


def _minimal(full: dict[str, Any]) -> dict[str, Any]:
    return {"id": full["id"], "status": full["status"], "links": full["links"]}


def _minimal_capture(order: dict[str, Any]) -> dict[str, Any]:
    """PayPal's minimal capture answer still says what was captured."""
    body: dict[str, Any] = {k: order[k] for k in ("id", "status", "payment_source") if k in order}
    body["purchase_units"] = [
        {"reference_id": unit["reference_id"], "payments": unit.get("payments", {})}
        for unit in order["purchase_units"]
    ]
    if "payer" in order:
        body["payer"] = order["payer"]
    body["links"] = order["links"]
    return body


def _summary_money(amount: Decimal, currency: str) -> str:
    return f"{_money(amount, currency)['value']} {currency}"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _validate_order(body: dict[str, Any]) -> tuple[list[_Unit], str | None, str | None, bool]:
    """A create-order body checked as PayPal checks it; returns the purchase units, the
    return and cancel URLs, and whether a PayPal wallet experience_context was used."""
    intent = body.get("intent")
    if intent is None:
        raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field="/intent")
    if intent != "CAPTURE":
        # AUTHORIZE is PayPal's too, but Relay captures at once; the sandbox models CAPTURE only.
        raise PayPalError(400, "INVALID_PARAMETER_VALUE", field="/intent", value=str(intent))
    raw_units = body.get("purchase_units")
    if not isinstance(raw_units, list) or not raw_units:
        raise PayPalError(400, "MISSING_REQUIRED_PARAMETER", field="/purchase_units")
    if len(raw_units) > 10:
        raise PayPalError(400, "INVALID_ARRAY_MAX_ITEMS", field="/purchase_units")
    units: list[_Unit] = []
    for raw in raw_units:
        if not isinstance(raw, dict):
            raise PayPalError(400, "INVALID_PARAMETER_SYNTAX", field="/purchase_units")
        reference_id = raw.get("reference_id", "default")
        if len(raw_units) > 1 and "reference_id" not in raw:
            raise PayPalError(
                400,
                "MISSING_REQUIRED_PARAMETER",
                "A required field is missing. reference_id is required with more than one purchase unit.",
                field="/purchase_units/reference_id",
            )
        if any(u.reference_id == reference_id for u in units):
            raise PayPalError(
                422,
                "DUPLICATE_REFERENCE_ID",
                field="/purchase_units/reference_id",
                value=str(reference_id),
            )
        path = f"/purchase_units/@reference_id=='{reference_id}'"
        amount, currency = _parse_money(raw.get("amount"), f"{path}/amount")
        extra: dict[str, Any] = {}
        for name, limit in (
            ("reference_id", 256),
            ("custom_id", 127),
            ("invoice_id", 127),
            ("description", 127),
            ("soft_descriptor", 22),
        ):
            value = raw.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not 1 <= len(value) <= limit:
                raise PayPalError(
                    400, "INVALID_STRING_LENGTH", field=f"{path}/{name}", value=str(value)
                )
            if name != "reference_id":
                extra[name] = value
        units.append(_Unit(str(reference_id), amount, currency, extra))
    if len({u.currency for u in units}) > 1:
        raise PayPalError(422, "CURRENCY_MISMATCH", field="/purchase_units")
    context = _object(body.get("application_context"))
    wallet_context = _object(_object(body.get("payment_source")).get("paypal")).get(
        "experience_context"
    )
    wallet = isinstance(wallet_context, dict)
    urls: dict[str, str | None] = {}
    for name in ("return_url", "cancel_url"):
        value = _object(wallet_context).get(name) or context.get(name)
        if value is not None and not (
            isinstance(value, str) and urlsplit(value).scheme in ("http", "https")
        ):
            raise PayPalError(
                400,
                "INVALID_PARAMETER_SYNTAX",
                field=f"/application_context/{name}",
                value=str(value),
            )
        urls[name] = value
    return units, urls["return_url"], urls["cancel_url"], wallet


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- HTTP ----------------------------------------------------------------------------------

Handler = Callable[[PayPalState, Request], Awaitable[Response]]


def _state(request: Request) -> PayPalState:
    state: PayPalState = request.app.state.paypal
    return state


async def _json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip() and not required:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise PayPalError(400, "MALFORMED_REQUEST_JSON", location="body")
    return body


def _representation(request: Request) -> bool:
    return "return=representation" in request.headers.get("prefer", "").replace(" ", "").lower()


def _api(
    handler: Handler, *, authenticated: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    """A PayPal API route: faults first (the provider is down), then the bearer token."""

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        try:
            state.take_fault()
            if authenticated:
                state.authenticate(request.headers.get("authorization"))
            return await handler(state, request)
        except PayPalError as exc:
            return exc.response()

    return endpoint


def _sandbox(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(_state(request), request)
        except PayPalError as exc:
            return exc.response()

    return endpoint


async def _token(state: PayPalState, request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant_type = form["grant_type"][0] if form.get("grant_type") else None
    try:
        body = state.issue_token(request.headers.get("authorization"), grant_type)
    except _OAuthError as exc:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status)
    return JSONResponse(body)


async def _create_order(state: PayPalState, request: Request) -> Response:
    status, body = state.create_order(
        await _json_body(request),
        request.headers.get("paypal-request-id"),
        _representation(request),
    )
    return JSONResponse(body, status)


async def _get_order(state: PayPalState, request: Request) -> Response:
    return JSONResponse(state.get_order(request.path_params["order_id"]))


async def _capture_order(state: PayPalState, request: Request) -> Response:
    await _json_body(request, required=False)
    status, body = state.capture_order(
        request.path_params["order_id"],
        request.headers.get("paypal-request-id"),
        _representation(request),
    )
    return JSONResponse(body, status)


async def _get_capture(state: PayPalState, request: Request) -> Response:
    return JSONResponse(state.get_capture(request.path_params["capture_id"]))


async def _refund_capture(state: PayPalState, request: Request) -> Response:
    status, body = state.refund(
        request.path_params["capture_id"],
        await _json_body(request, required=False),
        request.headers.get("paypal-request-id"),
        _representation(request),
    )
    return JSONResponse(body, status)


async def _get_refund(state: PayPalState, request: Request) -> Response:
    return JSONResponse(state.get_refund(request.path_params["refund_id"]))


async def _verify(state: PayPalState, request: Request) -> Response:
    ok = state.verify(await _json_body(request))
    return JSONResponse({"verification_status": "SUCCESS" if ok else "FAILURE"})


async def _get_event(state: PayPalState, request: Request) -> Response:
    return JSONResponse(state.get_event(request.path_params["event_id"]))


async def _certificate(state: PayPalState, request: Request) -> Response:
    if request.path_params["cert_id"] != state.cert_id:
        raise _not_found()
    return Response(state.signer.pem, media_type="application/x-pem-file")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PayPal sandbox checkout</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}
button{{font-size:1rem;padding:.5rem 1.5rem;margin-right:1rem}}</style></head>
<body><h1>PayPal sandbox</h1>
<p>Relay's local PayPal. Order <code>{order_id}</code>: <strong>{amount}</strong></p>
<p>Status: {status}</p>
{form}
</body></html>
"""

_FORM = """<form method="post" action="/checkoutnow?token={order_id}">
<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="cancel">Cancel</button>
</form>"""


async def _checkout(request: Request) -> Response:
    """The buyer's page. GET shows the order; the form POSTs `action=approve|cancel`."""
    state = _state(request)
    order_id = request.query_params.get("token", "")
    try:
        order = state.get_order(order_id)
    except PayPalError:
        return HTMLResponse("<!doctype html><p>This order does not exist.</p>", 404)
    if request.method == "POST":
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        approved = (form.get("action") or [""])[0] == "approve"
        if approved:
            try:
                order = state.approve(order_id)
            except PayPalError as exc:
                return HTMLResponse(f"<!doctype html><p>{html.escape(exc.description)}</p>", 422)
        target = state.return_target(order_id, approved)
        if target is not None:
            return RedirectResponse(target, status_code=303)
        message = "approved" if approved else "cancelled"
        return HTMLResponse(f"<!doctype html><p>Payment {message}. You can close this window.</p>")
    units = order["purchase_units"]
    amount = ", ".join(f"{u['amount']['value']} {u['amount']['currency_code']}" for u in units)
    pending = order["status"] in ("CREATED", "PAYER_ACTION_REQUIRED")
    return HTMLResponse(
        _PAGE.format(
            order_id=html.escape(order_id),
            amount=html.escape(amount),
            status=html.escape(order["status"]),
            form=_FORM.format(order_id=html.escape(order_id)) if pending else "",
        )
    )


async def _control_approve(state: PayPalState, request: Request) -> Response:
    return JSONResponse(state.approve(request.path_params["order_id"]))


async def _control_deny(state: PayPalState, request: Request) -> Response:
    try:
        return JSONResponse(state.deny_capture(request.path_params["capture_id"]))
    except ValueError as exc:
        return JSONResponse({"name": "CONFLICT", "message": str(exc)}, 409)


async def _control_events(state: PayPalState, request: Request) -> Response:
    raw = request.query_params.get("limit", str(EVENTS_LIMIT))
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        raise PayPalError(
            400,
            "INVALID_PARAMETER_VALUE",
            f"limit must be between 1 and {MAX_EVENTS_LIMIT}.",
            field="limit",
            location="query",
        )
    return JSONResponse({"data": state.events()[:limit]})


async def _control_webhooks(state: PayPalState, request: Request) -> Response:
    if request.method == "POST":
        body = await _json_body(request)
        url, webhook_id = body.get("url"), body.get("webhookId")
        if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
            raise PayPalError(
                400, "INVALID_PARAMETER_VALUE", "url must be an http(s) URL.", field="/url"
            )
        if not (isinstance(webhook_id, str) and webhook_id):
            raise PayPalError(
                400, "MISSING_REQUIRED_PARAMETER", "webhookId is required.", field="/webhookId"
            )
        state.add_webhook(url, webhook_id)
    return JSONResponse(
        {"webhooks": [{"url": t.url, "webhookId": t.webhook_id} for t in state.webhooks]}
    )


async def _control_faults(state: PayPalState, request: Request) -> Response:
    count = (await _json_body(request)).get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise PayPalError(
            400, "INVALID_PARAMETER_VALUE", "count must be a whole number.", field="/count"
        )
    state.fail_next(count)
    return JSONResponse({"count": count})


def create_app(state: PayPalState) -> Starlette:
    """The ASGI app serving `state`."""
    routes = [
        Route("/v1/oauth2/token", _api(_token, authenticated=False), methods=["POST"]),
        Route("/v2/checkout/orders", _api(_create_order), methods=["POST"]),
        Route("/v2/checkout/orders/{order_id}", _api(_get_order), methods=["GET"]),
        Route("/v2/checkout/orders/{order_id}/capture", _api(_capture_order), methods=["POST"]),
        Route("/v2/payments/captures/{capture_id}", _api(_get_capture), methods=["GET"]),
        Route("/v2/payments/captures/{capture_id}/refund", _api(_refund_capture), methods=["POST"]),
        Route("/v2/payments/refunds/{refund_id}", _api(_get_refund), methods=["GET"]),
        Route("/v1/notifications/verify-webhook-signature", _api(_verify), methods=["POST"]),
        Route("/v1/notifications/webhooks-events/{event_id}", _api(_get_event), methods=["GET"]),
        Route("/v1/notifications/certs/{cert_id}", _sandbox(_certificate), methods=["GET"]),
        Route("/checkoutnow", _checkout, methods=["GET", "POST"]),
        Route("/_sandbox/orders/{order_id}/approve", _sandbox(_control_approve), methods=["POST"]),
        Route("/_sandbox/captures/{capture_id}/deny", _sandbox(_control_deny), methods=["POST"]),
        Route("/_sandbox/events", _sandbox(_control_events), methods=["GET"]),
        Route("/_sandbox/webhooks", _sandbox(_control_webhooks), methods=["GET", "POST"]),
        Route("/_sandbox/faults", _sandbox(_control_faults), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.paypal = state
    return app


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no PayPal client id: the sandbox stands in for PayPal."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.paypal_client_id is None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _generated_webhook_id() -> str:
    return _paypal_id()


@dataclass
class PayPalSandbox:
    """One PayPal sandbox server: its command, the settings that point Relay at it, and a way
    to run it in this process (tests). `port=0` with `run_in_thread` binds a free port."""

    port: int = field(default_factory=_free_port)
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    # PayPal's webhook ids are alphanumeric (the verify API checks ^[a-zA-Z0-9]+$).
    webhook_id: str = field(default_factory=_generated_webhook_id)
    webhook_url: str | None = None
    host: str = "127.0.0.1"

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line; the default credentials are not repeated on it (they show in
        process listings), a non-default secret would be."""
        command = [sys.executable, "-m", "relay.sandbox.paypal", "--port", str(self.port)]
        command += ["--host", self.host, "--client-id", self.client_id]
        if self.client_secret != SANDBOX_CLIENT_SECRET:
            command += ["--client-secret", self.client_secret]
        command += ["--webhook-id", self.webhook_id]
        if self.webhook_url is not None:
            command += ["--webhook-url", self.webhook_url]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's PayPal code here."""
        return {
            "PAYPAL_CLIENT_ID": self.client_id,
            "PAYPAL_CLIENT_SECRET": self.client_secret,
            "PAYPAL_MODE": "sandbox",
            "PAYPAL_API_BASE": self.api_base,
            "PAYPAL_WEBHOOK_ID": self.webhook_id,
        }

    def state(self) -> PayPalState:
        webhooks = [WebhookTarget(self.webhook_url, self.webhook_id)] if self.webhook_url else []
        return PayPalState(
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhooks=webhooks,
            base_url=self.api_base,
        )

    def ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, self.port)) == 0

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ConfigError(f"the PayPal sandbox did not open port {self.port} in {timeout}s")
            time.sleep(0.1)

    def register_webhook(self, url: str, webhook_id: str | None = None) -> None:
        """Have the running sandbox send its events to `url`, signed for `webhook_id`."""
        body = {"url": url, "webhookId": webhook_id or self.webhook_id}
        httpx.post(f"{self.api_base}/_sandbox/webhooks", json=body).raise_for_status()

    def run_in_thread(self) -> PayPalServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return PayPalServer(self).start()


class PayPalServer:
    """A sandbox served by uvicorn in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: PayPalSandbox) -> None:
        self.sandbox = sandbox
        self._socket = socket.socket()
        self._socket.bind((sandbox.host, sandbox.port))
        sandbox.port = int(self._socket.getsockname()[1])
        self.state = sandbox.state()
        config = uvicorn.Config(
            create_app(self.state), log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> PayPalServer:
        self._thread.start()
        deadline = time.monotonic() + READY_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ConfigError("the PayPal sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        self.state.close()

    def __enter__(self) -> PayPalServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> PayPalSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real PayPal, or none)."""
    return PayPalSandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: PayPalSandbox | None) -> str:
    """The banner's line for PayPal."""
    if sandbox is not None:
        return f"sandboxed (local PayPal at {sandbox.api_base})"
    if settings.paypal_client_id is not None:
        mode = settings.paypal_mode
        default = "api-m.paypal.com" if mode == "live" else "api-m.sandbox.paypal.com"
        return f"real ({settings.paypal_api_base or default}, {mode})"
    return "not configured (set PAYPAL_CLIENT_ID, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.paypal", description="Relay's local PayPal sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--client-id", default=SANDBOX_CLIENT_ID)
    parser.add_argument("--client-secret", default=SANDBOX_CLIENT_SECRET)
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-id", default=None)
    args = parser.parse_args(argv)
    sandbox = PayPalSandbox(
        port=args.port,
        host=args.host,
        client_id=args.client_id,
        client_secret=args.client_secret,
        webhook_id=args.webhook_id or _generated_webhook_id(),
        webhook_url=args.webhook_url,
    )
    logging.basicConfig(level=logging.INFO, format="paypal-sandbox: %(message)s")
    state = sandbox.state()
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")
    finally:
        state.close()


if __name__ == "__main__":
    main()
