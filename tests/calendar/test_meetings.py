"""Scheduled meetings through Relay's API on the real stack (API + worker on the Temporal dev
server) against the Zoom, Google Calendar and OAuth sandboxes: booking across both, the
saga's undo, reschedule, cancel, idempotency, bad input, Zoom's refusals and rate limits,
and Zoom's events applied to the meeting's workflow."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from relay.calendar.contracts import (
    ZOOM_EVENT_SIGNAL,
    MeetingInput,
    MeetingStatus,
    meeting_workflow_id,
)
from relay.inbound.contracts import InboundEventSignal
from relay.ledger import Ledger
from relay.models.platform import ProviderCallStatus
from tests.calendar.conftest import CalendarStack
from tests.calendar.meetings_support import history_text, meeting_request, published
from workflows.calendar import MeetingWorkflow

pytestmark = [pytest.mark.e2e]


async def _post(stack: CalendarStack, body: dict[str, Any]) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/meetings", json=body)


async def _get(stack: CalendarStack, path: str, **params: Any) -> httpx.Response:
    async with stack.http() as http:
        return await http.get(path, params=params)


def _zoom_meetings(stack: CalendarStack) -> list[dict[str, Any]]:
    assert stack.zoom is not None
    return stack.zoom.state.meetings()


def _google_event(stack: CalendarStack, event_id: str) -> dict[str, Any]:
    (found,) = [e for e in stack.google_events() if e["event"]["id"] == event_id]
    return found


def _fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return {item["field"] for item in error["details"]}


async def test_book_read_reschedule_and_cancel_across_zoom_and_google(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    integration_id = await stack.connect_google("ada")
    created = await _post(
        stack,
        meeting_request(
            attendees=["Bob@Example.com", "carol@example.com"],
            integrationId=integration_id,
            reminders=[{"minutesBefore": 30, "channel": "email"}],
            userId="ada",
        ),
    )
    assert created.status_code == 201, created.text
    meeting = created.json()["data"]
    assert meeting["status"] == "SCHEDULED"
    zoom = stack.zoom.state.get(meeting["zoomMeetingId"])
    assert meeting["joinUrl"] == zoom["join_url"]
    assert meeting["startUrl"] == zoom["start_url"]
    assert meeting["password"] == zoom["password"]
    assert zoom["topic"] == "Quarterly planning" and zoom["duration"] == 45
    assert zoom["start_time"] == "2026-12-01T15:00:00Z"
    assert zoom["settings"]["host_video"] is True and zoom["settings"]["waiting_room"] is True
    assert meeting["zoom"] == {
        "meetingId": meeting["zoomMeetingId"],
        "status": "CREATED",
        "joinUrl": zoom["join_url"],
    }
    calendar = meeting["calendarEvent"]
    assert calendar["status"] == "CREATED" and calendar["integrationId"] == integration_id
    event = _google_event(stack, calendar["eventId"])["event"]
    assert zoom["join_url"] in event["description"]
    assert {a["email"] for a in event["attendees"]} == {"bob@example.com", "carol@example.com"}
    (reminder,) = meeting["reminders"]
    assert reminder["status"] == "PENDING"
    assert reminder["dueAt"].startswith("2026-12-01T14:30:00")

    # The host's link and the password never enter the workflow's history.
    history = await history_text(stack.client, meeting["id"])
    assert zoom["join_url"].encode() in history  # the check can see payloads
    assert zoom["start_url"].encode() not in history
    assert zoom["start_url"].split("zak=")[1].encode() not in history
    assert zoom["password"].encode() not in history

    read = await _get(stack, f"/v1/meetings/{meeting['id']}")
    assert read.status_code == 200 and read.json()["data"]["startUrl"] == zoom["start_url"]
    listed = await _get(stack, "/v1/meetings", userId="ada", status="SCHEDULED")
    assert [m["id"] for m in listed.json()["data"]] == [meeting["id"]]
    assert listed.json()["data"][0]["startUrl"] is None
    assert (await _get(stack, "/v1/meetings", userId="nobody")).json()["data"] == []

    async with stack.http() as http:
        moved = await http.patch(
            f"/v1/meetings/{meeting['id']}",
            json={"startTime": "2026-12-02T09:00:00+01:00", "duration": 60},
        )
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["reminders"][0]["dueAt"].startswith("2026-12-02T07:30:00")
    zoom = stack.zoom.state.get(meeting["zoomMeetingId"])
    assert zoom["start_time"] == "2026-12-02T08:00:00Z" and zoom["duration"] == 60
    event = _google_event(stack, calendar["eventId"])["event"]
    assert event["start"]["dateTime"].startswith("2026-12-02T08:00:00")
    assert event["end"]["dateTime"].startswith("2026-12-02T09:00:00")

    async with stack.http() as http:
        canceled = await http.delete(f"/v1/meetings/{meeting['id']}")
    assert canceled.status_code == 200, canceled.text
    data = canceled.json()["data"]
    assert data["status"] == "CANCELED"
    assert data["zoom"]["status"] == "DELETED" and data["calendarEvent"]["status"] == "DELETED"
    assert data["reminders"][0]["status"] == "CANCELED"
    assert all(m["id"] != int(meeting["zoomMeetingId"]) for m in _zoom_meetings(stack))
    assert _google_event(stack, calendar["eventId"])["event"]["status"] == "cancelled"
    handle = stack.client.get_workflow_handle_for(
        MeetingWorkflow.run, meeting_workflow_id(meeting["id"])
    )
    assert (await handle.result()).status == MeetingStatus.CANCELED
    async with stack.http() as http:
        again = await http.delete(f"/v1/meetings/{meeting['id']}")
        moved_again = await http.patch(f"/v1/meetings/{meeting['id']}", json={"duration": 30})
    assert again.status_code == 409 and moved_again.status_code == 409


@pytest.mark.parametrize("fault", [400, 503], ids=["google-refuses", "google-down"])
async def test_the_zoom_meeting_is_deleted_when_the_calendar_step_fails(
    calendar_stack: CalendarStack, fault: int
) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ben")
    # 400: final at once. 503: every attempt of the step fails (more faults than attempts).
    stack.google_fault(count=1 if fault == 400 else 20, status=fault)
    response = await _post(
        stack,
        meeting_request(attendees=["dan@example.com"], integrationId=integration_id),
    )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "PROVIDER_ERROR"
    assert "Google Calendar" in error["message"]
    assert error["details"]["step"] == "calendar"
    meeting_id = error["details"]["meetingId"]
    assert _zoom_meetings(stack) == []  # booked, then undone: no orphan
    stack.google_fault(count=0)
    meeting = (await _get(stack, f"/v1/meetings/{meeting_id}")).json()["data"]
    assert meeting["status"] == "FAILED"
    assert meeting["zoom"]["status"] == "DELETED"
    assert meeting["calendarEvent"]["status"] == "FAILED"
    assert "Google Calendar" in meeting["failure"]["message"]
    handle = stack.client.get_workflow_handle(meeting_workflow_id(meeting_id))
    await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_the_same_idempotency_key_books_one_meeting(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("cy")
    body = meeting_request(
        idempotencyKey=f"key-{uuid.uuid4().hex}",
        userId="cy",
        integrationId=integration_id,
        recurrence="RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=6",
    )
    first = await _post(stack, body)
    second = await _post(stack, body)
    assert first.status_code == 201 and second.status_code == 201, second.text
    meeting = first.json()["data"]
    assert meeting["id"] == second.json()["data"]["id"]
    assert meeting["zoomMeetingId"] == second.json()["data"]["zoomMeetingId"]
    assert len(_zoom_meetings(stack)) == 1
    assert len(stack.google_events()) == 1
    # One RRULE, both providers: Zoom's recurring meeting and the recurring event.
    assert stack.zoom is not None
    zoom = stack.zoom.state.get(meeting["zoomMeetingId"])
    assert zoom["type"] == 8
    assert zoom["recurrence"] == {
        "type": 2,
        "repeat_interval": 1,
        "weekly_days": "3,5",
        "end_times": 6,
    }
    event = _google_event(stack, meeting["calendarEvent"]["eventId"])["event"]
    assert event["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=6"]
    other = await _post(stack, body | {"topic": "Something else"})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["details"][0]["field"] == "idempotencyKey"


async def test_bad_input_is_refused_naming_the_field(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"recurrence": "RRULE:FREQ=SOMETIMES"}, "recurrence"),
        ({"recurrence": "RRULE:FREQ=YEARLY;COUNT=3"}, "recurrence"),  # Zoom cannot repeat so
        ({"recurrence": "RRULE:FREQ=WEEKLY;BYDAY=MO"}, "recurrence"),  # Zoom needs an end
        ({"attendees": ["not-an-email"]}, "attendees.0"),
        ({"duration": 0}, "duration"),
        ({"startTime": "tomorrow"}, "startTime"),
        ({"startTime": "2026-12-01T15:00:00", "timezone": None}, "startTime"),
        ({"settings": {"hostVideo": True, "selfDestruct": True}}, "settings"),
        ({"reminders": [{"minutesBefore": 10, "channel": "pigeon"}]}, "reminders.0.channel"),
        ({"reminders": [{"minutesBefore": 10, "channel": "push"}]}, "reminders"),
    ]
    for change, field in cases:
        body = {k: v for k, v in (meeting_request() | change).items() if v is not None}
        assert field in _fields(await _post(stack, body)), (change, field)
    unknown = await _post(stack, meeting_request(integrationId=str(uuid.uuid4())))
    assert unknown.status_code == 404, unknown.text
    async with stack.http() as http:
        pending = await http.post(
            "/v1/integrations/oauth/initiate",
            json={
                "userId": "eve",
                "provider": "google_calendar",
                "redirectUri": "http://localhost:3000/done",
            },
        )
    assert pending.status_code == 201, pending.text
    not_connected = await _post(
        stack, meeting_request(integrationId=pending.json()["data"]["integrationId"])
    )
    assert not_connected.status_code == 409, not_connected.text
    other_provider = await stack.connect("zoom", "eve")  # connected, but not Google
    not_google = await _post(stack, meeting_request(integrationId=other_provider))
    assert not_google.status_code == 409, not_google.text
    assert not_google.json()["error"]["details"]["provider"] == "zoom"
    assert _zoom_meetings(stack) == []
    assert (await _get(stack, f"/v1/meetings/{uuid.uuid4()}")).status_code == 404


async def test_zoom_rate_limits_are_waited_out_and_lists_are_paginated(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    stack.zoom.state.fail_next(2, 429)  # Retry-After: 1
    response = await _post(stack, meeting_request(userId="hal"))
    assert response.status_code == 201, response.text
    assert len(_zoom_meetings(stack)) == 1
    for topic in ("Second", "Third"):
        assert (await _post(stack, meeting_request(userId="hal", topic=topic))).status_code == 201
    first = (await _get(stack, "/v1/meetings", userId="hal", limit=2)).json()
    assert [m["topic"] for m in first["data"]] == ["Third", "Second"]
    rest = (await _get(stack, "/v1/meetings", userId="hal", cursor=first["nextCursor"])).json()
    assert [m["topic"] for m in rest["data"]] == ["Quarterly planning"]
    assert rest["nextCursor"] is None


async def test_a_zoom_refusal_is_a_provider_error_with_zooms_message(
    calendar_stack_factory: Callable[..., contextlib.AbstractAsyncContextManager[CalendarStack]],
) -> None:
    async with calendar_stack_factory(zoom_client_secret="not-the-secret") as stack:
        response = await _post(stack, meeting_request())
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "PROVIDER_ERROR"
        assert "Invalid client_id or client_secret" in error["message"]
        assert "not-the-secret" not in response.text
        meeting = (await _get(stack, f"/v1/meetings/{error['details']['meetingId']}")).json()
        assert meeting["data"]["status"] == "FAILED"
        # The same idempotencyKey is answered as the first time, and books nothing.
        keyed = meeting_request(idempotencyKey="refused-once")
        first, again = await _post(stack, keyed), await _post(stack, keyed)
        assert first.status_code == again.status_code == 502, again.text
        assert (
            first.json()["error"]["details"]["meetingId"]
            == (again.json()["error"]["details"]["meetingId"])
        )
        assert meeting["data"]["zoom"]["status"] == "FAILED"
        assert _zoom_meetings(stack) == []


async def test_zoom_events_move_the_meeting_and_a_recording_is_published_once(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    created = await _post(stack, meeting_request(userId="fay"))
    meeting = created.json()["data"]
    handle = stack.client.get_workflow_handle_for(
        MeetingWorkflow.run, meeting_workflow_id(meeting["id"])
    )

    async def signal(event_id: str, kind: str) -> None:
        await handle.signal(
            ZOOM_EVENT_SIGNAL,
            InboundEventSignal(
                inbox_id=str(uuid.uuid4()),
                provider="zoom",
                event_id=event_id,
                type=kind,
                object_id=meeting["zoomMeetingId"],
            ),
        )

    async def status() -> str:
        return str((await _get(stack, f"/v1/meetings/{meeting['id']}")).json()["data"]["status"])

    await signal("ev-started", "meeting.started")
    await eventually_async(status, "STARTED")
    no_recording = (await _get(stack, f"/v1/meetings/{meeting['id']}/recordings")).json()
    assert no_recording["data"]["available"] is False
    await signal("ev-ended", "meeting.ended")
    await eventually_async(status, "ENDED")
    # Zoom finishes the recording (the sandbox's control creates its files). This test
    # signals the workflow itself (POST /webhooks/zoom has tests of its own), so the
    # sandbox sends no webhook of its own.
    stack.zoom.state.webhook_url = None
    stack.zoom.state.fire(meeting["zoomMeetingId"], "recording.completed")
    await signal("ev-recording", "recording.completed")
    await signal("ev-recording", "recording.completed")  # a duplicate delivery
    result = await handle.result()  # ENDED and the recording published: the run is over
    assert result.status == MeetingStatus.ENDED and result.recording_published
    assert result.duplicates_dropped == 1 and result.events_applied == 3
    events = published(stack.engine, meeting["id"])
    assert [e["type"] for e in events] == ["meeting.recording_ready"]
    files = events[0]["data"]["recording"]["files"]
    assert files and all(f["downloadUrl"] and f["playUrl"] for f in files)
    recording = (await _get(stack, f"/v1/meetings/{meeting['id']}/recordings")).json()["data"]
    assert recording["available"] is True
    assert {f["downloadUrl"] for f in recording["files"]} == {f["downloadUrl"] for f in files}

    # A later event for the ended run starts a recovering run that applies it from the row.
    await stack.client.start_workflow(
        MeetingWorkflow.run,
        MeetingInput(meeting_id=meeting["id"], recover=True),
        id=meeting_workflow_id(meeting["id"]),
        task_queue=stack.settings.temporal_task_queue,
        start_signal=ZOOM_EVENT_SIGNAL,
        start_signal_args=[
            InboundEventSignal(
                inbox_id="i", provider="zoom", event_id="ev-late", type="recording.completed"
            )
        ],
    )
    recovered = await stack.client.get_workflow_handle_for(
        MeetingWorkflow.run, meeting_workflow_id(meeting["id"])
    ).result()
    assert recovered.status == MeetingStatus.ENDED and recovered.events_applied == 1
    assert len(published(stack.engine, meeting["id"])) == 1  # one recording, one event


async def eventually_async(read: Callable[[], Any], expected: object, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if value == expected:
            return
        if loop.time() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.1)


async def test_zooms_signed_webhooks_reach_the_meeting(calendar_stack: CalendarStack) -> None:
    """The whole path: the sandbox fires Zoom's signed webhooks at POST /webhooks/zoom, the
    inbox forwards them to `meeting-{id}`, and the run ends once the recording is out."""
    stack = calendar_stack
    assert stack.zoom is not None
    meeting = (await _post(stack, meeting_request(userId="gus"))).json()["data"]
    handle = stack.client.get_workflow_handle_for(
        MeetingWorkflow.run, meeting_workflow_id(meeting["id"])
    )

    async def status() -> str:
        return str((await _get(stack, f"/v1/meetings/{meeting['id']}")).json()["data"]["status"])

    stack.zoom.state.fire(meeting["zoomMeetingId"], "meeting.started")
    await eventually_async(status, "STARTED")
    stack.zoom.state.fire(meeting["zoomMeetingId"], "meeting.ended")
    await eventually_async(status, "ENDED")
    stack.zoom.state.fire(meeting["zoomMeetingId"], "recording.completed")
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == MeetingStatus.ENDED and result.recording_published
    assert [e["type"] for e in published(stack.engine, meeting["id"])] == [
        "meeting.recording_ready"
    ]


async def test_a_zoom_create_whose_answer_was_lost_keeps_the_meeting_it_made(
    calendar_stack: CalendarStack,
) -> None:
    # Zoom booked the meeting but the connection dropped before its answer arrived: the
    # next attempt finds it in the host's list instead of booking a second one.
    stack = calendar_stack
    assert stack.zoom is not None
    stack.zoom.state.lose_next_answers(1)
    response = await _post(stack, meeting_request(userId="ivy", topic="Lost answer"))
    assert response.status_code == 201, response.text
    meeting = response.json()["data"]
    (booked,) = [m for m in _zoom_meetings(stack) if m["topic"] == "Lost answer"]
    assert str(booked["id"]) == meeting["zoomMeetingId"]
    assert meeting["joinUrl"] == booked["joinUrl"]
    # The ledger shows the lost answer: a second attempt, which reconciled.
    call = Ledger(stack.engine).lookup(f"meeting-{meeting['id']}:zoom-create")
    assert call is not None
    assert (call.status, call.attempts) == (ProviderCallStatus.SUCCEEDED, 2)
    assert call.result == {"zoomMeetingId": meeting["zoomMeetingId"], "joinUrl": booked["joinUrl"]}
