"""The /sandbox page's notification sections in a real browser: Debian's chromium, driven by
playwright, against `relay dev` (Temporal dev server, worker, API, and the SendGrid, Twilio,
SMTP and FCM sandboxes it runs because no provider has credentials) on free ports.

An email (HTML), an SMS, a WhatsApp message and a push, each sent through Relay's API and
final in Relay (DELIVERED; SENT for a push, FCM reports nothing later), are listed in their
sections with the status the sandbox holds; the email's HTML preview renders in the
browser; and clicking "Recipient replies STOP" on the SMS makes the Twilio sandbox post a
signed STOP, after which Relay lists the number as suppressed. No secret is on the page.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from relay.sandbox.sendgrid import SANDBOX_API_KEY as SENDGRID_KEY
from relay.sandbox.twilio import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.conftest import eventually
from tests.ops.conftest import needs_chromium
from tests.ops.test_dev_stack import DevStack

pytestmark = [pytest.mark.e2e, needs_chromium]
FINAL_WITHIN_SECONDS = 90
SHOWN_WITHIN_MS = 30_000


async def _final(
    http: httpx.AsyncClient, stack: DevStack, auth: dict[str, str], nid: str, status: str
) -> dict[str, Any]:
    """The notification once Relay reports `status` (fails at once on another final one)."""

    async def reached() -> dict[str, Any] | None:
        got = await http.get(f"{stack.api}/v1/notifications/{nid}", headers=auth)
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()["data"]
        assert data["status"] not in {"FAILED", "UNDELIVERED", "BOUNCED", "SUPPRESSED"}, data
        return data if data["status"] == status else None

    data = await eventually(reached, timeout=FINAL_WITHIN_SECONDS)
    assert isinstance(data, dict)
    return data


async def _cells(page: Page, table: str, key: str) -> list[str]:
    row = page.locator(f'#{table} tr[data-id="{key}"]')
    assert await row.count() == 1, await page.inner_html(f"#{table}")
    return await row.locator("td").all_inner_texts()


async def test_notifications_sent_through_relay_show_on_the_sandbox_page(
    dev_stack: DevStack, browser: Browser
) -> None:
    stack = dev_stack
    stack.start()
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=30) as http:
        await stack.wait_ready(http)
        page_url = f"http://localhost:{stack.api_port}/sandbox"
        created = stack.relay("keys", "create", f"sandbox-notifications-{run}")
        assert created.returncode == 0, created.stderr
        api_key = created.stdout.strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {api_key}"}

        # --- four sends through Relay's API ------------------------------------------------
        to_email = f"reader-{run}@example.com"
        subject = f"Sandbox page {run}"
        sms_to = f"+1415555{int(run[:4], 16) % 10_000:04d}"
        whatsapp_to = f"+1415666{int(run[4:], 16) % 10_000:04d}"
        sends = {
            "email": {
                "to": to_email,
                "subject": subject,
                "html": f"<p>Hello <b id='bold'>bold {run}</b></p>",
            },
            "sms": {"to": sms_to, "body": f"SMS {run}"},
            "whatsapp": {"to": whatsapp_to, "body": f"WhatsApp {run}"},
        }
        ids: dict[str, str] = {}
        for channel, body in sends.items():
            sent = await http.post(
                f"{stack.api}/v1/notifications/{channel}", json=body, headers=auth
            )
            assert sent.status_code == 202, sent.text
            ids[channel] = sent.json()["data"]["id"]
        user = f"user-{run}"
        device = await http.post(
            f"{stack.api}/v1/devices",
            json={"userId": user, "token": f"device-token-{run}", "platform": "android"},
            headers=auth,
        )
        assert device.status_code == 201, device.text
        pushed = await http.post(
            f"{stack.api}/v1/notifications/push",
            json={"userId": user, "title": f"Push {run}", "body": "Hello device"},
            headers=auth,
        )
        assert pushed.status_code == 202, pushed.text
        ids["push"] = pushed.json()["data"]["id"]

        email = await _final(http, stack, auth, ids["email"], "DELIVERED")
        sms = await _final(http, stack, auth, ids["sms"], "DELIVERED")
        whatsapp = await _final(http, stack, auth, ids["whatsapp"], "DELIVERED")
        push = await _final(http, stack, auth, ids["push"], "SENT")
        assert (email["provider"], sms["provider"], whatsapp["provider"], push["provider"]) == (
            "sendgrid",
            "twilio",
            "twilio",
            "fcm",
        )

        # --- the page lists each with the sandbox's status ----------------------------------
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(page_url)
        assert await page.title() == "Relay sandbox"
        # The SendGrid sandbox ids a personalization `<X-Message-Id>.<index>`.
        email_key = f"{email['providerMessageId']}.0"
        email_cells = await _cells(page, "sendgrid-messages", email_key)
        preview_url = email_cells[4]
        assert email_cells[:3] == [to_email, subject, "delivered"]
        assert preview_url.endswith("/html") and email_cells[5] == email_key
        sms_cells = await _cells(page, "twilio-messages", sms["providerMessageId"])
        assert sms_cells[:5] == ["sms", sms_to, sms_cells[2], f"SMS {run}", "delivered"]
        whatsapp_cells = await _cells(page, "twilio-messages", whatsapp["providerMessageId"])
        assert whatsapp_cells[0] == "whatsapp"
        assert whatsapp_cells[1] == f"whatsapp:{whatsapp_to}"
        assert whatsapp_cells[3:5] == [f"WhatsApp {run}", "delivered"]
        # firebase-admin returns the message's name; the sandbox ids it by its last segment.
        push_key = str(push["providerMessageId"]).rsplit("/", 1)[-1]
        push_cells = await _cells(page, "fcm-messages", push_key)
        assert push_cells[1:4] == [f"Push {run}", "Hello device", "sent"]
        assert push_cells[0].startswith("device-token-")

        content = await page.content()
        for secret in (api_key, SENDGRID_KEY, SANDBOX_AUTH_TOKEN):
            assert secret not in content, secret
        assert "PRIVATE KEY" not in content and SANDBOX_ACCOUNT_SID not in content

        # --- the HTML preview renders in the browser ----------------------------------------
        preview = await context.new_page()
        shown = await preview.goto(preview_url)
        assert shown is not None and shown.ok
        assert await preview.locator("b#bold").inner_text() == f"bold {run}"
        await preview.close()

        # --- STOP from the SMS's recipient: Relay suppresses the number ---------------------
        sms_row = page.locator(f'#twilio-messages tr[data-id="{sms["providerMessageId"]}"]')
        async with page.expect_navigation(url=page_url):
            await sms_row.get_by_role("button", name="Recipient replies STOP").click()
        flash = page.locator("#flash")
        await flash.wait_for(timeout=SHOWN_WITHIN_MS)
        assert "flash ok" in (await flash.get_attribute("class") or "")
        assert (await flash.inner_text()).startswith(f"{sms_to} replied STOP")
        inbound = page.locator("#twilio-messages tr", has_text="sms (in)")
        assert await inbound.count() >= 1
        assert sms_to in await inbound.first.locator("td").nth(2).inner_text()
        await context.close()

        async def suppressed() -> dict[str, Any] | None:
            got = await http.get(
                f"{stack.api}/v1/suppressions", params={"channel": "phone"}, headers=auth
            )
            assert got.status_code == 200, got.text
            listed: list[dict[str, Any]] = got.json()["data"]
            return next((s for s in listed if s["address"] == sms_to), None)

        entry = await eventually(suppressed, timeout=30)
        assert isinstance(entry, dict)
        assert entry["channel"] == "phone" and entry["reason"] == "stop"
        assert entry["source"] == "twilio"
        # The WhatsApp number replied nothing: it is not suppressed.
        listed = await http.get(
            f"{stack.api}/v1/suppressions", params={"channel": "phone"}, headers=auth
        )
        assert whatsapp_to not in {s["address"] for s in listed.json()["data"]}

    assert stack.stop() == 0
