"""The /sandbox page's calendar sections in a real browser: Debian's chromium, driven by
playwright, against `relay dev` (Temporal dev server, worker, API, and the OAuth providers,
Google Calendar and Zoom sandboxes it runs because neither Google nor Zoom has credentials)
on free ports.

A meeting booked through Relay's API is listed in the Zoom section; clicking its
"meeting.ended" button makes the Zoom sandbox send the signed event, which Relay verifies
and applies (GET /v1/meetings/{id} says ENDED) and the page then lists as delivered.
"Check URL validation" passes Zoom's challenge. No secret, and no meeting passcode, is on
the page.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser

from relay.sandbox.oauth_providers import SANDBOX_CLIENT_SECRET as OAUTH_SECRET
from relay.sandbox.zoom import SANDBOX_WEBHOOK_SECRET
from tests.conftest import eventually
from tests.ops.conftest import needs_chromium
from tests.ops.test_dev_calendar import api_key, book_meeting, meeting_status
from tests.ops.test_dev_stack import DevStack

pytestmark = [pytest.mark.e2e, needs_chromium]
SHOWN_WITHIN_MS = 30_000


async def test_meeting_ended_fired_from_the_sandbox_page_reaches_relay(
    dev_stack: DevStack, browser: Browser
) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=30) as http:
        await stack.wait_ready(http)
        auth = api_key(stack, "sandbox-calendar")
        meeting = await book_meeting(http, stack, auth, topic="Browser sync")
        zoom_id = meeting["zoomMeetingId"]
        page_url = f"http://localhost:{stack.api_port}/sandbox"

        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(page_url)
        assert await page.locator("#sandbox-google-calendar").count() == 1
        row = page.locator(f'#zoom-meetings tr[data-id="{zoom_id}"]')
        assert await row.count() == 1, await page.inner_html("#sandbox-zoom")
        cells = await row.locator("td").all_inner_texts()
        assert cells[:4] == [zoom_id, "Browser sync", "2026-12-01T15:00:00Z", "waiting"]
        assert "?" not in cells[5]  # the join URL without its passcode

        async with page.expect_navigation(url=page_url):
            await row.get_by_role("button", name="meeting.ended", exact=True).click()
        flash = page.locator("#flash")
        await flash.wait_for(timeout=SHOWN_WITHIN_MS)
        assert "flash ok" in (await flash.get_attribute("class") or "")
        assert (await flash.inner_text()).startswith(f"meeting.ended sent for meeting {zoom_id}")

        # Relay verified the signed event and the meeting's workflow applied it.
        await meeting_status(http, stack, auth, meeting["id"], "ENDED")

        async def shown_delivered() -> bool:
            await page.goto(page_url)
            webhooks = (
                await page.locator(f'#zoom-meetings tr[data-id="{zoom_id}"] td').nth(6).inner_text()
            )
            return "meeting.ended: delivered (200)" in webhooks

        await eventually(shown_delivered, timeout=30)

        async with page.expect_navigation(url=page_url):
            await page.get_by_role("button", name="Check URL validation").click()
        await flash.wait_for(timeout=SHOWN_WITHIN_MS)
        assert (await flash.inner_text()).startswith("URL validation passed")

        content = await page.content()
        for secret in (SANDBOX_WEBHOOK_SECRET, OAUTH_SECRET, meeting["password"]):
            assert secret not in content, secret
        assert auth["Authorization"].split()[1] not in content
        assert meeting["joinUrl"].split("?")[1] not in content
        await context.close()

    assert stack.stop() == 0
