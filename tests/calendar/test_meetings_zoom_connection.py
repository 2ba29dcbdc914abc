"""Meetings booked with a user's `zoom` catalog connection (`zoomIntegrationId`) instead of
the server-to-server app, on the real stack against the OAuth and Zoom sandboxes: the Zoom
sandbox sees the user's token create, move and delete the meeting and read its recording; a
refused token is refreshed once through the connection's workflow; a connection of another
provider, or none where server-to-server Zoom is not set up, is refused before anything is
booked."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from relay.calendar import repository
from tests.calendar.conftest import CalendarStack
from tests.calendar.meetings_support import history_text, meeting_request

pytestmark = [pytest.mark.e2e]


async def _post(stack: CalendarStack, body: dict[str, Any]) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/meetings", json=body)


def _zoom_meeting(stack: CalendarStack, zoom_meeting_id: str) -> dict[str, Any]:
    assert stack.zoom is not None
    (found,) = [m for m in stack.zoom.state.meetings() if str(m["id"]) == zoom_meeting_id]
    return found


def _subject(stack: CalendarStack) -> str:
    """The user the OAuth sandbox issued the zoom connection's tokens to."""
    (token, *_) = stack.issued_tokens("zoom")
    return str(token["subject"])


async def test_a_meeting_is_booked_moved_and_canceled_with_the_users_zoom_connection(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    zoom_integration = await stack.connect("zoom", "ada")
    created = await _post(stack, meeting_request(zoomIntegrationId=zoom_integration))
    assert created.status_code == 201, created.text
    meeting = created.json()["data"]
    assert meeting["status"] == "SCHEDULED"
    # Created with the user's token, not the account's server-to-server one.
    booked = _zoom_meeting(stack, meeting["zoomMeetingId"])
    assert booked["host"] == f"user:{_subject(stack)}"
    assert meeting["joinUrl"] == booked["joinUrl"]
    # The row keeps the connection, so a recovering run and the recordings route use it
    # after the run has ended.
    row = repository.find(stack.engine, meeting["id"])
    assert row is not None and row.zoom_integration_id == zoom_integration
    assert repository.state_of(row).zoom_integration_id == zoom_integration
    # The workflow carries the connection's id, never its token.
    history = await history_text(stack.client, meeting["id"])
    assert zoom_integration.encode() in history
    assert stack.access_token(zoom_integration).encode() not in history

    async with stack.http() as http:
        moved = await http.patch(
            f"/v1/meetings/{meeting['id']}", json={"startTime": "2026-12-02T08:00:00Z"}
        )
        assert moved.status_code == 200, moved.text
        assert stack.zoom.state.get(meeting["zoomMeetingId"])["start_time"] == (
            "2026-12-02T08:00:00Z"
        )
        stack.zoom.state.fire(meeting["zoomMeetingId"], "recording.completed")
        recording = await http.get(f"/v1/meetings/{meeting['id']}/recordings")
        assert recording.status_code == 200, recording.text
        assert recording.json()["data"]["available"] is True

        canceled = await http.delete(f"/v1/meetings/{meeting['id']}")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["status"] == "CANCELED"
    assert canceled.json()["data"]["zoom"]["status"] == "DELETED"
    assert stack.zoom.state.meetings() == []


async def test_a_refused_zoom_token_is_refreshed_once_through_the_connection(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    zoom_integration = await stack.connect("zoom", "ada")
    first_token = stack.access_token(zoom_integration)
    stack.expire_at_zoom(zoom_integration)  # Zoom now answers 401 to the stored token

    created = await _post(stack, meeting_request(zoomIntegrationId=zoom_integration))

    assert created.status_code == 201, created.text
    assert len(stack.issued_tokens("zoom")) == 2  # the connection's first token and one refresh
    assert stack.access_token(zoom_integration) != first_token
    booked = _zoom_meeting(stack, created.json()["data"]["zoomMeetingId"])
    assert booked["host"] == f"user:{_subject(stack)}"
    async with stack.http() as http:
        logs = await http.get(f"/v1/integrations/{zoom_integration}/sync-logs")
    actions = [log["action"] for log in logs.json()["data"]]
    assert actions.count("token_refresh") == 1, actions


async def test_a_connection_that_is_not_zooms_or_unknown_is_refused(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    google_integration = await stack.connect_google("ada")

    not_zoom = await _post(stack, meeting_request(zoomIntegrationId=google_integration))
    unknown = await _post(stack, meeting_request(zoomIntegrationId=str(uuid.uuid4())))
    malformed = await _post(stack, meeting_request(zoomIntegrationId="not-an-id"))

    assert not_zoom.status_code == 409, not_zoom.text
    assert not_zoom.json()["error"]["code"] == "CONFLICT"
    assert "google_calendar" in not_zoom.json()["error"]["message"]
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
    assert malformed.status_code == 422, malformed.text
    assert [d["field"] for d in malformed.json()["error"]["details"]] == ["zoomIntegrationId"]
    assert stack.zoom.state.meetings() == []


async def test_without_a_connection_or_server_to_server_zoom_the_create_says_so(
    calendar_stack_factory: Any,
) -> None:
    async with calendar_stack_factory(zoom=False) as stack:
        refused = await _post(stack, meeting_request())
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "zoomIntegrationId" in error["message"]
