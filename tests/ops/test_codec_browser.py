"""The README's Temporal UI flow in a real browser: Debian's chromium, driven by playwright,
against `relay dev` (the Temporal dev server and its UI, a worker, the API) on free ports.

Without a codec session the workflow's page shows the ciphertext stored in Temporal's
history; after /codec/login (a `codec`-scoped key) and one click to the UI it shows the
input as JSON; after logging out, ciphertext again.
"""

from __future__ import annotations

import base64
import json
import re
import uuid

import httpx
import pytest
from google.protobuf import json_format
from playwright.async_api import Browser, Page
from temporalio.client import Client

from relay.crypto import Keyring
from relay.temporal import connect
from tests.ops.conftest import needs_chromium
from tests.ops.test_dev_stack import DevStack

pytestmark = [pytest.mark.e2e, needs_chromium]
SHOWN_WITHIN_MS = 45_000


def _banner_url(log: str, label: str) -> str:
    found = re.search(rf"^  {label}\s+(\S+)$", log, re.M)
    assert found, log
    return found.group(1)


async def _stored_input(stack: DevStack, workflow_id: str) -> str:
    """The input's data as Temporal stores it (base64 of the ciphertext), read without codec."""
    plain = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    payload = json_format.MessageToDict(started.input)["payloads"][0]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"binary/encrypted"
    return str(payload["data"])


async def _input_text(page: Page, url: str, expected: str) -> str:
    """Open the run's page and wait until its input shows `expected`; the page's text."""
    await page.goto(url)
    await page.get_by_text(expected, exact=False).first.wait_for(timeout=SHOWN_WITHIN_MS)
    return await page.inner_text("body")


async def test_operator_reads_decoded_payloads_in_the_temporal_ui_after_codec_login(
    dev_stack: DevStack, browser: Browser, keyring_spec: str
) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=10) as http:
        await stack.wait_ready(http)
    log = stack.log()
    ui = _banner_url(log, "Temporal UI")
    login = _banner_url(log, "codec login")
    assert ui == f"http://localhost:{stack.ui_port}"
    assert login == f"http://localhost:{stack.api_port}/codec/login"

    created = stack.relay("keys", "create", "operator", "--scope", "codec")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    # A run whose input is known; no worker polls its queue, so it stays open as is.
    marker = f"decoded-{uuid.uuid4().hex}"
    workflow_id = f"codec-browser-{uuid.uuid4().hex[:8]}"
    client = await connect(stack.settings(), Keyring.parse(keyring_spec))
    await client.start_workflow(
        "CodecBrowserCheck",
        {"marker": marker, "note": "shown only to operators"},
        id=workflow_id,
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
    )
    ciphertext = await _stored_input(stack, workflow_id)
    assert marker not in base64.b64decode(ciphertext).decode(errors="replace")
    run_page = f"{ui}/namespaces/default/workflows/{workflow_id}"

    # --- without a codec session: the ciphertext, not the JSON ---------------------------
    stranger = await browser.new_context()
    page = await stranger.new_page()
    shown = await _input_text(page, run_page, ciphertext[:40])
    assert marker not in shown
    await stranger.close()

    # --- the operator: /codec/login, paste the key, follow the link to the UI ------------
    operator = await browser.new_context()
    page = await operator.new_page()
    await page.goto(login)
    await page.fill('input[name="apiKey"]', key)
    await page.click("button")
    confirmation = await page.inner_text("#codec-session-open")
    assert "This browser can read payloads until" in confirmation
    link = page.locator("#temporal-ui")
    assert await link.get_attribute("href") == ui
    cookies = await operator.cookies()
    assert [(c["name"], c["httpOnly"], c["path"]) for c in cookies] == [
        ("relay_codec", True, "/codec")
    ]
    assert cookies[0]["value"] != key
    await link.click()
    await page.wait_for_url(f"{ui}/**")

    shown = await _input_text(page, run_page, marker)
    assert ciphertext[:40] not in shown
    # The decoded input as the UI renders it: the workflow's argument, as JSON.
    block = shown[shown.index("{", shown.index("Input")) :]
    assert json.loads(block[: block.index("}") + 1]) == {
        "marker": marker,
        "note": "shown only to operators",
    }

    # --- logged out (the session revoked server-side): ciphertext again -------------------
    logout = await page.request.post(f"http://localhost:{stack.api_port}/codec/logout")
    assert logout.status == 204
    shown = await _input_text(page, run_page, ciphertext[:40])
    assert marker not in shown
    await operator.close()

    assert stack.stop() == 0
