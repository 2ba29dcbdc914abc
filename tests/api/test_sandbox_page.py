"""/sandbox: the development-only page over the local provider sandboxes.

The app runs under uvicorn on loopback; the Stripe sandbox is the real one `relay dev`
runs (StripeSandbox on a free port). Outside development the page does not exist; in
development it shows the sandbox's subscriptions and the events it sent, never its key
or webhook secret, and its controls refuse requests from any other origin.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from stripe import StripeClient

from api.app import create_app
from api.routes import sandbox as sandbox_route
from relay.dev import _banner
from relay.sandbox.paypal import PayPalSandbox, PayPalServer
from relay.sandbox.sections import SECTIONS, is_loopback
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from tests.billing.helpers import ensure_plan, outside_subscription
from tests.conftest import ServerThread, free_port
from tests.support.api import closed_address


@pytest.fixture
def stripe_sandbox() -> Iterator[StripeSandbox]:
    """The Stripe sandbox on a free port, empty, stopped after the test."""
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
def paypal_sandbox() -> Iterator[PayPalServer]:
    """The PayPal sandbox served in a thread on a free port, stopped after the test."""
    with PayPalSandbox(port=0).run_in_thread() as server:
        yield server


@contextmanager
def serving(engine: Engine, settings: Settings) -> Iterator[str]:
    with ServerThread(create_app(settings, engine=engine)) as server:
        yield server.url


def development(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(relay_env="development", temporal_address=closed_address(), **overrides)


def with_stripe(make_settings: Callable[..., Settings], sandbox: StripeSandbox) -> Settings:
    return development(
        make_settings,
        stripe_secret_key=sandbox.api_key,
        stripe_api_base=sandbox.api_base,
        stripe_webhook_secret=sandbox.webhook_secret,
    )


def same_origin(url: str) -> dict[str, str]:
    return {"Origin": url}


async def test_the_page_exists_in_development_only(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    production = make_settings(
        relay_env="production",
        database_url="postgresql+psycopg://relay@127.0.0.1:1/relay",  # the engine is passed
        public_base_url="https://relay.example.com",
        oauth_allowed_redirects="https://app.example.com",
        temporal_address=closed_address(),
        # Even with a loopback sandbox configured, production has no page.
        stripe_secret_key="sk_test_x",
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
    )
    for settings in (production, make_settings(temporal_address=closed_address())):
        with serving(engine, settings) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                page = await http.get("/sandbox")
                control = await http.post(
                    "/sandbox/stripe/renew-failed/sub_1", headers=same_origin(url)
                )
                schema = (await http.get("/openapi.json")).json()
        assert page.status_code == 404, settings.relay_env
        assert page.json()["error"]["code"] == "NOT_FOUND"
        assert control.status_code == 404
        assert not [path for path in schema["paths"] if path.startswith("/sandbox")]

    with serving(engine, development(make_settings)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
            schema = (await http.get("/openapi.json")).json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not [path for path in schema["paths"] if path.startswith("/sandbox")]


async def test_no_section_for_a_real_or_absent_provider(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = development(
        make_settings, stripe_secret_key="sk_test_real", stripe_api_base="https://api.stripe.com"
    )
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
            control = await http.post("/sandbox/stripe/renew-paid/sub_1", headers=same_origin(url))
    assert page.status_code == 200
    assert 'id="no-sandbox"' in page.text and 'id="sandbox-stripe"' not in page.text
    assert "sk_test_real" not in page.text
    # A provider that is not sandboxed has no controls.
    assert control.status_code == 404


async def test_the_stripe_section_lists_the_sandbox_subscriptions_without_secrets(
    engine: Engine, make_settings: Callable[..., Settings], stripe_sandbox: StripeSandbox
) -> None:
    stripe = StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.api_base})
    sid = outside_subscription(stripe, user_id="user-page")
    settings = with_stripe(make_settings, stripe_sandbox)
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
    assert page.status_code == 200, page.text
    text = page.text
    assert 'id="sandbox-stripe"' in text
    row = re.search(rf'<tr data-id="{sid}">(.*?)</tr>', text)
    assert row, text
    assert "<td>active</td>" in row.group(1)
    for label, action in (
        ("Renew: paid", "renew-paid"),
        ("Renew: payment fails", "renew-failed"),
    ):
        assert f'action="/sandbox/stripe/{action}/{sid}"' in row.group(1)
        assert f"<button>{label}</button>" in row.group(1)
    assert 'id="stripe-events"' in text or "Events sent:" in text
    assert stripe_sandbox.api_key not in text
    assert stripe_sandbox.webhook_secret not in text
    assert "whsec_" not in text


async def test_a_sandbox_that_is_down_is_reported_not_a_500(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = development(
        make_settings,
        stripe_secret_key="sk_test_relay_sandbox_down",
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
    )
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/sandbox")
            control = await http.post("/sandbox/stripe/renew-paid/sub_1", headers=same_origin(url))
            after = await http.get("/sandbox", cookies=control.cookies)
    assert page.status_code == 200
    assert 'class="problem"' in page.text and "did not answer" in page.text
    assert control.status_code == 303 and control.headers["location"] == "/sandbox"
    assert re.search(r'id="flash" class="flash error"[^>]*>[^<]*did not answer', after.text)
    assert "sk_test_relay_sandbox_down" not in page.text + after.text


async def test_controls_refuse_other_origins_and_unknown_controls(
    engine: Engine, make_settings: Callable[..., Settings], stripe_sandbox: StripeSandbox
) -> None:
    settings = with_stripe(make_settings, stripe_sandbox)
    with serving(engine, settings) as url:
        port = url.rsplit(":", 1)[1]
        target = "/sandbox/stripe/renew-failed/sub_nope"
        async with httpx.AsyncClient(base_url=url) as http:
            refused = {
                "another site": await http.post(target, headers={"Origin": "http://evil.example"}),
                "a sandboxed iframe": await http.post(target, headers={"Origin": "null"}),
                "another port": await http.post(
                    target, headers={"Origin": f"http://127.0.0.1:{free_port()}"}
                ),
                "another site's page": await http.post(
                    target, headers={"Referer": "http://evil.example/sandbox"}
                ),
                "no origin at all": await http.post(target),
                # DNS rebinding: a hostile name resolved to loopback is its own origin.
                "a rebound name": await http.post(
                    target,
                    headers={
                        "Host": f"evil.example:{port}",
                        "Origin": f"http://evil.example:{port}",
                    },
                ),
            }
            unknown = {
                "provider": await http.post("/sandbox/nope/renew-paid/x", headers=same_origin(url)),
                "action": await http.post(
                    "/sandbox/stripe/explode/sub_1", headers=same_origin(url)
                ),
                "target": await http.post(
                    "/sandbox/stripe/renew-paid/sub%20one", headers=same_origin(url)
                ),
                "method": await http.get("/sandbox/stripe/renew-paid/sub_1"),
            }
            # Same origin by Referer (a browser that sends no Origin), or localhost's name.
            by_referer = await http.post(target, headers={"Referer": f"{url}/sandbox"})
            by_name = await http.post(
                target,
                headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
            )
    for why, response in refused.items():
        assert response.status_code == 403, why
        assert response.json()["error"]["code"] == "FORBIDDEN"
        assert "set-cookie" not in response.headers
    for why, response in unknown.items():
        assert response.status_code in (404, 405), why
    assert unknown["provider"].status_code == 404
    assert unknown["action"].status_code == 404
    assert unknown["target"].status_code == 404
    # Accepted (the sandbox then refuses the unknown subscription: an error flash).
    assert by_referer.status_code == 303 and by_name.status_code == 303


async def test_renew_with_a_failed_payment_fires_the_event_and_reports_it(
    engine: Engine, make_settings: Callable[..., Settings], stripe_sandbox: StripeSandbox
) -> None:
    """The control calls the sandbox's `/_sandbox/subscriptions/{id}/renew`: the renewal
    invoice fails, the subscription goes past_due and invoice.payment_failed is sent."""
    stripe = StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.api_base})
    sid = outside_subscription(stripe, user_id="user-renew")
    settings = with_stripe(make_settings, stripe_sandbox)
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            control = await http.post(
                f"/sandbox/stripe/renew-failed/{sid}", headers=same_origin(url)
            )
            page = await http.get("/sandbox", cookies=control.cookies)
            again = await http.get("/sandbox")
    assert control.status_code == 303 and control.headers["location"] == "/sandbox"
    flash = re.search(r'<p id="flash" class="flash (\w+)"[^>]*>([^<]*)</p>', page.text)
    assert flash, page.text
    assert flash.groups() == ("ok", f"{sid} renewed, payment failed; the subscription is past_due")
    assert "set-cookie" in page.headers  # the flash is shown once
    assert 'id="flash"' not in again.text
    row = re.search(rf'<tr data-id="{sid}">(.*?)</tr>', page.text)
    assert row and "<td>past_due</td>" in row.group(1)
    events = re.search(r'<table id="stripe-events">(.*?)</table>', page.text, re.S)
    assert events, page.text
    assert "<td>invoice.payment_failed</td>" in events.group(1)
    assert stripe.v1.subscriptions.retrieve(sid).status == "past_due"


async def test_trial_will_end_on_a_trialing_subscription(
    engine: Engine, make_settings: Callable[..., Settings], stripe_sandbox: StripeSandbox
) -> None:
    stripe = StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.api_base})
    customer = stripe.v1.customers.create({"metadata": {"userId": "user-trial"}})
    plan = ensure_plan(stripe)
    sid = stripe.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan}], "trial_period_days": 14}
    ).id
    settings = with_stripe(make_settings, stripe_sandbox)
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url, headers=same_origin(url)) as http:
            before = await http.get("/sandbox")
            control = await http.post(f"/sandbox/stripe/trial-will-end/{sid}")
            after = await http.get("/sandbox", cookies=control.cookies)
    row = re.search(rf'<tr data-id="{sid}">(.*?)</tr>', before.text)
    assert row and "<td>trialing</td>" in row.group(1)
    assert f'action="/sandbox/stripe/trial-will-end/{sid}"' in row.group(1)
    assert "<button>Trial will end</button>" in row.group(1)
    assert control.status_code == 303
    assert f"{sid}: customer.subscription.trial_will_end sent" in after.text
    events = re.search(r'<table id="stripe-events">(.*?)</table>', after.text, re.S)
    assert events and "<td>customer.subscription.trial_will_end</td>" in events.group(1)


def test_every_secret_setting_is_scrubbed_from_the_page(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        relay_env="development",
        stripe_webhook_secret="whsec_first_secret_value,whsec_second_secret_value",
        paypal_client_secret="paypal-secret-value",
    )
    page = "<td>whsec_first_secret_value</td><td>whsec_second_secret_value paypal-secret-value"
    scrubbed = sandbox_route._redacted(page, settings)
    assert "secret_value" not in scrubbed and "paypal-secret" not in scrubbed
    assert scrubbed.count("[redacted]") == 3


def paypal_order(server: PayPalServer) -> tuple[httpx.Client, str]:
    """An order awaiting its buyer, created with PayPal's API as Relay's payments would."""
    sandbox = server.sandbox
    api = httpx.Client(base_url=server.api_base)
    token = api.post(
        "/v1/oauth2/token",
        auth=(sandbox.client_id, sandbox.client_secret),
        data={"grant_type": "client_credentials"},
    ).json()["access_token"]
    api.headers["Authorization"] = f"Bearer {token}"
    order = api.post(
        "/v2/checkout/orders",
        json={
            "intent": "CAPTURE",
            "purchase_units": [{"amount": {"currency_code": "USD", "value": "12.00"}}],
        },
    )
    assert order.status_code == 201, order.text
    return api, str(order.json()["id"])


async def test_the_paypal_section_approves_orders_and_denies_captures(
    engine: Engine, make_settings: Callable[..., Settings], paypal_sandbox: PayPalServer
) -> None:
    sandbox = paypal_sandbox.sandbox
    api, order_id = paypal_order(paypal_sandbox)
    settings = development(
        make_settings,
        paypal_client_id=sandbox.client_id,
        paypal_client_secret=sandbox.client_secret,
        paypal_api_base=paypal_sandbox.api_base,
        paypal_webhook_id=sandbox.webhook_id,
    )
    with serving(engine, settings) as url:
        async with httpx.AsyncClient(base_url=url, headers=same_origin(url)) as http:
            empty = await http.get("/sandbox")
            approved = await http.post("/sandbox/paypal/approve", data={"id": order_id})
            after_approval = await http.get("/sandbox", cookies=approved.cookies)
            captured = api.post(f"/v2/checkout/orders/{order_id}/capture", json={})
            assert captured.status_code == 201, captured.text
            capture_id = captured.json()["purchase_units"][0]["payments"]["captures"][0]["id"]
            completed = await http.get("/sandbox")
            denied = await http.post(f"/sandbox/paypal/deny-capture/{capture_id}")
            after_denial = await http.get("/sandbox", cookies=denied.cookies)
            typo = await http.post("/sandbox/paypal/approve", data={"id": "no such/order"})
            after_typo = await http.get("/sandbox", cookies=typo.cookies)
    api.close()

    assert 'id="sandbox-paypal"' in empty.text and 'id="sandbox-stripe"' not in empty.text
    assert 'action="/sandbox/paypal/approve"' in empty.text and 'name="id"' in empty.text
    assert "No events sent yet." in empty.text

    def flash(page: httpx.Response) -> tuple[str, ...]:
        found = re.search(r'<p id="flash" class="flash (\w+)"[^>]*>([^<]*)</p>', page.text)
        assert found, page.text
        return found.groups()

    def events(page: httpx.Response) -> str:
        found = re.search(r'<table id="paypal-events">(.*?)</table>', page.text, re.S)
        assert found, page.text
        return found.group(1)

    assert approved.status_code == 303
    assert flash(after_approval) == (
        "ok",
        f"order {order_id} approved by the buyer; it is APPROVED",
    )
    assert "<td>CHECKOUT.ORDER.APPROVED</td>" in events(after_approval)
    deny = f'action="/sandbox/paypal/deny-capture/{capture_id}"'
    assert "<td>PAYMENT.CAPTURE.COMPLETED</td>" in events(completed) and deny in completed.text
    assert flash(after_denial) == (
        "ok",
        f"capture {capture_id} denied; PAYMENT.CAPTURE.DENIED sent",
    )
    assert "<td>PAYMENT.CAPTURE.DENIED</td>" in events(after_denial)
    assert deny not in after_denial.text  # a denied capture cannot be denied again
    assert flash(after_typo)[0] == "error" and "is not an id" in flash(after_typo)[1]
    for page in (empty, after_approval, completed, after_denial):
        assert sandbox.client_secret not in page.text


def test_the_banner_names_the_page_when_a_sandbox_runs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(relay_env="development", api_port=8123)
    line = "  sandbox      http://localhost:8123/sandbox"
    assert line in _banner(settings, True, "sandboxed (…)", sandbox_page=True).splitlines()
    assert "/sandbox" not in _banner(settings, True, "real (api.stripe.com)")


def test_sections_are_keyed_once_and_sandboxed_means_loopback() -> None:
    keys = [section.key for section in SECTIONS]
    assert len(keys) == len(set(keys)) and "stripe" in keys
    for url in ("http://127.0.0.1:1", "http://localhost:2", "http://[::1]:3", "http://127.9.9.9"):
        assert is_loopback(url), url
    for other in ("https://api.stripe.com", "http://10.0.0.1:1", "", None, "not a url"):
        assert not is_loopback(other), other
