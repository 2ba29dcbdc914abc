"""The /sandbox page in a real browser: Debian's chromium, driven by playwright, against
`relay dev` (Temporal dev server, worker, API, and the Stripe sandbox it runs because no
Stripe key is set) on free ports.

A subscription made through Relay's API shows on the page the banner names; clicking
"Renew: payment fails" makes the sandbox renew it with a declined card: the page reports
it and lists the `invoice.payment_failed` it sent, and Relay, having verified that signed
event, reports the subscription past_due and still entitled (the grace period).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser
from stripe import StripeClient

from relay.sandbox.stripe import SANDBOX_API_KEY
from tests.billing.helpers import ensure_plan
from tests.conftest import eventually
from tests.ops.conftest import needs_chromium
from tests.ops.test_dev_stack import DevStack

pytestmark = [pytest.mark.e2e, needs_chromium]
SHOWN_WITHIN_MS = 30_000


def _banner_value(log: str, label: str) -> str:
    found = re.search(rf"^  {label}\s+(.+)$", log, re.M)
    assert found, log
    return found.group(1).strip()


async def test_a_failed_renewal_fired_from_the_sandbox_page_reaches_relay(
    dev_stack: DevStack, browser: Browser
) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=30) as http:
        await stack.wait_ready(http)
        log = stack.log()
        page_url = _banner_value(log, "sandbox")
        assert page_url == f"http://localhost:{stack.api_port}/sandbox"
        stripe_base = re.search(r"(http://127\.0\.0\.1:\d+)", _banner_value(log, "Stripe"))
        assert stripe_base, log

        # A Plan in the sandbox (its stand-in for a Price), then a subscription via Relay.
        plan = ensure_plan(StripeClient(SANDBOX_API_KEY, base_addresses={"api": stripe_base[1]}))
        created = stack.relay("keys", "create", "sandbox-page")
        assert created.returncode == 0, created.stderr
        auth = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        user = f"user-{uuid.uuid4().hex[:6]}"
        response = await http.post(
            f"{stack.api}/v1/subscriptions",
            json={"userId": user, "priceId": plan, "paymentMethodId": "pm_card_visa"},
            headers=auth,
        )
        assert response.status_code == 201, response.text
        relay_id = response.json()["data"]["id"]
        sid = response.json()["data"]["stripeSubscriptionId"]
        assert response.json()["data"]["status"] == "active"

        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(page_url)
        assert await page.title() == "Relay sandbox"
        row = page.locator(f'#stripe-subscriptions tr[data-id="{sid}"]')
        cells = await row.locator("td").all_inner_texts()
        assert cells[:5] == [sid, cells[1], relay_id, "active", cells[4]]
        assert cells[1].startswith("cus_")
        page_text = await page.inner_text("body")
        assert SANDBOX_API_KEY not in page_text and "whsec_" not in await page.content()

        # --- the control: one click, a 303 back to the page, which says what happened ----
        async with page.expect_navigation(url=page_url):
            await row.get_by_role("button", name="Renew: payment fails").click()
        flash = page.locator("#flash")
        await flash.wait_for(timeout=SHOWN_WITHIN_MS)
        assert "flash ok" in (await flash.get_attribute("class") or "")
        assert await flash.inner_text() == (
            f"{sid} renewed, payment failed; the subscription is past_due"
        )
        assert await row.locator("td").nth(3).inner_text() == "past_due"
        failed = page.locator("#stripe-events tr", has_text="invoice.payment_failed")
        assert await failed.count() == 1
        event_cells = await failed.locator("td").all_inner_texts()
        assert event_cells[0] == "invoice.payment_failed"
        assert event_cells[1].startswith("in_") and event_cells[2] == sid

        # A reload shows the flash no more (it is one-shot), the event still.
        await page.reload()
        assert await page.locator("#flash").count() == 0
        assert await page.locator("#stripe-events tr", has_text="invoice.payment_failed").count()
        await context.close()

        # --- Relay heard it: the signed event was verified and reached the workflow ------
        async def past_due() -> dict[str, Any] | None:
            got = await http.get(f"{stack.api}/v1/subscriptions/{relay_id}", headers=auth)
            data: dict[str, Any] = got.json()["data"]
            return data if data["status"] == "past_due" else None

        data = await eventually(past_due, timeout=60)
        assert isinstance(data, dict)
        assert data["entitled"] is True  # the grace period: Stripe retries the card
        assert data["stripeSubscriptionId"] == sid

    assert stack.stop() == 0
