"""Relay's Stripe sandbox server (`relay.sandbox.stripe_server`), on loopback, through the
Stripe SDK Relay uses: what it adds to localstripe — pause_collection, /resume,
customer.subscription.updated, renewals, the sandbox controls — and that its events are
delivered signed like Stripe's."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import stripe as stripe_sdk
from fastapi import FastAPI, Request

from relay.billing.signature import verify_event
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from relay.stripe_api import stripe_client
from tests.billing.helpers import ensure_plan, outside_subscription
from tests.conftest import ServerThread, eventually

BEHAVIORS = ("keep_as_draft", "mark_uncollectible", "void")


@pytest.fixture
def stripe_server() -> Iterator[StripeSandbox]:
    """The server on a free port, started as `relay dev` starts it, stopped after the test."""
    sandbox = StripeSandbox()
    process = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready()
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def stripe(
    stripe_server: StripeSandbox, make_settings: Callable[..., Settings]
) -> stripe_sdk.StripeClient:
    """Relay's own Stripe client, at the sandbox server."""
    settings = make_settings(
        stripe_secret_key=stripe_server.api_key, stripe_api_base=stripe_server.api_base
    )
    client = stripe_client(settings)
    assert client is not None
    return client


class Receiver:
    """A webhook endpoint on loopback that keeps what it was sent, verified as Relay
    verifies Stripe's events (its signature module)."""

    def __init__(self, secret: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> dict[str, bool]:
            body = await request.body()
            self.events.append(
                verify_event(body, request.headers.get("Stripe-Signature"), [secret])
            )
            return {"ok": True}

    def of(self, type: str, object_id: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if event["type"] == type and event["data"]["object"].get("id") == object_id
        ]


@pytest.fixture
def receiver(stripe_server: StripeSandbox) -> Iterator[Receiver]:
    receiver = Receiver(stripe_server.webhook_secret)
    with ServerThread(receiver.app) as server:
        stripe_server.register_webhook(f"{server.url}/hook")
        yield receiver


def control(sandbox: StripeSandbox, path: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{sandbox.api_base}/_sandbox/{path}", json=body)


def events(sandbox: StripeSandbox, limit: int = 100) -> list[dict[str, Any]]:
    response = httpx.get(f"{sandbox.api_base}/_sandbox/events", params={"limit": limit})
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def types_about(sandbox: StripeSandbox, sid: str, invoice: str | None = None) -> list[str]:
    """The types of the events about the subscription (or that invoice), newest first."""
    ids = {sid, invoice}
    return [event["type"] for event in events(sandbox) if event["data"]["object"].get("id") in ids]


def subscription(stripe: stripe_sdk.StripeClient, sid: str) -> dict[str, Any]:
    return stripe.v1.subscriptions.retrieve(sid).to_dict()


def invoice_of(stripe: stripe_sdk.StripeClient, sub: dict[str, Any]) -> dict[str, Any]:
    return stripe.v1.invoices.retrieve(sub["latest_invoice"]).to_dict()


def trial_subscription(
    stripe: stripe_sdk.StripeClient, *, card: bool, missing_payment_method: str = "create_invoice"
) -> str:
    """A 14-day trial, for a customer with a default card or with none."""
    customer = stripe.v1.customers.create({})
    if card:
        stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        stripe.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
        )
    created = stripe.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"plan": ensure_plan(stripe)}],
            "trial_period_days": 14,
            "trial_settings": {"end_behavior": {"missing_payment_method": missing_payment_method}},
        }
    )
    return str(created.id)


# --- pause_collection and /resume --------------------------------------------------------


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_pause_collection_is_set_exported_and_cleared(
    stripe: stripe_sdk.StripeClient, behavior: str
) -> None:
    sid = outside_subscription(stripe, user_id="user-pause")
    assert subscription(stripe, sid)["pause_collection"] is None
    resumes_at = int(time.time()) + 30 * 86400

    paused = stripe.v1.subscriptions.update(
        sid, {"pause_collection": {"behavior": behavior, "resumes_at": resumes_at}}
    ).to_dict()
    assert paused["pause_collection"] == {"behavior": behavior, "resumes_at": resumes_at}
    assert paused["status"] == "active"  # collection paused, not the subscription
    assert subscription(stripe, sid)["pause_collection"]["behavior"] == behavior

    stripe.v1.subscriptions.update(sid, {"pause_collection": {"behavior": behavior}})
    assert subscription(stripe, sid)["pause_collection"] == {
        "behavior": behavior,
        "resumes_at": None,
    }
    cleared = stripe.v1.subscriptions.update(sid, {"pause_collection": ""}).to_dict()
    assert cleared["pause_collection"] is None
    assert subscription(stripe, sid)["pause_collection"] is None


def test_an_unknown_pause_behavior_is_refused_as_stripe_refuses_it(
    stripe: stripe_sdk.StripeClient,
) -> None:
    sid = outside_subscription(stripe)
    with pytest.raises(stripe_sdk.InvalidRequestError) as refused:
        stripe.v1.subscriptions.update(sid, {"pause_collection": {"behavior": "freeze"}})
    assert refused.value.http_status == 400
    assert refused.value.param == "pause_collection[behavior]"
    assert "keep_as_draft" in str(refused.value.user_message)
    with pytest.raises(stripe_sdk.InvalidRequestError) as unknown:
        stripe.v1.subscriptions.update(
            sid, {"pause_collection": {"behavior": "void", "until": "later"}}
        )
    assert unknown.value.code == "parameter_unknown"
    assert subscription(stripe, sid)["pause_collection"] is None  # nothing changed


def test_resume_refuses_a_subscription_that_is_not_paused(
    stripe: stripe_sdk.StripeClient,
) -> None:
    sid = outside_subscription(stripe)
    stripe.v1.subscriptions.update(sid, {"pause_collection": {"behavior": "void"}})
    with pytest.raises(stripe_sdk.InvalidRequestError) as refused:
        stripe.v1.subscriptions.resume(sid, {"billing_cycle_anchor": "now"})
    assert refused.value.http_status == 400
    assert "paused" in str(refused.value.user_message)
    # Collection paused is not status `paused`: the subscription is as it was.
    after = subscription(stripe, sid)
    assert after["status"] == "active" and after["pause_collection"]["behavior"] == "void"
    with pytest.raises(stripe_sdk.InvalidRequestError) as missing:
        stripe.v1.subscriptions.resume("sub_missing")
    assert missing.value.http_status == 404


# --- customer.subscription.updated -------------------------------------------------------


async def test_a_changed_subscription_sends_a_signed_updated_event(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox, receiver: Receiver
) -> None:
    sid = outside_subscription(stripe)
    stripe.v1.subscriptions.update(sid, {"pause_collection": {"behavior": "keep_as_draft"}})
    updated = await eventually(lambda: receiver.of("customer.subscription.updated", sid))
    event = updated[0]  # type: ignore[index]
    assert event["data"]["object"]["pause_collection"]["behavior"] == "keep_as_draft"
    assert event["data"]["previous_attributes"] == {"pause_collection": None}

    stripe.v1.subscriptions.update(sid, {"cancel_at_period_end": True})
    later = await eventually(
        lambda: [
            e
            for e in receiver.of("customer.subscription.updated", sid)
            if "cancel_at_period_end" in e["data"]["previous_attributes"]
        ]
    )
    assert later[0]["data"]["previous_attributes"] == {"cancel_at_period_end": False}  # type: ignore[index]
    # A request that changes nothing sends nothing; a cancellation is `deleted` only.
    stripe.v1.subscriptions.update(sid, {"cancel_at_period_end": True})
    stripe.v1.subscriptions.cancel(sid)
    await eventually(lambda: receiver.of("customer.subscription.deleted", sid))
    assert [e["type"] for e in events(stripe_server) if e["data"]["object"]["id"] == sid][:3] == [
        "customer.subscription.deleted",
        "customer.subscription.updated",
        "customer.subscription.updated",
    ]


# --- renewals ----------------------------------------------------------------------------


async def test_a_failed_renewal_is_past_due_and_a_paid_one_active_again(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox, receiver: Receiver
) -> None:
    sid = outside_subscription(stripe)
    before = subscription(stripe, sid)

    failed = control(stripe_server, f"subscriptions/{sid}/renew", outcome="failed")
    assert failed.status_code == 200, failed.text
    after = subscription(stripe, sid)
    assert after["status"] == "past_due"
    assert after["current_period_start"] == before["current_period_end"]
    assert after["current_period_end"] > after["current_period_start"]
    invoice = invoice_of(stripe, after)
    assert invoice["id"] != before["latest_invoice"]
    assert invoice["status"] == "open" and invoice["billing_reason"] == "subscription_cycle"
    assert invoice["attempted"] and invoice["attempt_count"] == 1 and invoice["amount_paid"] == 0
    intent = stripe.v1.payment_intents.retrieve(invoice["payment_intent"]).to_dict()
    assert intent["last_payment_error"]["code"] == "card_declined"
    sent = types_about(stripe_server, sid, invoice["id"])
    assert {"invoice.created", "invoice.payment_failed", "customer.subscription.updated"} <= set(
        sent
    )
    assert "invoice.paid" not in sent
    updated = await eventually(lambda: receiver.of("customer.subscription.updated", sid))
    assert updated[0]["data"]["object"]["status"] == "past_due"  # type: ignore[index]
    assert updated[0]["data"]["previous_attributes"]["status"] == "active"  # type: ignore[index]
    await eventually(lambda: receiver.of("invoice.payment_failed", invoice["id"]))

    paid = control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid")
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "active"
    again = subscription(stripe, sid)
    assert again["status"] == "active"
    assert again["current_period_start"] == after["current_period_end"]
    renewal = invoice_of(stripe, again)
    assert renewal["status"] == "paid" and renewal["amount_paid"] == renewal["amount_due"] > 0
    sent = types_about(stripe_server, sid, renewal["id"])
    assert {
        "invoice.created",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    } <= set(sent[:4])
    await eventually(lambda: receiver.of("invoice.paid", renewal["id"]))


def test_paying_the_failed_invoice_makes_the_subscription_active_again(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    """A change made through another object (the invoice) is announced too."""
    sid = outside_subscription(stripe)
    control(stripe_server, f"subscriptions/{sid}/renew", outcome="failed")
    invoice = subscription(stripe, sid)["latest_invoice"]
    assert stripe.v1.invoices.pay(invoice).status == "paid"
    assert subscription(stripe, sid)["status"] == "active"
    updated = [
        e
        for e in events(stripe_server)
        if e["type"] == "customer.subscription.updated" and e["data"]["object"]["id"] == sid
    ]
    assert updated[0]["data"]["previous_attributes"] == {"status": "past_due"}
    assert "invoice.paid" in types_about(stripe_server, sid, invoice)


def test_a_renew_control_takes_a_form_body_too(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = outside_subscription(stripe)
    response = httpx.post(
        f"{stripe_server.api_base}/_sandbox/subscriptions/{sid}/renew", data={"outcome": "failed"}
    )
    assert response.status_code == 200, response.text
    assert subscription(stripe, sid)["status"] == "past_due"


@pytest.mark.parametrize(
    ("behavior", "invoice_status", "sent"),
    [
        ("keep_as_draft", "draft", None),
        ("mark_uncollectible", "uncollectible", "invoice.marked_uncollectible"),
        ("void", "void", "invoice.voided"),
    ],
)
def test_a_renewal_while_collection_is_paused_attempts_no_payment(
    stripe: stripe_sdk.StripeClient,
    stripe_server: StripeSandbox,
    behavior: str,
    invoice_status: str,
    sent: str | None,
) -> None:
    sid = outside_subscription(stripe)
    before = subscription(stripe, sid)
    stripe.v1.subscriptions.update(sid, {"pause_collection": {"behavior": behavior}})
    response = control(stripe_server, f"subscriptions/{sid}/renew", outcome="failed")
    assert response.status_code == 200, response.text
    after = subscription(stripe, sid)
    assert after["status"] == "active"  # no attempt, so no failure
    assert after["current_period_start"] == before["current_period_end"]
    assert after["pause_collection"]["behavior"] == behavior
    invoice = invoice_of(stripe, after)
    assert invoice["status"] == invoice_status and invoice["payment_intent"] is None
    types = types_about(stripe_server, sid, invoice["id"])
    assert "invoice.created" in types and "invoice.payment_failed" not in types
    if sent is not None:
        assert sent in types


def test_collection_resumes_on_its_own_at_resumes_at(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = outside_subscription(stripe)
    end = subscription(stripe, sid)["current_period_end"]
    stripe.v1.subscriptions.update(
        sid, {"pause_collection": {"behavior": "void", "resumes_at": end - 60}}
    )
    assert control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid").status_code == 200
    after = subscription(stripe, sid)
    assert after["pause_collection"] is None
    assert invoice_of(stripe, after)["status"] == "paid"


def test_the_controls_refuse_what_stripe_could_not_do(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = outside_subscription(stripe)
    bad = control(stripe_server, f"subscriptions/{sid}/renew", outcome="maybe")
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert control(stripe_server, "subscriptions/sub_missing/renew").status_code == 404
    stripe.v1.subscriptions.cancel(sid)
    ended = control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid")
    assert ended.status_code == 400 and "canceled" in ended.json()["error"]["message"]
    # No payment method left to charge: refused before anything moves.
    other = subscription(stripe, outside_subscription(stripe))
    stripe.v1.customers.update(
        other["customer"], {"invoice_settings": {"default_payment_method": ""}}
    )
    refused = control(stripe_server, f"subscriptions/{other['id']}/renew", outcome="paid")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "resource_missing"
    after = subscription(stripe, other["id"])
    assert after["current_period_end"] == other["current_period_end"]
    assert after["latest_invoice"] == other["latest_invoice"]


# --- trial_will_end and the event list ---------------------------------------------------


async def test_trial_will_end_is_sent_and_listed(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox, receiver: Receiver
) -> None:
    sid = trial_subscription(stripe, card=True)
    response = control(stripe_server, f"subscriptions/{sid}/trial_will_end")
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "customer.subscription.trial_will_end"
    assert types_about(stripe_server, sid)[0] == "customer.subscription.trial_will_end"
    sent = await eventually(lambda: receiver.of("customer.subscription.trial_will_end", sid))
    assert sent[0]["data"]["object"]["status"] == "trialing"  # type: ignore[index]
    assert control(stripe_server, "subscriptions/sub_missing/trial_will_end").status_code == 404
    paying = outside_subscription(stripe)
    no_trial = control(stripe_server, f"subscriptions/{paying}/trial_will_end")
    assert no_trial.status_code == 400 and "trial" in no_trial.json()["error"]["message"]


# --- trials, and the status `paused` -------------------------------------------------------


def test_a_trial_is_trialing_until_a_renewal_ends_it(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = trial_subscription(stripe, card=True)
    trial = subscription(stripe, sid)
    assert trial["status"] == "trialing" and trial["latest_invoice"] is None
    assert trial["trial_end"] - trial["trial_start"] == 14 * 86400
    assert trial["current_period_end"] == trial["trial_end"]
    created = [
        e
        for e in events(stripe_server)
        if e["type"] == "customer.subscription.created" and e["data"]["object"]["id"] == sid
    ]
    assert created[0]["data"]["object"]["status"] == "trialing"

    assert control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid").status_code == 200
    after = subscription(stripe, sid)
    assert after["status"] == "active"
    assert after["current_period_start"] == trial["trial_end"]
    assert invoice_of(stripe, after)["status"] == "paid"


@pytest.mark.parametrize(
    ("missing_payment_method", "status", "invoice_status"),
    [
        ("pause", "paused", None),
        ("cancel", "canceled", None),
        ("create_invoice", "past_due", "open"),
    ],
)
def test_a_trial_ending_without_a_payment_method_does_what_trial_settings_say(
    stripe: stripe_sdk.StripeClient,
    stripe_server: StripeSandbox,
    missing_payment_method: str,
    status: str,
    invoice_status: str | None,
) -> None:
    sid = trial_subscription(stripe, card=False, missing_payment_method=missing_payment_method)
    response = control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid")
    assert response.status_code == 200, response.text
    after = subscription(stripe, sid)
    assert after["status"] == status
    if invoice_status is None:
        assert after["latest_invoice"] is None
    else:
        assert invoice_of(stripe, after)["status"] == invoice_status
        assert "invoice.payment_failed" in types_about(stripe_server, sid, after["latest_invoice"])


def test_resume_makes_a_paused_subscription_active_and_charges_a_new_period(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = trial_subscription(stripe, card=False, missing_payment_method="pause")
    control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid")
    paused = subscription(stripe, sid)
    assert paused["status"] == "paused"
    assert control(stripe_server, f"subscriptions/{sid}/renew").status_code == 400
    # Nothing to charge yet: refused, still paused.
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.subscriptions.resume(sid, {"billing_cycle_anchor": "now"})
    assert subscription(stripe, sid)["status"] == "paused"

    stripe.v1.payment_methods.attach("pm_card_visa", {"customer": paused["customer"]})
    stripe.v1.customers.update(
        paused["customer"], {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    started = int(time.time())
    resumed = stripe.v1.subscriptions.resume(sid, {"billing_cycle_anchor": "now"}).to_dict()
    assert resumed["status"] == "active"
    assert resumed["current_period_start"] >= started
    assert invoice_of(stripe, resumed)["status"] == "paid"
    updated = [
        e
        for e in events(stripe_server)
        if e["type"] == "customer.subscription.updated" and e["data"]["object"]["id"] == sid
    ]
    assert updated[0]["data"]["previous_attributes"]["status"] == "paused"


def test_resume_with_the_anchor_unchanged_starts_no_period(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = trial_subscription(stripe, card=False, missing_payment_method="pause")
    control(stripe_server, f"subscriptions/{sid}/renew", outcome="paid")
    paused = subscription(stripe, sid)
    resumed = stripe.v1.subscriptions.resume(sid, {"billing_cycle_anchor": "unchanged"}).to_dict()
    assert resumed["status"] == "active" and resumed["latest_invoice"] is None
    assert resumed["current_period_end"] == paused["current_period_end"]


def test_the_event_list_is_newest_first_and_needs_no_key(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    sid = outside_subscription(stripe)
    stripe.v1.subscriptions.update(sid, {"cancel_at_period_end": True})
    listed = events(stripe_server, limit=3)
    assert len(listed) == 3
    assert listed[0]["type"] == "customer.subscription.updated"
    assert listed[0]["data"]["object"]["id"] == sid
    everything = events(stripe_server, limit=1000)
    created = [event["created"] for event in everything]
    assert created == sorted(created, reverse=True)
    assert everything[-1]["type"] in {"product.created", "customer.created"}  # the first made
    for bad in ("0", "1001", "many"):
        response = httpx.get(f"{stripe_server.api_base}/_sandbox/events", params={"limit": bad})
        assert response.status_code == 400
    # The Stripe API itself still wants a key.
    assert httpx.get(f"{stripe_server.api_base}/v1/subscriptions/{sid}").status_code == 401


# --- one-off invoices --------------------------------------------------------------------


def customer_with_card(stripe: stripe_sdk.StripeClient) -> str:
    customer = stripe.v1.customers.create({})
    stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    return str(customer.id)


def draft_invoice(stripe: stripe_sdk.StripeClient, customer: str) -> str:
    """A send_invoice draft with two lines, made as Stripe's docs make one (the draft
    first, excluding pending items, then items added to it)."""
    invoice = stripe.v1.invoices.create(
        {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "auto_advance": False,
            "currency": "usd",
            "pending_invoice_items_behavior": "exclude",
            "metadata": {"relayInvoiceId": "inv-1"},
        }
    )
    for description, amount, quantity in (("Consulting", 5000, 2), ("Setup", 1500, 1)):
        stripe.v1.invoice_items.create(
            {
                "customer": customer,
                "invoice": str(invoice.id),
                "currency": "usd",
                "description": description,
                "unit_amount_decimal": str(amount),
                "quantity": quantity,
                "metadata": {"relayInvoiceId": "inv-1"},
            }
        )
    return str(invoice.id)


def test_an_invoice_is_drafted_finalized_sent_and_paid(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    customer = customer_with_card(stripe)
    # A pending item of the customer stays pending: `exclude` keeps it off the draft.
    stripe.v1.invoice_items.create({"customer": customer, "currency": "usd", "amount": 99})
    invoice_id = draft_invoice(stripe, customer)
    draft = stripe.v1.invoices.retrieve(invoice_id).to_dict()
    assert draft["status"] == "draft"
    assert draft["collection_method"] == "send_invoice"
    assert draft["amount_due"] == 11500
    assert draft["currency"] == "usd"
    assert draft["hosted_invoice_url"] is None
    assert [line["quantity"] for line in draft["lines"]["data"]] == [2, 1]
    assert len(stripe.v1.invoice_items.list({"customer": customer}).data) == 1

    opened = stripe.v1.invoices.finalize_invoice(invoice_id).to_dict()
    assert opened["status"] == "open"
    assert opened["number"] and opened["due_date"]
    page = httpx.get(opened["hosted_invoice_url"])
    assert page.status_code == 200 and opened["number"] in page.text
    pdf = httpx.get(opened["invoice_pdf"])
    assert pdf.headers["content-type"] == "application/pdf"
    assert stripe.v1.invoices.send_invoice(invoice_id).status == "open"
    paid = stripe.v1.invoices.pay(invoice_id).to_dict()
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == 11500
    assert {"invoice.finalized", "invoice.sent", "invoice.paid"} <= set(
        types_about(stripe_server, invoice_id)
    )


def test_an_open_invoice_is_voided_and_what_stripe_refuses_is_refused(
    stripe: stripe_sdk.StripeClient, stripe_server: StripeSandbox
) -> None:
    customer = customer_with_card(stripe)
    invoice_id = draft_invoice(stripe, customer)
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.invoices.void_invoice(invoice_id)  # a draft is deleted, not voided
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.invoices.send_invoice(invoice_id)  # not finalized
    stripe.v1.invoices.finalize_invoice(invoice_id)
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.invoices.finalize_invoice(invoice_id)
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.invoice_items.create(
            {"customer": customer, "invoice": invoice_id, "currency": "usd", "amount": 1}
        )
    assert stripe.v1.invoices.void_invoice(invoice_id).status == "void"
    assert "invoice.voided" in types_about(stripe_server, invoice_id)
    with pytest.raises(stripe_sdk.InvalidRequestError):
        stripe.v1.invoices.void_invoice(invoice_id)
    with pytest.raises(stripe_sdk.InvalidRequestError) as refused:
        stripe.v1.invoices.create(
            {"customer": customer, "collection_method": "send_invoice", "currency": "usd"}
        )
    assert refused.value.param == "days_until_due"
