"""MeetingWorkflow, against the Zoom sandbox (in this process).

- booked-moved-recorded: POST /v1/meetings with reminders, PATCH (reschedule), Zoom's
  meeting.started / meeting.ended / recording.completed (one delivered twice), ENDED.
- canceled: POST, then DELETE: the Zoom meeting deleted, the reminder canceled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.histories.scenarios import Recording, scenario, until


@contextmanager
def _zoom() -> Iterator[tuple[Any, dict[str, object]]]:
    from relay.sandbox.zoom import ZoomSandbox

    with ZoomSandbox(port=0).run_in_thread() as server:
        settings = {k.lower(): v for k, v in server.sandbox.environment().items()}
        yield server, settings


_MEETING = {
    "topic": "Recorded planning",
    "startTime": "2030-01-15T10:00:00Z",
    "duration": 30,
    "timezone": "Europe/Paris",
    "attendees": ["rec@example.com"],
    "reminders": [{"minutesBefore": 30, "channel": "email"}],
    "userId": "user-rec",
}


async def _book(stack: Any) -> dict[str, Any]:
    async with stack.http() as http:
        created = await http.post("/v1/meetings", json=_MEETING)
        created.raise_for_status()
        meeting: dict[str, Any] = created.json()["data"]
    return meeting


@scenario("MeetingWorkflow", "booked-moved-recorded")
async def booked_moved_recorded(rec: Recording) -> list[str]:
    from relay.calendar.contracts import ZOOM_EVENT_SIGNAL, meeting_workflow_id
    from relay.inbound.contracts import InboundEventSignal

    with _zoom() as (server, settings):
        async with rec.stack(**settings) as stack:
            meeting = await _book(stack)
            async with stack.http() as http:
                moved = await http.patch(
                    f"/v1/meetings/{meeting['id']}", json={"startTime": "2030-01-16T10:00:00Z"}
                )
                moved.raise_for_status()
            handle = stack.client.get_workflow_handle(meeting_workflow_id(meeting["id"]))
            server.state.fire(meeting["zoomMeetingId"], "recording.completed")
            for event_id, kind in [
                ("rec-started", "meeting.started"),
                ("rec-ended", "meeting.ended"),
                ("rec-recording", "recording.completed"),
                ("rec-recording", "recording.completed"),
            ]:
                await handle.signal(
                    ZOOM_EVENT_SIGNAL,
                    InboundEventSignal(
                        inbox_id=event_id,
                        provider="zoom",
                        event_id=event_id,
                        type=kind,
                        object_id=meeting["zoomMeetingId"],
                    ),
                )
            await handle.result()
            return [meeting_workflow_id(meeting["id"])]


@scenario("MeetingWorkflow", "canceled")
async def canceled(rec: Recording) -> list[str]:
    from relay.calendar.contracts import meeting_workflow_id

    with _zoom() as (_, settings):
        async with rec.stack(**settings) as stack:
            meeting = await _book(stack)
            async with stack.http() as http:
                (await http.delete(f"/v1/meetings/{meeting['id']}")).raise_for_status()

                async def ended() -> bool:
                    answer = (await http.get(f"/v1/meetings/{meeting['id']}")).json()["data"]
                    return bool(answer["status"] == "CANCELED")

                await until(ended)
            await stack.client.get_workflow_handle(meeting_workflow_id(meeting["id"])).result()
            return [meeting_workflow_id(meeting["id"])]
