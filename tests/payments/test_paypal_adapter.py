"""The PayPal adapter's pure parts: amounts in PayPal's decimal strings, the API base from
PAYPAL_MODE / PAYPAL_API_BASE, an order read as a snapshot, and where PayPal's events go."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.payments import paypal
from relay.payments.contracts import PAYPAL_EVENT_SIGNAL, PaymentStatus
from relay.payments.inbound import paypal_target
from relay.payments.lifecycle import relay_status
from relay.settings import Settings


@pytest.mark.parametrize(
    ("amount", "currency", "value"),
    [(9999, "usd", "99.99"), (5, "eur", "0.05"), (500, "JPY", "500"), (1500, "twd", "15")],
)
def test_minor_units_become_paypals_decimal_strings(amount: int, currency: str, value: str) -> None:
    assert paypal.to_value(amount, currency) == value
    assert paypal.from_value(value, currency) == amount


def test_amounts_paypal_cannot_take() -> None:
    assert paypal.amount_problem(1999, "usd") is None
    assert paypal.amount_problem(1550, "HUF") is not None  # whole forints only
    assert paypal.amount_problem(100, "xof") is not None


def test_the_api_base_follows_paypal_mode_unless_set(
    make_settings: Callable[..., Settings],
) -> None:
    assert paypal.api_base(make_settings()) == "https://api-m.sandbox.paypal.com"
    assert paypal.api_base(make_settings(paypal_mode="live")) == "https://api-m.paypal.com"
    local = make_settings(paypal_mode="live", paypal_api_base="http://127.0.0.1:9/")
    assert paypal.api_base(local) == "http://127.0.0.1:9"


def _order(status: str, **payments: object) -> dict[str, object]:
    unit: dict[str, object] = {
        "reference_id": "default",
        "custom_id": "rel-1",
        "amount": {"currency_code": "USD", "value": "19.99"},
    }
    if payments:
        unit["payments"] = payments
    return {
        "id": "ORDER1",
        "status": status,
        "purchase_units": [unit],
        "links": [{"rel": "approve", "href": "https://paypal.example/checkoutnow?token=ORDER1"}],
    }


def test_an_order_read_as_a_snapshot() -> None:
    created = paypal.order_snapshot(_order("CREATED"))
    assert created.approve_url == "https://paypal.example/checkoutnow?token=ORDER1"
    assert (created.amount, created.currency, created.relay_id) == (1999, "usd", "rel-1")
    assert relay_status(created) == PaymentStatus.REQUIRES_ACTION
    assert relay_status(created, canceled=True) == PaymentStatus.CANCELED
    assert relay_status(created, expired=True) == PaymentStatus.EXPIRED
    assert relay_status(paypal.order_snapshot(_order("APPROVED"))) == (
        PaymentStatus.REQUIRES_CAPTURE
    )
    capture = {"id": "CAP1", "status": "PARTIALLY_REFUNDED", "amount": {"value": "19.99"}}
    refunds = [{"id": "R1", "status": "COMPLETED", "amount": {"value": "5.00"}}]
    done = paypal.order_snapshot(_order("COMPLETED", captures=[capture], refunds=refunds))
    assert done.status == "CAPTURE_PARTIALLY_REFUNDED" and done.amount_captured == 1999
    assert [(r.id, r.amount, r.status) for r in done.refunds] == [("R1", 500, "succeeded")]
    assert relay_status(done) == PaymentStatus.PARTIALLY_REFUNDED
    denied = paypal.order_snapshot(_order("COMPLETED", captures=[{**capture, "status": "DENIED"}]))
    assert relay_status(denied) == PaymentStatus.FAILED and denied.amount_captured == 0


def test_paypals_events_go_to_the_payment_relay_created() -> None:
    relay_id = "6f1c9b3e-5a7d-4c2e-9b8f-0d3e2a1c4b5f"
    known = {relay_id: ("ORDER1", "REQUIRES_ACTION")}

    def payment_of(
        rid: str | None, order_id: str | None, capture_id: str | None
    ) -> tuple[str, str, str] | None:
        if rid in known:
            return rid, *known[rid]
        if order_id == "ORDER1":
            return relay_id, *known[relay_id]
        return None

    approved = {
        "id": "WH-1",
        "event_type": "CHECKOUT.ORDER.APPROVED",
        "resource": _order("APPROVED"),
    }
    approved["resource"]["purchase_units"][0]["custom_id"] = relay_id  # type: ignore[index]
    target, object_id = paypal_target(approved, payment_of)
    assert target is not None and object_id == "ORDER1"
    assert target.workflow_id == f"payment-{relay_id}" and target.signal == PAYPAL_EVENT_SIGNAL

    # A capture without custom_id: found by its order.
    capture = {
        "id": "WH-2",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "resource": {"id": "CAP1", "supplementary_data": {"related_ids": {"order_id": "ORDER1"}}},
    }
    assert paypal_target(capture, payment_of)[0] is not None
    # An order Relay did not create, an event type payments do not take, a canceled payment.
    stranger = {**capture, "resource": {"id": "CAP9", "supplementary_data": {}}}
    assert paypal_target(stranger, payment_of)[0] is None
    assert paypal_target({"id": "WH-3", "event_type": "BILLING.PLAN.CREATED"}, payment_of) == (
        None,
        None,
    )
    known[relay_id] = ("ORDER1", "CANCELED")
    assert paypal_target(approved, payment_of)[0] is None
