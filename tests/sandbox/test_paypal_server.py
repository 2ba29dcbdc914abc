"""The PayPal sandbox driven over HTTP on loopback as a PayPal client would drive PayPal:
OAuth, orders, the buyer's approval page, capture, refunds, and signed webhooks received by
a real receiver and checked both by the verify API and independently with the certificate."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relay.sandbox import paypal
from relay.sandbox.paypal import PayPalSandbox, PayPalServer
from relay.settings import Settings

RETURN_URL = "https://shop.example/paypal/return"
CANCEL_URL = "https://shop.example/paypal/cancel"
WAIT_SECONDS = 15


# --- a webhook receiver on loopback --------------------------------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Records every POST; answers 500 to the first `fail_first` of them."""

    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    refused: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, event_type: str, resource_id: str | None = None) -> Delivery:
        def found() -> Delivery | None:
            for delivery in self.deliveries:
                event = delivery.event
                if event["event_type"] == event_type and (
                    resource_id is None or event["resource"]["id"] == resource_id
                ):
                    return delivery
            return None

        with self.changed:
            if not self.changed.wait_for(found, timeout=WAIT_SECONDS):
                raise AssertionError(f"no {event_type} received")
            result = found()
            assert result is not None
            return result


def _serve_receiver(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.changed:
                refuse = receiver.refused < receiver.fail_first
                if refuse:
                    receiver.refused += 1
                else:
                    receiver.deliveries.append(
                        Delivery({k.upper(): v for k, v in self.headers.items()}, body)
                    )
                receiver.changed.notify_all()
            self.send_response(500 if refuse else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/paypal"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve_receiver(Receiver())


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    yield from _serve_receiver(Receiver(fail_first=1))


# --- the sandbox and a client --------------------------------------------------------------


@pytest.fixture
def sandbox(receiver: Receiver) -> Iterator[PayPalServer]:
    server = PayPalSandbox(port=0, webhook_url=receiver.url).run_in_thread()
    try:
        yield server
    finally:
        server.stop()


def _token(server: PayPalServer) -> str:
    response = httpx.post(
        f"{server.api_base}/v1/oauth2/token",
        auth=(server.sandbox.client_id, server.sandbox.client_secret),
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
def api(sandbox: PayPalServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {_token(sandbox)}"}
    with httpx.Client(base_url=sandbox.api_base, headers=headers) as client:
        yield client


def _order_body(value: str = "12.34", currency: str = "USD", **unit: object) -> dict[str, Any]:
    return {
        "intent": "CAPTURE",
        "purchase_units": [
            {"amount": {"currency_code": currency, "value": value}, "reference_id": "r1", **unit}
        ],
        "application_context": {"return_url": RETURN_URL, "cancel_url": CANCEL_URL},
    }


def _create(api: httpx.Client, **kwargs: Any) -> dict[str, Any]:
    response = api.post(
        "/v2/checkout/orders",
        json=_order_body(**kwargs),
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def _link(resource: dict[str, Any], rel: str) -> str:
    return next(link["href"] for link in resource["links"] if link["rel"] == rel)


def _issue(response: httpx.Response) -> str:
    issue: str = response.json()["details"][0]["issue"]
    return issue


class _FormParser(HTMLParser):
    """The approval page's form: its action and the submit buttons' name/value pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.buttons: dict[str, tuple[str, str]] = {}
        self._button: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action, self.method = values.get("action"), values.get("method")
        elif tag == "button":
            self._button = (values.get("name", ""), values.get("value", ""))

    def handle_data(self, data: str) -> None:
        if self._button is not None and data.strip():
            self.buttons[data.strip()] = self._button
            self._button = None


def _press(api: httpx.Client, approve_url: str, label: str) -> httpx.Response:
    """Open the approval page as a browser would and press the button called `label`."""
    page = httpx.get(approve_url)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    form = _FormParser()
    form.feed(page.text)
    assert form.method == "post" and form.action is not None
    name, value = form.buttons[label]
    return httpx.post(urljoin(approve_url, form.action), data={name: value})


def _approved_and_captured(api: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    order = _create(api)
    assert api.post(f"/_sandbox/orders/{order['id']}/approve").status_code == 200
    response = api.post(
        f"/v2/checkout/orders/{order['id']}/capture",
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 201, response.text
    captured: dict[str, Any] = response.json()
    return captured, captured["purchase_units"][0]["payments"]["captures"][0]


# --- OAuth and authorisation ---------------------------------------------------------------


def test_token_is_issued_for_the_client_credentials(sandbox: PayPalServer) -> None:
    response = httpx.post(
        f"{sandbox.api_base}/v1/oauth2/token",
        auth=(paypal.SANDBOX_CLIENT_ID, paypal.SANDBOX_CLIENT_SECRET),
        data={"grant_type": "client_credentials"},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["app_id"].startswith("APP-")
    assert body["scope"] and body["access_token"]


def test_token_refused_for_a_wrong_secret_or_grant(sandbox: PayPalServer) -> None:
    url = f"{sandbox.api_base}/v1/oauth2/token"
    wrong = httpx.post(
        url, auth=(paypal.SANDBOX_CLIENT_ID, "nope"), data={"grant_type": "client_credentials"}
    )
    no_grant = httpx.post(url, auth=(paypal.SANDBOX_CLIENT_ID, paypal.SANDBOX_CLIENT_SECRET))

    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert no_grant.status_code == 400
    assert no_grant.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-token-it-issued", f"Basic {base64.b64encode(b'a:b').decode()}"],
)
def test_api_refuses_calls_without_an_issued_bearer_token(
    sandbox: PayPalServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{sandbox.api_base}/v2/checkout/orders", json=_order_body(), headers=headers
    )

    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"
    assert httpx.get(f"{sandbox.api_base}/_sandbox/events").json()["data"] == []


# --- orders ------------------------------------------------------------------------------------


def test_create_order_is_idempotent_by_paypal_request_id(api: httpx.Client) -> None:
    headers = {"PayPal-Request-Id": "order-7f3a"}
    first = api.post("/v2/checkout/orders", json=_order_body(), headers=headers)
    again = api.post("/v2/checkout/orders", json=_order_body(), headers=headers)
    other = api.post("/v2/checkout/orders", json=_order_body())

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    # Prefer defaults to return=minimal, as at PayPal.
    assert set(first.json()) == {"id", "status", "links"}
    assert first.json()["status"] == "CREATED"
    assert [link["rel"] for link in first.json()["links"]] == [
        "self",
        "approve",
        "update",
        "capture",
    ]


def test_create_order_representation_and_get(api: httpx.Client, sandbox: PayPalServer) -> None:
    order = _create(api, custom_id="user-42", invoice_id="inv-1")

    fetched = api.get(f"/v2/checkout/orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order
    unit = order["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "12.34"}
    assert unit["reference_id"] == "r1"
    assert (unit["custom_id"], unit["invoice_id"]) == ("user-42", "inv-1")
    assert _link(order, "approve") == f"{sandbox.api_base}/checkoutnow?token={order['id']}"
    assert api.get("/v2/checkout/orders/NOSUCHORDER").status_code == 404


def test_wallet_experience_context_requires_payer_action(api: httpx.Client) -> None:
    body = {
        "intent": "CAPTURE",
        "purchase_units": [{"amount": {"currency_code": "EUR", "value": "5.00"}}],
        "payment_source": {
            "paypal": {"experience_context": {"return_url": RETURN_URL, "cancel_url": CANCEL_URL}}
        },
    }
    order = api.post("/v2/checkout/orders", json=body).json()

    assert order["status"] == "PAYER_ACTION_REQUIRED"
    assert [link["rel"] for link in order["links"]] == ["self", "payer-action"]
    refused = api.post(f"/v2/checkout/orders/{order['id']}/capture")
    assert refused.status_code == 422
    assert _issue(refused) == "PAYER_ACTION_REQUIRED"

    redirect = _press(api, _link(order, "payer-action"), "Approve")
    assert redirect.status_code == 303
    assert api.post(f"/v2/checkout/orders/{order['id']}/capture").status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "issue"),
    [
        (_order_body("12.345"), 422, "DECIMAL_PRECISION"),
        (_order_body("12,34"), 400, "INVALID_PARAMETER_SYNTAX"),
        (_order_body("abc"), 400, "INVALID_PARAMETER_SYNTAX"),
        (_order_body("0.00"), 422, "CANNOT_BE_ZERO_OR_NEGATIVE"),
        (_order_body("-1.00"), 422, "CANNOT_BE_ZERO_OR_NEGATIVE"),
        (_order_body("10.5", "JPY"), 422, "DECIMALS_NOT_SUPPORTED"),
        (_order_body("10.00", "XYZ"), 422, "CURRENCY_NOT_SUPPORTED"),
        ({"purchase_units": _order_body()["purchase_units"]}, 400, "MISSING_REQUIRED_PARAMETER"),
        ({"intent": "CAPTURE", "purchase_units": []}, 400, "MISSING_REQUIRED_PARAMETER"),
        ({**_order_body(), "intent": "SELL"}, 400, "INVALID_PARAMETER_VALUE"),
    ],
)
def test_create_order_validates_like_paypal(
    api: httpx.Client, body: dict[str, Any], status: int, issue: str
) -> None:
    response = api.post("/v2/checkout/orders", json=body)

    assert response.status_code == status
    error = response.json()
    assert error["name"] == ("UNPROCESSABLE_ENTITY" if status == 422 else "INVALID_REQUEST")
    assert error["details"][0]["issue"] == issue
    assert error["debug_id"]


def test_malformed_json_is_an_invalid_request(api: httpx.Client) -> None:
    response = api.post(
        "/v2/checkout/orders", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert _issue(response) == "MALFORMED_REQUEST_JSON"


# --- the buyer, capture, refunds -----------------------------------------------------------


def test_checkout_capture_and_refunds(api: httpx.Client) -> None:
    order = _create(api)
    order_id = order["id"]

    not_yet = api.post(f"/v2/checkout/orders/{order_id}/capture")
    assert not_yet.status_code == 422
    assert _issue(not_yet) == "ORDER_NOT_APPROVED"

    redirect = _press(api, _link(order, "approve"), "Approve")
    assert redirect.status_code == 303
    back = urlsplit(redirect.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == RETURN_URL
    query = parse_qs(back.query)
    assert query["token"] == [order_id]
    approved = api.get(f"/v2/checkout/orders/{order_id}").json()
    assert approved["status"] == "APPROVED"
    assert query["PayerID"] == [approved["payer"]["payer_id"]]

    headers = {"PayPal-Request-Id": f"capture-{order_id}"}
    captured = api.post(f"/v2/checkout/orders/{order_id}/capture", headers=headers)
    replayed = api.post(f"/v2/checkout/orders/{order_id}/capture", headers=headers)
    twice = api.post(f"/v2/checkout/orders/{order_id}/capture")

    assert captured.status_code == replayed.status_code == 201
    assert captured.json()["status"] == "COMPLETED"
    capture = captured.json()["purchase_units"][0]["payments"]["captures"][0]
    assert capture["status"] == "COMPLETED"
    assert capture["amount"] == {"currency_code": "USD", "value": "12.34"}
    assert capture["final_capture"] is True
    breakdown = capture["seller_receivable_breakdown"]
    assert breakdown["gross_amount"]["value"] == "12.34"
    assert float(breakdown["paypal_fee"]["value"]) + float(breakdown["net_amount"]["value"]) == (
        pytest.approx(12.34)
    )
    assert replayed.json() == captured.json()
    assert twice.status_code == 422
    assert _issue(twice) == "ORDER_ALREADY_CAPTURED"
    assert api.get(f"/v2/payments/captures/{capture['id']}").json()["status"] == "COMPLETED"

    capture_id = capture["id"]
    representation = {"Prefer": "return=representation"}
    partial_headers = {**representation, "PayPal-Request-Id": "refund-1"}
    partial_body = {"amount": {"value": "5.00", "currency_code": "USD"}, "note_to_payer": "Sorry"}
    partial = api.post(
        f"/v2/payments/captures/{capture_id}/refund", json=partial_body, headers=partial_headers
    )
    partial_again = api.post(
        f"/v2/payments/captures/{capture_id}/refund", json=partial_body, headers=partial_headers
    )
    assert partial.status_code == 201
    assert partial.json()["status"] == "COMPLETED"
    assert partial.json()["amount"] == {"currency_code": "USD", "value": "5.00"}
    assert partial.json()["note_to_payer"] == "Sorry"
    assert partial_again.json()["id"] == partial.json()["id"]
    assert api.get(f"/v2/payments/captures/{capture_id}").json()["status"] == "PARTIALLY_REFUNDED"

    too_much = api.post(
        f"/v2/payments/captures/{capture_id}/refund",
        json={"amount": {"value": "7.35", "currency_code": "USD"}},
    )
    assert too_much.status_code == 422
    assert _issue(too_much) == "REFUND_AMOUNT_EXCEEDED"
    wrong_currency = api.post(
        f"/v2/payments/captures/{capture_id}/refund",
        json={"amount": {"value": "1.00", "currency_code": "EUR"}},
    )
    assert _issue(wrong_currency) == "REFUND_CAPTURE_CURRENCY_MISMATCH"

    rest = api.post(f"/v2/payments/captures/{capture_id}/refund", json={}, headers=representation)
    assert rest.status_code == 201
    assert rest.json()["amount"]["value"] == "7.34"
    assert rest.json()["seller_payable_breakdown"]["total_refunded_amount"]["value"] == "12.34"
    assert api.get(f"/v2/payments/captures/{capture_id}").json()["status"] == "REFUNDED"
    fetched = api.get(f"/v2/payments/refunds/{rest.json()['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["amount"]["value"] == "7.34"

    after_full = api.post(
        f"/v2/payments/captures/{capture_id}/refund",
        json={"amount": {"value": "0.01", "currency_code": "USD"}},
    )
    assert after_full.status_code == 422
    assert _issue(after_full) == "CAPTURE_FULLY_REFUNDED"
    refunds = api.get(f"/v2/checkout/orders/{order_id}").json()["purchase_units"][0]["payments"]
    assert [r["amount"]["value"] for r in refunds["refunds"]] == ["5.00", "7.34"]


def test_concurrent_calls_neither_duplicate_nor_over_refund(
    api: httpx.Client, sandbox: PayPalServer
) -> None:
    token = api.headers["Authorization"]

    def create(_: int) -> str:
        response = httpx.post(
            f"{sandbox.api_base}/v2/checkout/orders",
            json=_order_body(),
            headers={"Authorization": token, "PayPal-Request-Id": "same-request"},
        )
        assert response.status_code == 201
        order_id: str = response.json()["id"]
        return order_id

    def refund_one(_: int) -> int:
        return httpx.post(
            f"{sandbox.api_base}/v2/payments/captures/{capture['id']}/refund",
            json={"amount": {"value": "1.00", "currency_code": "USD"}},
            headers={"Authorization": token},
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(create, range(16)))) == 1
        _, capture = _approved_and_captured(api)
        statuses = sorted(pool.map(refund_one, range(16)))

    assert statuses == [201] * 12 + [422] * 4
    refunds = api.get(
        f"/v2/checkout/orders/{capture['supplementary_data']['related_ids']['order_id']}"
    )
    assert len(refunds.json()["purchase_units"][0]["payments"]["refunds"]) == 12
    assert (
        api.get(f"/v2/payments/captures/{capture['id']}").json()["status"] == "PARTIALLY_REFUNDED"
    )


def test_refund_answers_minimal_by_default(api: httpx.Client) -> None:
    _, capture = _approved_and_captured(api)

    response = api.post(f"/v2/payments/captures/{capture['id']}/refund")

    assert response.status_code == 201
    assert set(response.json()) == {"id", "status", "links"}
    assert response.json()["status"] == "COMPLETED"


def test_cancel_on_the_approval_page_sends_the_buyer_to_cancel_url(api: httpx.Client) -> None:
    order = _create(api)

    redirect = _press(api, _link(order, "approve"), "Cancel")

    assert redirect.status_code == 303
    assert redirect.headers["location"] == f"{CANCEL_URL}?token={order['id']}"
    assert api.get(f"/v2/checkout/orders/{order['id']}").json()["status"] == "CREATED"


def test_faults_make_the_next_calls_fail_with_503(api: httpx.Client, sandbox: PayPalServer) -> None:
    assert api.post("/_sandbox/faults", json={"count": 2}).status_code == 200

    first = api.post("/v2/checkout/orders", json=_order_body())
    second = api.get("/v2/checkout/orders/ANY")
    third = api.post("/v2/checkout/orders", json=_order_body())

    assert first.status_code == second.status_code == 503
    assert first.json()["name"] == "SERVICE_UNAVAILABLE"
    assert third.status_code == 201


# --- webhooks ------------------------------------------------------------------------------


def _verify(api: httpx.Client, delivery: Delivery, webhook_id: str, event: object) -> str:
    response = api.post(
        "/v1/notifications/verify-webhook-signature",
        json={
            "auth_algo": delivery.headers["PAYPAL-AUTH-ALGO"],
            "cert_url": delivery.headers["PAYPAL-CERT-URL"],
            "transmission_id": delivery.headers["PAYPAL-TRANSMISSION-ID"],
            "transmission_sig": delivery.headers["PAYPAL-TRANSMISSION-SIG"],
            "transmission_time": delivery.headers["PAYPAL-TRANSMISSION-TIME"],
            "webhook_id": webhook_id,
            "webhook_event": event,
        },
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["verification_status"]
    return status


def _independently_valid(delivery: Delivery, webhook_id: str, body: bytes) -> bool:
    """PayPal's documented check, done with `cryptography` and the served certificate."""
    pem = httpx.get(delivery.headers["PAYPAL-CERT-URL"]).content
    key = x509.load_pem_x509_certificate(pem).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    message = "|".join(
        [
            delivery.headers["PAYPAL-TRANSMISSION-ID"],
            delivery.headers["PAYPAL-TRANSMISSION-TIME"],
            webhook_id,
            str(zlib.crc32(body)),
        ]
    ).encode()
    try:
        key.verify(
            base64.b64decode(delivery.headers["PAYPAL-TRANSMISSION-SIG"]),
            message,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


def test_webhooks_are_signed_and_verifiable(
    api: httpx.Client, sandbox: PayPalServer, receiver: Receiver
) -> None:
    webhook_id = sandbox.sandbox.webhook_id
    order, capture = _approved_and_captured(api)

    approved = receiver.wait_for("CHECKOUT.ORDER.APPROVED", order["id"])
    completed = receiver.wait_for("PAYMENT.CAPTURE.COMPLETED", capture["id"])

    assert approved.event["resource_type"] == "checkout-order"
    assert approved.event["resource"]["status"] == "APPROVED"
    event = completed.event
    assert event["id"].startswith("WH-")
    assert event["resource_type"] == "capture"
    assert {"event_version", "create_time", "summary"} <= set(event)
    assert event["resource"]["amount"] == {"currency_code": "USD", "value": "12.34"}
    assert event["resource"]["supplementary_data"]["related_ids"]["order_id"] == order["id"]
    assert completed.headers["PAYPAL-AUTH-ALGO"] == "SHA256withRSA"
    assert completed.headers["PAYPAL-CERT-URL"].startswith(
        f"{sandbox.api_base}/v1/notifications/certs/"
    )

    # The verify API, as a PayPal client calls it with the parsed event.
    assert _verify(api, completed, webhook_id, event) == "SUCCESS"
    tampered = json.loads(completed.body)
    tampered["resource"]["amount"]["value"] = "1234.00"
    assert _verify(api, completed, webhook_id, tampered) == "FAILURE"
    assert _verify(api, completed, "SOMEOTHERWEBHOOK", event) == "FAILURE"
    forged_cert = {**completed.headers, "PAYPAL-CERT-URL": "https://attacker.example/cert"}
    assert _verify(api, Delivery(forged_cert, completed.body), webhook_id, event) == "FAILURE"

    # The same signature, checked without the sandbox's help.
    assert _independently_valid(completed, webhook_id, completed.body)
    tampered_body = completed.body.replace(b'"12.34"', b'"1234.00"')
    assert tampered_body != completed.body
    assert not _independently_valid(completed, webhook_id, tampered_body)

    # What the sandbox says it sent.
    events = api.get("/_sandbox/events").json()["data"]
    assert [e["eventType"] for e in events[:2]] == [
        "PAYMENT.CAPTURE.COMPLETED",
        "CHECKOUT.ORDER.APPROVED",
    ]
    deadline = time.monotonic() + WAIT_SECONDS
    while events[0]["deliveries"][0]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        events = api.get("/_sandbox/events").json()["data"]
    assert events[0]["deliveries"][0]["status"] == "delivered"
    assert events[0]["deliveries"][0]["responseStatus"] == 200
    assert len(api.get("/_sandbox/events", params={"limit": 1}).json()["data"]) == 1
    assert api.get("/_sandbox/events", params={"limit": 0}).status_code == 400


def test_verify_uses_reserialised_event_for_events_it_did_not_send(
    api: httpx.Client, sandbox: PayPalServer, receiver: Receiver
) -> None:
    """A re-ordered copy of a sent event still verifies (the sandbox finds what it sent); an
    event it never sent is re-serialised compactly, so only such bytes verify."""
    _, capture = _approved_and_captured(api)
    delivery = receiver.wait_for("PAYMENT.CAPTURE.COMPLETED", capture["id"])
    reordered = dict(reversed(list(delivery.event.items())))

    assert _verify(api, delivery, sandbox.sandbox.webhook_id, reordered) == "SUCCESS"
    assert delivery.body == paypal.serialize(delivery.event)


def test_refund_and_deny_send_their_events(
    api: httpx.Client, sandbox: PayPalServer, receiver: Receiver
) -> None:
    _, capture = _approved_and_captured(api)
    refund = api.post(
        f"/v2/payments/captures/{capture['id']}/refund",
        json={"amount": {"value": "2.00", "currency_code": "USD"}},
    ).json()
    refunded = receiver.wait_for("PAYMENT.CAPTURE.REFUNDED", refund["id"])
    assert refunded.event["resource_type"] == "refund"
    assert refunded.event["resource"]["amount"]["value"] == "2.00"
    assert _verify(api, refunded, sandbox.sandbox.webhook_id, refunded.event) == "SUCCESS"

    _, other = _approved_and_captured(api)
    denied = api.post(f"/_sandbox/captures/{other['id']}/deny")
    assert denied.status_code == 200
    assert denied.json()["status"] == "DENIED"
    event = receiver.wait_for("PAYMENT.CAPTURE.DENIED", other["id"]).event
    assert event["resource"]["status"] == "DENIED"
    assert api.get(f"/v2/payments/captures/{other['id']}").json()["status"] == "DENIED"
    refused = api.post(f"/v2/payments/captures/{other['id']}/refund")
    assert refused.status_code == 422
    assert _issue(refused) == "REFUND_NOT_ALLOWED"
    assert api.post(f"/_sandbox/captures/{other['id']}/deny").status_code == 409


def test_a_registered_target_gets_retried_deliveries(
    api: httpx.Client, sandbox: PayPalServer, flaky_receiver: Receiver
) -> None:
    registered = api.post(
        "/_sandbox/webhooks", json={"url": flaky_receiver.url, "webhookId": "SECONDHOOK01"}
    )
    assert registered.status_code == 200
    assert {"url": flaky_receiver.url, "webhookId": "SECONDHOOK01"} in registered.json()["webhooks"]

    order = _create(api)
    api.post(f"/_sandbox/orders/{order['id']}/approve")
    delivery = flaky_receiver.wait_for("CHECKOUT.ORDER.APPROVED", order["id"])

    assert flaky_receiver.refused == 1
    assert _verify(api, delivery, "SECONDHOOK01", delivery.event) == "SUCCESS"
    assert _verify(api, delivery, sandbox.sandbox.webhook_id, delivery.event) == "FAILURE"
    outcome = next(
        d
        for d in api.get("/_sandbox/events").json()["data"][0]["deliveries"]
        if d["webhookId"] == "SECONDHOOK01"
    )
    assert (outcome["status"], outcome["attempts"]) == ("delivered", 2)


def test_a_target_that_never_answers_is_recorded_as_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    target = paypal.WebhookTarget(f"http://127.0.0.1:{closed_port}/hook", "DEADHOOK")
    state = paypal.PayPalState(webhooks=[target], delivery_delays=(0.0, 0.01))
    try:
        _, order = state.create_order(_order_body(), None, representation=False)
        state.approve(order["id"])
        deadline = time.monotonic() + WAIT_SECONDS
        while state.events()[0]["deliveries"][0]["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        state.close()

    outcome = state.events()[0]["deliveries"][0]
    assert (outcome["status"], outcome["attempts"], outcome["error"]) == (
        "failed",
        2,
        "ConnectError",
    )


def test_certificate_is_served_without_a_token(sandbox: PayPalServer) -> None:
    url = sandbox.state.cert_url
    response = httpx.get(url)

    assert response.status_code == 200
    assert x509.load_pem_x509_certificate(response.content)


# --- the description Relay's dev supervisor uses ---------------------------------------------


def test_environment_and_command_point_relay_at_the_sandbox() -> None:
    sandbox = PayPalSandbox(port=4321, webhook_url="http://127.0.0.1:8000/webhooks/paypal")

    env = sandbox.environment()
    assert env == {
        "PAYPAL_CLIENT_ID": paypal.SANDBOX_CLIENT_ID,
        "PAYPAL_CLIENT_SECRET": paypal.SANDBOX_CLIENT_SECRET,
        "PAYPAL_MODE": "sandbox",
        "PAYPAL_API_BASE": "http://127.0.0.1:4321",
        "PAYPAL_WEBHOOK_ID": sandbox.webhook_id,
    }
    assert sandbox.webhook_id.isalnum()
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.paypal"]
    assert paypal.SANDBOX_CLIENT_SECRET not in command


def test_wanted_and_describe(make_settings: Callable[..., Settings]) -> None:
    development = make_settings(relay_env="development")
    off = make_settings(relay_env="development", sandbox="off")

    assert paypal.wanted(development)
    assert not paypal.wanted(off)
    assert not paypal.wanted(make_settings())
    sandbox = PayPalSandbox(port=4321)
    assert "127.0.0.1:4321" in paypal.describe(development, sandbox)
    assert paypal.describe(off, None).startswith("not configured")
    real = make_settings(relay_env="development", paypal_client_id="AbC", paypal_mode="live")
    assert not paypal.wanted(real)
    assert paypal.describe(real, None) == "real (api-m.paypal.com, live)"


def test_runs_as_a_module(tmp_path: Path) -> None:
    sandbox = PayPalSandbox()
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr").open("wb"),
    )
    try:
        sandbox.wait_ready(timeout=30)
        token = httpx.post(
            f"{sandbox.api_base}/v1/oauth2/token",
            auth=(sandbox.client_id, sandbox.client_secret),
            data={"grant_type": "client_credentials"},
        )
        assert token.status_code == 200
        order = httpx.post(
            f"{sandbox.api_base}/v2/checkout/orders",
            json=_order_body(),
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert order.status_code == 201
        assert "Approve" in httpx.get(_link(order.json(), "approve")).text
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert sandbox.client_secret.encode() not in (tmp_path / "stderr").read_bytes()
