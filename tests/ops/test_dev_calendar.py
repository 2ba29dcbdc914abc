"""`relay dev` runs the calendar sandboxes: with no Google or Zoom credentials in development
(SANDBOX=auto) it starts the OAuth providers sandbox (every catalog provider without a client
of its own; GitHub has one here and stays real), the Google Calendar sandbox as its token
sink, and the Zoom sandbox sending its signed webhooks to Relay's /webhooks/zoom.

A Google connection completes through Relay's real OAuth flow against the OAuth sandbox and
its token books an event in the Google sandbox (listed on /sandbox); a meeting booked through POST /v1/meetings
is ended by the Zoom sandbox's signed meeting.ended, which Relay verifies and applies; and
Zoom's URL-validation round trip passes.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.calendar.conftest import APP_REDIRECT, approve
from tests.conftest import eventually
from tests.ops.test_dev_stack import DevStack

pytestmark = pytest.mark.e2e
APPLIED_WITHIN_SECONDS = 60


def banner_line(log: str, label: str) -> str:
    found = re.search(rf"^  {label}\s+(.+)$", log, re.M)
    assert found, log
    return found.group(1).strip()


def sandbox_base(log: str, label: str) -> str:
    """The loopback base URL a banner line names (`sandboxed (local … at http://…)`)."""
    found = re.search(r"(http://127\.0\.0\.1:\d+)", banner_line(log, label))
    assert found, log
    return found.group(1)


def api_key(stack: DevStack, name: str) -> dict[str, str]:
    created = stack.relay("keys", "create", name)
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


async def book_meeting(
    http: httpx.AsyncClient, stack: DevStack, auth: dict[str, str], **extra: Any
) -> dict[str, Any]:
    created = await http.post(
        f"{stack.api}/v1/meetings",
        json={
            "topic": "Sandbox sync",
            "startTime": "2026-12-01T15:00:00Z",
            "duration": 30,
            "userId": "dev-calendar",
        }
        | extra,
        headers=auth,
    )
    assert created.status_code == 201, created.text
    meeting: dict[str, Any] = created.json()["data"]
    return meeting


async def meeting_status(
    http: httpx.AsyncClient, stack: DevStack, auth: dict[str, str], meeting_id: str, status: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        got = await http.get(f"{stack.api}/v1/meetings/{meeting_id}", headers=auth)
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()["data"]
        return data if data["status"] == status else None

    found = await eventually(reached, timeout=APPLIED_WITHIN_SECONDS)
    assert isinstance(found, dict)
    return found


async def test_relay_dev_runs_the_calendar_sandboxes(dev_stack: DevStack) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=30) as http:
        await stack.wait_ready(http)
        log = stack.log()
        assert banner_line(log, "OAuth").endswith("; real: github)")
        assert "local Google Calendar" in banner_line(log, "Calendar")
        assert f"webhooks to http://localhost:{stack.api_port}/webhooks/zoom" in banner_line(
            log, "Zoom"
        )
        oauth = sandbox_base(log, "OAuth")
        zoom = sandbox_base(log, "Zoom")
        auth = api_key(stack, "dev-calendar")

        # GitHub has a client of its own: its real URLs; Google is the sandbox's.
        providers = (await http.get(f"{stack.api}/v1/providers", headers=auth)).json()["data"]
        configured = {p["key"]: p for p in providers}
        assert configured["google_calendar"]["configured"] is True

        # --- a Google connection through the OAuth sandbox, used against Google's ---------
        started = await http.post(
            f"{stack.api}/v1/integrations/oauth/initiate",
            json={
                "userId": "dev-calendar",
                "provider": "google_calendar",
                "redirectUri": APP_REDIRECT,
            },
            headers=auth,
        )
        assert started.status_code == 201, started.text
        data = started.json()["data"]
        assert data["authorizationUrl"].startswith(f"{oauth}/google_calendar/authorize")
        github = await http.post(
            f"{stack.api}/v1/integrations/oauth/initiate",
            json={"userId": "dev-calendar", "provider": "github", "redirectUri": APP_REDIRECT},
            headers=auth,
        )
        assert github.json()["data"]["authorizationUrl"].startswith("https://github.com/")
        back = await approve(data["authorizationUrl"])
        assert back.startswith(f"http://localhost:{stack.api_port}/"), back
        landed = await http.get(back)
        assert landed.status_code == 302 and "status=success" in landed.headers["location"]
        integration = await http.get(
            f"{stack.api}/v1/integrations/{data['integrationId']}", headers=auth
        )
        assert integration.json()["data"]["status"] == "CONNECTED", integration.text
        event = await http.post(
            f"{stack.api}/v1/calendar/events",
            json={
                "integrationId": data["integrationId"],
                "summary": "Booked in the dev stack",
                "start": "2026-12-01T10:00:00+01:00",
                "end": "2026-12-01T11:00:00+01:00",
            },
            headers=auth,
        )
        assert event.status_code == 201, event.text
        page = await http.get(f"{stack.api}/sandbox")
        assert 'id="google-calendar-events"' in page.text
        assert f'data-id="{event.json()["data"]["id"]}"' in page.text
        assert "Booked in the dev stack" in page.text

        # --- Zoom: a meeting ended by the sandbox's signed webhook --------------------------
        meeting = await book_meeting(http, stack, auth)
        assert meeting["joinUrl"].startswith(f"{zoom}/j/")
        fired = await http.post(
            f"{zoom}/_sandbox/meetings/{meeting['zoomMeetingId']}/events",
            json={"event": "meeting.ended"},
        )
        assert fired.status_code == 202, fired.text
        await meeting_status(http, stack, auth, meeting["id"], "ENDED")
        inbound = await http.get(
            f"{stack.api}/v1/inbound-events", params={"provider": "zoom"}, headers=auth
        )
        assert inbound.status_code == 200, inbound.text
        (received,) = [
            e for e in inbound.json()["data"] if e["objectId"] == meeting["zoomMeetingId"]
        ]
        assert received["type"] == "meeting.ended" and received["status"] == "FORWARDED"

        checked = await http.post(f"{zoom}/_sandbox/validate", json={})
        assert checked.json()["passed"] is True, checked.text

    assert stack.stop() == 0
    assert "Traceback" not in stack.log()
