"""Google Calendar events through Relay's API, against the OAuth providers sandbox and the
Google Calendar sandbox: a real OAuth connection, google-api-python-client pointed at the
sandbox, refreshes through the connection's workflow."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from relay.calendar.zoom import ZoomApiError, ZoomClient
from relay.oauth.tokens import TokenStore
from tests.calendar.conftest import CalendarStack

pytestmark = [pytest.mark.e2e]

START = "2026-12-01T10:00:00+01:00"
END = "2026-12-01T11:00:00+01:00"


def _event(integration_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "integrationId": integration_id,
        "summary": "Design review",
        "start": START,
        "end": END,
    } | extra


async def _post(stack: CalendarStack, path: str, body: dict[str, Any]) -> httpx.Response:
    async with stack.http() as http:
        return await http.post(path, json=body)


def _google(stack: CalendarStack, integration_id: str) -> Any:
    """google-api-python-client acting as the connected user, pointed at the sandbox."""
    return build(
        "calendar",
        "v3",
        static_discovery=True,
        credentials=Credentials(token=stack.access_token(integration_id)),
        client_options={"api_endpoint": stack.settings.google_api_base},
    )


def _fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return {item["field"] for item in error["details"]}


async def test_create_list_get_update_and_delete(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")

    created = await _post(
        stack,
        "/v1/calendar/events",
        _event(
            integration_id,
            description="Agenda in the doc",
            start="2026-12-01T10:00:00",
            end="2026-12-01T11:00:00",
            timeZone="Europe/Berlin",
            attendees=["Bob@Example.com", "carol@example.com"],
            reminders=[{"method": "email", "minutes": 1440}, {"method": "popup", "minutes": 10}],
            recurrence=["FREQ=WEEKLY;BYDAY=TU;COUNT=4"],
            conference="meet",
            sendUpdates="all",
        ),
    )
    assert created.status_code == 201, created.text
    event = created.json()["data"]
    assert event["id"] and event["status"] == "confirmed"
    assert event["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert event["conference"]["type"] == "meet"
    assert event["conference"]["joinUrl"].startswith("https://meet.google.com/")
    assert event["start"] == {
        "dateTime": "2026-12-01T10:00:00",
        "date": None,
        "timeZone": "Europe/Berlin",
    }
    assert [a["email"] for a in event["attendees"]] == ["bob@example.com", "carol@example.com"]
    assert event["reminders"] == [
        {"method": "email", "minutes": 1440},
        {"method": "popup", "minutes": 10},
    ]
    assert event["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=4"]

    # What Google received, read back with google-api-python-client as the user.
    google = _google(stack, integration_id)
    stored = google.events().get(calendarId="primary", eventId=event["id"]).execute()
    assert stored["organizer"]["email"].endswith("@example.com")
    assert stored["reminders"]["useDefault"] is False
    (held,) = stack.google_events()
    assert held["updates"][0]["recipients"] == ["bob@example.com", "carol@example.com"]

    # Two more events; list them one page at a time through Google's page tokens.
    for hour in (12, 14):
        more = _event(
            integration_id, start=f"2026-12-01T{hour}:00:00Z", end=f"2026-12-01T{hour}:30:00Z"
        )
        assert (await _post(stack, "/v1/calendar/events", more)).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    async with stack.http() as http:
        for _ in range(5):
            params = {"integrationId": integration_id, "limit": 1}
            params |= {"from": "2026-11-30T00:00:00Z", "to": "2026-12-02T00:00:00Z"}
            if cursor:
                params["cursor"] = cursor
            listed = await http.get("/v1/calendar/events", params=params)
            assert listed.status_code == 200, listed.text
            seen += [item["id"] for item in listed.json()["data"]]
            cursor = listed.json()["nextCursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 3
        outside = await http.get(
            "/v1/calendar/events",
            params={"integrationId": integration_id, "from": "2027-01-01T00:00:00Z"},
        )
        assert outside.json()["data"] == []

        got = await http.get(
            f"/v1/calendar/events/{event['id']}", params={"integrationId": integration_id}
        )
        assert got.json()["data"]["summary"] == "Design review"

        patched = await http.patch(
            f"/v1/calendar/events/{event['id']}",
            json={
                "integrationId": integration_id,
                "summary": "Design review (moved)",
                "start": "2026-12-01T15:00:00",
                "end": "2026-12-01T16:00:00",
                "timeZone": "Europe/Berlin",
                "attendees": ["bob@example.com"],
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"]["start"]["dateTime"] == "2026-12-01T15:00:00"
        stored = google.events().get(calendarId="primary", eventId=event["id"]).execute()
        assert stored["summary"] == "Design review (moved)"
        assert [a["email"] for a in stored["attendees"]] == ["bob@example.com"]

        deleted = await http.delete(
            f"/v1/calendar/events/{event['id']}", params={"integrationId": integration_id}
        )
        again = await http.delete(
            f"/v1/calendar/events/{event['id']}", params={"integrationId": integration_id}
        )
        missing = await http.get(
            f"/v1/calendar/events/{uuid.uuid4().hex}", params={"integrationId": integration_id}
        )
    assert deleted.json()["data"] == {"id": event["id"], "calendarId": "primary", "deleted": True}
    assert again.status_code == 200 and again.json()["data"]["deleted"] is False
    assert google.events().get(calendarId="primary", eventId=event["id"]).execute()["status"] == (
        "cancelled"
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_an_idempotency_key_makes_a_retry_return_the_first_event(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    body = _event(integration_id, idempotencyKey="booking-42", conference="zoom")

    first = await _post(stack, "/v1/calendar/events", body)
    retried = await _post(stack, "/v1/calendar/events", body)
    racing = await asyncio.gather(
        *(
            _post(stack, "/v1/calendar/events", body | {"idempotencyKey": "booking-43"})
            for _ in range(3)
        )
    )
    different = await _post(stack, "/v1/calendar/events", body | {"summary": "Other"})

    assert first.status_code == 201, first.text
    assert retried.status_code == 201 and retried.json()["data"] == first.json()["data"]
    assert [answer.status_code for answer in racing] == [201] * 3
    assert len({answer.json()["data"]["id"] for answer in racing}) == 1
    assert len(stack.google_events()) == 2
    assert stack.zoom is not None and len(stack.zoom.state.meetings()) == 2  # none orphaned
    assert different.status_code == 409
    assert {d["field"] for d in different.json()["error"]["details"]} == {
        "idempotencyKey",
        "summary",
    }


async def test_share_a_calendar(calendar_stack: CalendarStack) -> None:
    integration_id = await calendar_stack.connect_google("ada")

    shared = await _post(
        calendar_stack,
        "/v1/calendar/calendars/team-calendar@example.com/share",
        {"integrationId": integration_id, "email": "Dan@Example.com", "role": "writer"},
    )
    refused = await _post(
        calendar_stack,
        "/v1/calendar/calendars/primary/share",
        {"integrationId": integration_id, "email": "dan", "role": "emperor"},
    )

    assert shared.status_code == 201, shared.text
    assert shared.json()["data"] | {"id": None} == {
        "id": None,
        "calendarId": "team-calendar@example.com",
        "role": "writer",
        "email": "dan@example.com",
    }
    acl = _google(calendar_stack, integration_id).acl()
    listed = acl.list(calendarId="team-calendar@example.com").execute()["items"]
    assert {"type": "user", "value": "dan@example.com"} in [
        rule["scope"] for rule in listed if rule["role"] == "writer"
    ]
    assert _fields(refused) == {"email", "role"}


async def test_bad_input_is_422_naming_the_field_and_reaches_no_provider(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    path = "/v1/calendar/events"

    cases = {
        "end": _event(integration_id, end="2026-12-01T09:00:00+01:00"),
        "timeZone": _event(integration_id, timeZone="Mars/Olympus_Mons"),
        "recurrence.0": _event(
            integration_id, timeZone="UTC", recurrence=["FREQ=SOMETIMES;COUNT=2"]
        ),
        "attendees.1": _event(integration_id, attendees=["ok@example.com", "not-an-email"]),
        "reminders.0.method": _event(integration_id, reminders=[{"method": "sms", "minutes": 5}]),
        "reminders.0.minutes": _event(
            integration_id, reminders=[{"method": "email", "minutes": 40321}]
        ),
        "reminders": _event(integration_id, reminders=[{"method": "popup", "minutes": 1}] * 6),
        "start": _event(integration_id, start="2026-12-01T10:00:00"),
        "conference": _event(integration_id, conference="skype"),
        "integrationId": _event("not-a-uuid"),
    }
    for field, body in cases.items():
        assert _fields(await _post(stack, path, body)) == {field}, field
    # A recurring event needs its zone (Google refuses one without).
    assert _fields(
        await _post(stack, path, _event(integration_id, recurrence=["FREQ=DAILY;COUNT=2"]))
    ) == {"recurrence"}

    async with stack.http() as http:
        created = await http.post(path, json=_event(integration_id))
        event_id = created.json()["data"]["id"]
        one_end = await http.patch(
            f"{path}/{event_id}",
            json={"integrationId": integration_id, "end": "2026-12-01T08:00:00Z"},
        )
        zone_alone = await http.patch(
            f"{path}/{event_id}", json={"integrationId": integration_id, "timeZone": "UTC"}
        )
        window = await http.get(
            path,
            params={
                "integrationId": integration_id,
                "from": "2026-12-02T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
            },
        )
    assert _fields(one_end) == {"end"}
    assert _fields(zone_alone) == {"timeZone"}
    assert _fields(window) == {"to"}
    assert len(stack.google_events()) == 1  # only the valid one


async def test_an_integration_that_is_not_a_connected_google_one_is_refused(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    github = await stack.connect("github", "ada")
    google = await stack.connect_google("ada")
    async with stack.http() as http:
        pending = await http.post(
            "/v1/integrations/oauth/initiate",
            json={
                "userId": "ada",
                "provider": "google_calendar",
                "redirectUri": "http://localhost:3000/done",
            },
        )
        pending_id = pending.json()["data"]["integrationId"]
        inactive = await http.patch(f"/v1/integrations/{google}", json={"isActive": False})
        assert inactive.status_code == 200, inactive.text

        answers = {
            name: await http.post("/v1/calendar/events", json=_event(integration))
            for name, integration in (
                ("github", github),
                ("pending", pending_id),
                ("inactive", google),
                ("unknown", str(uuid.uuid4())),
            )
        }
    for name in ("github", "pending", "inactive"):
        assert answers[name].status_code == 409, (name, answers[name].text)
        assert answers[name].json()["error"]["code"] == "CONFLICT"
    assert answers["github"].json()["error"]["details"]["provider"] == "github"
    assert answers["unknown"].status_code == 404
    assert answers["unknown"].json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
    assert stack.google_events() == []


async def test_google_errors_become_relay_errors(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")

    stack.google_fault(status=400)
    refused = await _post(stack, "/v1/calendar/events", _event(integration_id))
    stack.google_fault(status=429, retry_after=7)
    limited = await _post(stack, "/v1/calendar/events", _event(integration_id))
    after = await _post(stack, "/v1/calendar/events", _event(integration_id))

    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error["code"] == "PROVIDER_ERROR"
    assert error["message"] == "Google Calendar: Backend Error"
    assert error["details"]["status"] == 400
    assert limited.status_code == 429, limited.text
    assert limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "RATE_LIMITED"
    assert limited.json()["error"]["details"]["retryAfter"] == 7
    assert after.status_code == 201
    token = stack.access_token(integration_id)
    for answer in (refused, limited):
        assert token not in answer.text


async def test_a_refused_token_is_refreshed_once_through_the_connection(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    first_token = stack.access_token(integration_id)
    assert len(stack.issued_tokens()) == 1
    stack.expire_at_google(integration_id)  # Google now answers 401 to the stored token

    created = await _post(stack, "/v1/calendar/events", _event(integration_id))

    assert created.status_code == 201, created.text
    # One refresh grant: a second access token, the refresh token kept (Google's way).
    assert len(stack.issued_tokens()) == 2
    assert len(stack.issued_tokens(kind="refresh")) == 1
    assert stack.access_token(integration_id) != first_token
    async with stack.http() as http:
        logs = await http.get(f"/v1/integrations/{integration_id}/sync-logs")
    actions = [log["action"] for log in logs.json()["data"]]
    assert actions.count("token_refresh") == 1, actions
    assert len(stack.google_events()) == 1


async def test_a_burst_of_refused_calls_shares_one_refresh(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    stack.expire_at_google(integration_id)

    async with stack.http() as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/calendar/events", json=_event(integration_id, summary=f"n{i}"))
                for i in range(6)
            )
        )

    assert [answer.status_code for answer in answers] == [201] * 6
    assert len(stack.issued_tokens()) == 2  # the connection's first token and one refresh
    assert len(stack.google_events()) == 6


async def test_a_refused_refresh_token_answers_needs_reauth(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    tokens = TokenStore(stack.engine, stack.keyring).read(uuid.UUID(integration_id))
    assert tokens is not None and tokens.refresh_token is not None
    # The user revoked Relay's access at Google: the refresh token and its access tokens.
    revoked = httpx.post(
        f"{stack.oauth_server.api_base}/_sandbox/tokens/{tokens.refresh_token}/revoke"
    )
    assert revoked.status_code < 300, revoked.text
    stack.expire_at_google(integration_id)

    refused = await _post(stack, "/v1/calendar/events", _event(integration_id))
    async with stack.http() as http:
        integration = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
        again = await http.get("/v1/calendar/events", params={"integrationId": integration_id})

    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "NEEDS_REAUTH"
    assert integration["status"] == "NEEDS_REAUTH"
    assert again.status_code == 401 and again.json()["error"]["code"] == "NEEDS_REAUTH"
    assert tokens.refresh_token not in refused.text and tokens.access_token not in refused.text
    assert len(stack.issued_tokens()) == 1  # the refused refresh issued nothing
    assert stack.google_events() == []


async def test_a_zoom_conference_puts_the_join_url_in_the_event(
    calendar_stack: CalendarStack,
) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")

    created = await _post(
        stack,
        "/v1/calendar/events",
        _event(integration_id, conference="zoom", description="Bring numbers"),
    )

    assert created.status_code == 201, created.text
    event = created.json()["data"]
    join_url = event["conference"]["joinUrl"]
    assert event["conference"]["type"] == "zoom"
    assert event["location"] == join_url
    assert event["description"] == f"Bring numbers\n\nJoin Zoom meeting: {join_url}"
    zoom = ZoomClient.from_settings(stack.settings)
    assert zoom is not None
    try:
        (held,) = stack.google_events()
        meeting_id = held["event"]["extendedProperties"]["private"]["relayZoomMeetingId"]
        meeting = await zoom.get_meeting(meeting_id)
        assert meeting["join_url"] == join_url
        assert meeting["topic"] == "Design review" and meeting["duration"] == 60

        async with stack.http() as http:
            moved = await http.patch(
                f"/v1/calendar/events/{event['id']}",
                json={
                    "integrationId": integration_id,
                    "summary": "Design review, shorter",
                    "start": "2026-12-01T15:00:00+01:00",
                    "end": "2026-12-01T15:30:00+01:00",
                },
            )
            assert moved.status_code == 200, moved.text
            meeting = await zoom.get_meeting(meeting_id)
            assert meeting["duration"] == 30 and meeting["topic"] == "Design review, shorter"
            assert meeting["start_time"].startswith("2026-12-01T14:00:00")

            deleted = await http.delete(
                f"/v1/calendar/events/{event['id']}", params={"integrationId": integration_id}
            )
        assert deleted.json()["data"]["deleted"] is True
        with pytest.raises(ZoomApiError) as gone:
            await zoom.get_meeting(meeting_id)
        assert gone.value.status == 404
    finally:
        await zoom.aclose()


async def test_a_failed_event_leaves_no_zoom_meeting(calendar_stack: CalendarStack) -> None:
    stack = calendar_stack
    integration_id = await stack.connect_google("ada")
    stack.google_fault(status=400)

    refused = await _post(stack, "/v1/calendar/events", _event(integration_id, conference="zoom"))

    assert refused.status_code == 502, refused.text
    assert stack.zoom is not None
    assert stack.zoom.state.meetings() == []  # created, then deleted when the event failed
