"""The /sandbox page's publishing section in a real browser: Debian's chromium, driven by
playwright, against `relay dev` (Temporal dev server, worker, API, and the OAuth providers
and publishing platforms sandboxes it runs because no platform has credentials) on free
ports.

A YouTube connection made through Relay's OAuth flow uploads a video with Relay's YouTube
adapter; the section lists the post as processing. Clicking its "Finish processing" button
ends YouTube's processing, which the adapter then reads as published, and the page lists
the post so. No access token, and no key, is on the page.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser

from relay.publishing.adapters import PublishState
from relay.publishing.providers import api_bases, build_adapters
from relay.sandbox.oauth_providers import SANDBOX_CLIENT_SECRET as OAUTH_SECRET
from relay.settings import Settings
from tests.ops.conftest import needs_chromium
from tests.ops.test_dev_calendar import sandbox_base
from tests.ops.test_dev_publishing import PROCESSING_SECONDS, api_key, ask, connect
from tests.ops.test_dev_stack import DevStack

pytestmark = [pytest.mark.e2e, needs_chromium]
SHOWN_WITHIN_MS = 30_000


async def test_finish_processing_from_the_sandbox_page(
    dev_stack: DevStack, browser: Browser
) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=60) as http:
        await stack.wait_ready(http)
        log = stack.log()
        oauth, base = sandbox_base(log, "OAuth"), sandbox_base(log, "Publishing")
        auth = api_key(stack, "sandbox-publishing")
        token = (await connect(http, stack, auth, oauth, "youtube"))["accessToken"]
        slow = {"seconds": PROCESSING_SECONDS}
        (await http.post(f"{base}/_sandbox/processing", json=slow)).raise_for_status()
        bases = api_bases(Settings(_env_file=None, youtube_api_base=base))  # type: ignore[call-arg]
        async with httpx.AsyncClient(timeout=30) as client:
            youtube = build_adapters(client, bases)["youtube"]
            uploaded = await youtube.publish(ask("youtube", token))
            assert uploaded.state is PublishState.PROCESSING and uploaded.remote_id
            video = uploaded.remote_id
            page_url = f"http://localhost:{stack.api_port}/sandbox"

            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(page_url)
            assert await page.locator("#sandbox-publishing").count() == 1
            platforms = await page.locator("#publishing-platforms tbody tr").all()
            assert len(platforms) == 6
            row = page.locator(f'#publishing-posts tr[data-id="{video}"]')
            assert await row.count() == 1, await page.inner_html("#sandbox-publishing")
            cells = await row.locator("td").all_inner_texts()
            assert cells[:5] == [
                "YouTube",
                video,
                "Relay dev publishes to youtube",
                "processing",
                "no",
            ]

            async with page.expect_navigation(url=page_url):
                await row.get_by_role("button", name="Finish processing", exact=True).click()
            flash = page.locator("#flash")
            await flash.wait_for(timeout=SHOWN_WITHIN_MS)
            assert "flash ok" in (await flash.get_attribute("class") or "")
            assert await flash.inner_text() == f"YouTube {video}: processing succeeded"
            status = await row.locator("td").nth(3).inner_text()
            assert status == "published"
            assert await row.get_by_role("button").count() == 0

            done = await youtube.status(uploaded, token)
            assert done.state is PublishState.PUBLISHED, done

            content = await page.content()
            for secret in (token, OAUTH_SECRET, auth["Authorization"].split()[1]):
                assert secret not in content
            await context.close()

    assert stack.stop() == 0
