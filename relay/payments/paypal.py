"""PayPal Orders v2 / Payments v2 for payments: amounts, reading an order, the REST client.

The client is httpx against PayPal's documented REST API (docs/payments.md, "Choosing
the PayPal client", says why not `paypal-server-sdk`). One `PayPalClient` per process:
it fetches the OAuth client-credentials token (HTTP Basic client id and secret) when
first needed and keeps it in memory until shortly before it expires, so tokens never
cross Temporal. `PAYPAL_API_BASE` (scheme, host, port) points it at the local sandbox;
unset, `PAYPAL_MODE` picks api-m.sandbox.paypal.com or api-m.paypal.com.

Errors are classified here, once: PayPal refusing what the client asked (400/422, e.g.
ORDER_NOT_APPROVED, REFUND_AMOUNT_EXCEEDED) is non-retryable with PayPal's issue in the
details; PayPal failing (5xx, 429, no connection) is transient, retried by Temporal.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.payments.contracts import IntentSnapshot, RefundView
from relay.provider_errors import error_for_status, translate
from relay.settings import Settings

PROVIDER = "paypal"
LIVE_BASE = "https://api-m.paypal.com"
SANDBOX_BASE = "https://api-m.sandbox.paypal.com"
TIMEOUT_SECONDS = 20.0
# A token is fetched again this long before PayPal says it expires.
TOKEN_MARGIN_SECONDS = 300.0

# PayPal's Orders v2 currencies, and those it takes without decimals.
CURRENCIES = frozenset(
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD SEK CHF "
    "THB USD".split()
)
# ISO 4217 has no minor unit for these: `amount` 500 is ¥500.
ZERO_DECIMAL = frozenset({"JPY"})
# ISO 4217 gives these two decimals (Relay's `amount` is in their minor unit, as Stripe
# takes them), but PayPal accepts whole units only: the amount must be a multiple of 100.
WHOLE_UNITS_ONLY = frozenset({"HUF", "TWD"})

# PayPal's issues that are the state of the payment, not a bad request: 409 CONFLICT.
CONFLICT_ISSUES = frozenset(
    {
        "ORDER_NOT_APPROVED",
        "PAYER_ACTION_REQUIRED",
        "ORDER_ALREADY_CAPTURED",
        "CAPTURE_FULLY_REFUNDED",
        "REFUND_AMOUNT_EXCEEDED",
        "REFUND_NOT_ALLOWED",
    }
)
# PayPal's refund statuses as the lower-case ones Relay's refund accounting uses.
_REFUND_STATUS = {
    "COMPLETED": "succeeded",
    "PENDING": "pending",
    "FAILED": "failed",
    "CANCELLED": "canceled",
}


# --- amounts ------------------------------------------------------------------------------


def amount_problem(amount: int, currency: str) -> str | None:
    """Why PayPal cannot take this amount in this currency, or None."""
    code = currency.upper()
    if code not in CURRENCIES:
        return f"PayPal does not take {code}"
    if code in WHOLE_UNITS_ONLY and amount % 100:
        return f"PayPal takes {code} in whole units only: a multiple of 100"
    return None


def to_value(amount: int, currency: str) -> str:
    """Minor units as PayPal's decimal string: 9999 USD → "99.99", 500 JPY → "500",
    1500 TWD → "15"."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return str(amount)
    if code in WHOLE_UNITS_ONLY:
        return str(amount // 100)
    return f"{Decimal(amount) / 100:.2f}"


def from_value(value: object, currency: str) -> int:
    """PayPal's decimal string in minor units (the inverse of `to_value`)."""
    number = Decimal(str(value or "0"))
    if currency.upper() in ZERO_DECIMAL:
        return int(number)
    return int(number * 100)


# --- reading an order ---------------------------------------------------------------------


def _link(body: dict[str, Any], *rels: str) -> str | None:
    for link in body.get("links") or []:
        if link.get("rel") in rels and isinstance(link.get("href"), str):
            return str(link["href"])
    return None


def order_snapshot(order: dict[str, Any]) -> IntentSnapshot:
    """An order (GET /v2/checkout/orders/{id}) as the workflow reads it: `status` is the
    order's, or, once captured, the capture's (COMPLETED, PENDING, DENIED,
    PARTIALLY_REFUNDED, REFUNDED); amounts in minor units; refunds with Relay's statuses."""
    units = order.get("purchase_units") or [{}]
    unit = units[0]
    money = unit.get("amount") or {}
    currency = str(money.get("currency_code") or "USD")
    payments = unit.get("payments") or {}
    captures = payments.get("captures") or []
    capture = captures[-1] if captures else None
    status = str(order.get("status") or "CREATED")
    captured = 0
    if capture is not None:
        status = f"CAPTURE_{capture.get('status') or 'PENDING'}"
        if capture.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"):
            captured = from_value((capture.get("amount") or {}).get("value"), currency)
    refunds = [
        RefundView(
            id=str(refund["id"]),
            amount=from_value((refund.get("amount") or {}).get("value"), currency),
            status=_REFUND_STATUS.get(str(refund.get("status")), "pending"),
        )
        for refund in payments.get("refunds") or []
    ]
    return IntentSnapshot(
        stripe_payment_intent_id="",
        status=status,
        amount=from_value(money.get("value"), currency),
        currency=currency.lower(),
        capture_method="automatic",
        relay_id=unit.get("custom_id"),
        description=unit.get("description"),
        amount_captured=captured,
        refunds=refunds,
        provider=PROVIDER,
        paypal_order_id=str(order["id"]),
        paypal_capture_id=str(capture["id"]) if capture else None,
        approve_url=_link(order, "approve", "payer-action")
        if status in ("CREATED", "PAYER_ACTION_REQUIRED")
        else None,
    )


# --- errors -------------------------------------------------------------------------------


def _issue(body: object) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    details = body.get("details") or [{}]
    first = details[0] if isinstance(details, list) and details else {}
    issue = first.get("issue") if isinstance(first, dict) else None
    return (issue or body.get("name")), (first.get("field") if isinstance(first, dict) else None)


def refusal(response: httpx.Response, field: str) -> ApplicationError:
    """PayPal's non-2xx answer as a Temporal failure (see the module docstring)."""
    status = response.status_code
    if status >= 500 or status in (408, 429):
        return error_for_status(PROVIDER, status, headers=response.headers)
    try:
        body = response.json()
    except ValueError:
        body = None
    issue, where = _issue(body)
    message = str((body or {}).get("message") or f"PayPal answered HTTP {status}")[:300]
    if status in (401, 403):
        return ApplicationError(
            "PayPal refused Relay's credentials (PAYPAL_CLIENT_ID / PAYPAL_CLIENT_SECRET)",
            {"provider": PROVIDER, "status": status},
            type=ErrorCode.PROVIDER_ERROR.value,
            non_retryable=True,
        )
    if issue in CONFLICT_ISSUES:
        return ApplicationError(
            f"PayPal refused: {issue}",
            {"provider": PROVIDER, "issue": issue, "message": message},
            type=ErrorCode.CONFLICT.value,
            non_retryable=True,
        )
    return ApplicationError(
        f"PayPal refused the request: {issue or status}",
        [
            {
                "field": field,
                "in": "body",
                "message": message,
                "code": issue,
                "param": where,
            }
        ],
        type=ErrorCode.VALIDATION_ERROR.value,
        non_retryable=True,
    )


# --- the client ---------------------------------------------------------------------------


def api_base(settings: Settings) -> str:
    if settings.paypal_api_base:
        return settings.paypal_api_base.rstrip("/")
    return LIVE_BASE if settings.paypal_mode == "live" else SANDBOX_BASE


def configured(settings: Settings) -> bool:
    return bool(settings.paypal_client_id and settings.paypal_client_secret)


class PayPalClient:
    """PayPal's REST API over httpx with a cached client-credentials token.

    `http` is the httpx client to use (a worker keeps one open); without one, each call
    opens and closes its own. The token is cached per instance and fetched again when
    it is about to expire or PayPal answers 401 (a revoked token), once per call.
    """

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._base = api_base(settings)
        self._http = http
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    @property
    def base(self) -> str:
        return self._base

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _credentials(self) -> tuple[str, str]:
        secret = self._settings.paypal_client_secret
        if not self._settings.paypal_client_id or secret is None:
            raise ApplicationError(
                "PayPal is not configured (PAYPAL_CLIENT_ID / PAYPAL_CLIENT_SECRET)",
                type=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
                non_retryable=True,
            )
        return self._settings.paypal_client_id, secret.get_secret_value()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._http is not None:
            return await self._http.request(method, url, **kwargs)
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            return await http.request(method, url, **kwargs)

    async def _bearer(self, *, renew: bool = False) -> str:
        async with self._token_lock:
            if not renew and self._token and time.monotonic() < self._token_until:
                return self._token
            try:
                response = await self._send(
                    "POST",
                    f"{self._base}/v1/oauth2/token",
                    auth=self._credentials(),
                    data={"grant_type": "client_credentials"},
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise translate(PROVIDER, exc) from None
            if response.status_code != 200:
                raise refusal(response, "credentials")
            body = response.json()
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 0)
            self._token_until = time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_SECONDS)
            return self._token

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        request_id: str | None = None,
        field: str = "id",
    ) -> dict[str, Any]:
        """One API call; its JSON answer, or the classified failure raised."""
        headers = {"Content-Type": "application/json", "Prefer": "return=representation"}
        if request_id:
            headers["PayPal-Request-Id"] = request_id
        for renew in (False, True):
            headers["Authorization"] = f"Bearer {await self._bearer(renew=renew)}"
            try:
                response = await self._send(
                    method, f"{self._base}{path}", json=json, headers=headers
                )
            except httpx.HTTPError as exc:
                raise translate(PROVIDER, exc) from None
            if response.status_code == 401 and not renew:
                continue  # a token PayPal no longer honours: fetch a new one, once
            if response.status_code >= 300:
                raise refusal(response, field)
            return response.json() if response.content else {}  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    # --- Orders v2 / Payments v2 ----------------------------------------------------------

    async def create_order(self, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        return await self.call(
            "POST", "/v2/checkout/orders", json=body, request_id=request_id, field="amount"
        )

    async def get_order(self, order_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/v2/checkout/orders/{order_id}")

    async def capture_order(self, order_id: str, request_id: str) -> dict[str, Any]:
        return await self.call(
            "POST", f"/v2/checkout/orders/{order_id}/capture", json={}, request_id=request_id
        )

    async def refund_capture(
        self, capture_id: str, body: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        return await self.call(
            "POST",
            f"/v2/payments/captures/{capture_id}/refund",
            json=body,
            request_id=request_id,
            field="amount",
        )

    async def verify_webhook(self, headers: dict[str, str], event: dict[str, Any]) -> bool:
        """POST /v1/notifications/verify-webhook-signature: PayPal says SUCCESS or FAILURE."""
        body = {
            "auth_algo": headers["auth_algo"],
            "cert_url": headers["cert_url"],
            "transmission_id": headers["transmission_id"],
            "transmission_sig": headers["transmission_sig"],
            "transmission_time": headers["transmission_time"],
            "webhook_id": self._settings.paypal_webhook_id,
            "webhook_event": event,
        }
        answer = await self.call("POST", "/v1/notifications/verify-webhook-signature", json=body)
        return answer.get("verification_status") == "SUCCESS"
