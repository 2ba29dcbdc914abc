"""POST /webhooks/zoom on the real stack (API + worker on the Temporal dev server) with the
Zoom sandbox sending its signed webhooks: the signature checked (forged, stale, missing:
400 and nothing written), Zoom's URL-validation challenge answered as the sandbox checks
it, an event recorded once and forwarded once to its meeting's workflow, an event for a
meeting Relay does not know (or of another type) recorded IGNORED, and a meeting's
meeting.ended and recording.completed from the sandbox shown by GET /v1/meetings/{id}."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from relay.calendar.contracts import meeting_workflow_id
from relay.calendar.zoom_webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from relay.models.inbound import InboundEvent
from relay.sandbox.zoom import SANDBOX_WEBHOOK_SECRET
from tests.calendar.conftest import CalendarStack
from tests.calendar.meetings_support import meeting_request, published
from tests.conftest import eventually
from workflows.calendar import MeetingWorkflow

pytestmark = [pytest.mark.e2e]

inbox = InboundEvent.__table__  # type: ignore[attr-defined]


def zoom_event(kind: str, zoom_meeting_id: str, **extra: Any) -> bytes:
    """A Zoom meeting event's body, as Zoom shapes it."""
    body = {
        "event": kind,
        "event_ts": int(time.time() * 1000),
        "payload": {
            "account_id": "relaySandboxAcct01",
            "object": {
                "id": zoom_meeting_id,
                "uuid": f"{uuid.uuid4().hex[:22]}==",
                "topic": "Quarterly planning",
                "type": 2,
            },
        },
        **extra,
    }
    return json.dumps(body).encode()


def signed(
    body: bytes, *, secret: str = SANDBOX_WEBHOOK_SECRET, at: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "content-type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


async def deliver(stack: CalendarStack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with stack.http(authenticated=False) as http:
        return await http.post("/webhooks/zoom", content=body, headers=headers)


def zoom_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(inbox).where(inbox.c.provider == "zoom")))


def zoom_row_count(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(inbox).where(inbox.c.provider == "zoom")
        return int(connection.execute(query).scalar_one())


async def book(stack: CalendarStack, user_id: str) -> dict[str, Any]:
    """A meeting booked through POST /v1/meetings (Zoom only)."""
    async with stack.http() as http:
        created = await http.post("/v1/meetings", json=meeting_request(userId=user_id))
    assert created.status_code == 201, created.text
    meeting: dict[str, Any] = created.json()["data"]
    assert meeting["status"] == "SCHEDULED"
    return meeting


async def read_meeting(stack: CalendarStack, meeting_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        got = await http.get(f"/v1/meetings/{meeting_id}")
    assert got.status_code == 200, got.text
    data: dict[str, Any] = got.json()["data"]
    return data


async def test_a_signed_event_is_recorded_once_and_applied_once(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    meeting = await book(stack, "webhook-once")
    body = zoom_event("meeting.started", meeting["zoomMeetingId"])

    first = await deliver(stack, body, signed(body))
    assert first.status_code == 200, first.text
    accepted = first.json()["data"]
    assert accepted["duplicate"] is False and accepted["status"] == "FORWARDED"
    event = json.loads(body)
    uuid_part = event["payload"]["object"]["uuid"]
    assert accepted["eventId"] == f"meeting.started:{uuid_part}:{event['event_ts']}"

    # Zoom resends the same body (a new timestamp, so a new signature): recorded once.
    again = await deliver(stack, body, signed(body, at=time.time() + 1))
    assert again.status_code == 200, again.text
    assert again.json()["data"]["duplicate"] is True
    assert again.json()["data"]["id"] == accepted["id"]

    (row,) = [r for r in zoom_rows(stack.engine) if r.event_id == accepted["eventId"]]
    assert row.type == "meeting.started" and row.object_id == meeting["zoomMeetingId"]
    assert row.target["workflow_id"] == meeting_workflow_id(meeting["id"])
    assert uuid_part not in row.payload  # sealed in the database

    async def started() -> dict[str, Any] | None:
        data = await read_meeting(stack, meeting["id"])
        return data if data["status"] == "STARTED" else None

    await eventually(started, timeout=30)
    handle = stack.client.get_workflow_handle_for(
        MeetingWorkflow.run, meeting_workflow_id(meeting["id"])
    )
    assert await handle.query(MeetingWorkflow.seen_events) == [accepted["eventId"]]
    state = await handle.query(MeetingWorkflow.state)
    # Forwarded once: the duplicate never reached the workflow.
    assert state.events_applied == 1 and state.duplicates_dropped == 0


async def test_forged_stale_or_unsigned_deliveries_are_refused_and_write_nothing(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    meeting = await book(stack, "webhook-refused")
    body = zoom_event("meeting.ended", meeting["zoomMeetingId"])
    before = zoom_row_count(stack.engine)
    good = signed(body)
    refusals = {
        "forged": signed(body, secret="not-the-zoom-secret-token"),
        "stale": signed(body, at=time.time() - 310),
        "dated ahead": signed(body, at=time.time() + 310),
        "body changed": good,  # the signature of another body
        "no signature": {k: v for k, v in good.items() if k != SIGNATURE_HEADER},
        "no timestamp": {k: v for k, v in good.items() if k != TIMESTAMP_HEADER},
        "no headers": {"content-type": "application/json"},
        "not a timestamp": {**good, TIMESTAMP_HEADER: "yesterday"},
    }
    for why, headers in refusals.items():
        content = (
            body.replace(b"meeting.ended", b"meeting.endeD") if why == "body changed" else body
        )
        refused = await deliver(stack, content, headers)
        assert refused.status_code == 400, (why, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "INVALID_SIGNATURE", why
        assert SANDBOX_WEBHOOK_SECRET not in refused.text
    assert zoom_row_count(stack.engine) == before
    assert (await read_meeting(stack, meeting["id"]))["status"] == "SCHEDULED"

    # The same body, signed: accepted.
    accepted = await deliver(stack, body, signed(body))
    assert accepted.status_code == 200, accepted.text
    assert zoom_row_count(stack.engine) == before + 1


async def test_the_url_validation_challenge_passes_the_zoom_sandboxs_check(
    calendar_stack: CalendarStack,
    calendar_stack_factory: Callable[..., AbstractAsyncContextManager[CalendarStack]],
) -> None:
    stack = calendar_stack
    assert stack.zoom is not None
    before = zoom_row_count(stack.engine)
    async with httpx.AsyncClient(timeout=30) as http:
        checked = await http.post(f"{stack.zoom.api_base}/_sandbox/validate", json={})
    assert checked.status_code == 200, checked.text
    assert checked.json() == {"passed": True, "responseStatus": 200, "reason": None}
    assert zoom_row_count(stack.engine) == before  # a challenge is not an event

    # Unsigned, or signed with another secret, the challenge is refused like any event.
    body = json.dumps(
        {"event": "endpoint.url_validation", "payload": {"plainToken": "abc"}, "event_ts": 1}
    ).encode()
    forged = await deliver(stack, body, signed(body, secret="not-the-zoom-secret-token"))
    assert forged.status_code == 400 and "encryptedToken" not in forged.text
    answered = await deliver(stack, body, signed(body))
    assert answered.status_code == 200
    assert set(answered.json()) == {"plainToken", "encryptedToken"}

    # A Relay whose ZOOM_WEBHOOK_SECRET is not the one Zoom signs with fails Zoom's check.
    async with calendar_stack_factory(zoom_webhook_secret="another-secret-token") as other:
        assert other.zoom is not None
        async with httpx.AsyncClient(timeout=30) as http:
            failed = await http.post(f"{other.zoom.api_base}/_sandbox/validate", json={})
    assert failed.json()["passed"] is False and failed.json()["responseStatus"] == 400


async def test_events_relay_does_not_apply_are_recorded_ignored(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    unknown = zoom_event("meeting.ended", "98765432101")
    answered = await deliver(stack, unknown, signed(unknown))
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"]["status"] == "IGNORED"

    meeting = await book(stack, "webhook-other-type")
    other = zoom_event("meeting.participant_joined", meeting["zoomMeetingId"])
    answered = await deliver(stack, other, signed(other))
    assert answered.json()["data"]["status"] == "IGNORED"
    rows = {r.event_id: r for r in zoom_rows(stack.engine)}
    assert rows[answered.json()["data"]["eventId"]].target is None
    # Not a Zoom event at all, though signed: 422 naming the field, nothing written.
    before = zoom_row_count(stack.engine)
    junk = b'{"payload": {}}'
    refused = await deliver(stack, junk, signed(junk))
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "event"
    assert zoom_row_count(stack.engine) == before


async def test_the_sandbox_meeting_ended_and_recording_completed_reach_the_meeting(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    zoom = stack.zoom
    assert zoom is not None
    meeting = await book(stack, "webhook-e2e")
    zoom_id = meeting["zoomMeetingId"]
    async with httpx.AsyncClient(timeout=30) as http:
        for kind in ("meeting.ended", "recording.completed"):
            fired = await http.post(
                f"{zoom.api_base}/_sandbox/meetings/{zoom_id}/events", json={"event": kind}
            )
            assert fired.status_code == 202, fired.text

            async def delivered(kind: str = kind) -> bool:
                (shown,) = [m for m in zoom.state.meetings() if str(m["id"]) == zoom_id]
                return any(
                    w["event"] == kind and w["responseStatus"] == 200 for w in shown["webhooks"]
                )

            await eventually(delivered, timeout=30)

    async def ended_with_recording() -> dict[str, Any] | None:
        data = await read_meeting(stack, meeting["id"])
        recording = data.get("recording") or {}
        return data if data["status"] == "ENDED" and recording.get("available") else None

    shown = await eventually(ended_with_recording, timeout=60)
    assert shown is not None and shown["recording"]["files"]
    assert [e["type"] for e in published(stack.engine, meeting["id"])] == [
        "meeting.recording_ready"
    ]
    forwarded = [r for r in zoom_rows(stack.engine) if r.object_id == zoom_id]
    assert sorted(r.type for r in forwarded) == ["meeting.ended", "recording.completed"]
