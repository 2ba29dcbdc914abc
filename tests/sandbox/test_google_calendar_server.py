"""The Google Calendar sandbox driven by google-api-python-client, built from its bundled
discovery document and pointed at the sandbox by `api_endpoint`, as Relay drives Google."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import google_auth_httplib2
import httplib2
import httpx
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource, build
from googleapiclient.errors import HttpError

from relay.sandbox import google_calendar
from relay.sandbox.google_calendar import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_USER_EMAIL,
    GoogleCalendarSandbox,
    GoogleCalendarServer,
)
from relay.sandbox.sections import GoogleCalendarSection
from relay.settings import Settings


@pytest.fixture
def server() -> Iterator[GoogleCalendarServer]:
    with GoogleCalendarSandbox(port=0).run_in_thread() as s:
        yield s


def _service(api_endpoint: str, token: str = SANDBOX_ACCESS_TOKEN, **kwargs: Any) -> Resource:
    return build(
        "calendar",
        "v3",
        static_discovery=True,
        client_options={"api_endpoint": api_endpoint},
        **({"credentials": Credentials(token=token)} | kwargs),
    )


@pytest.fixture
def calendar(server: GoogleCalendarServer) -> Resource:
    return _service(server.sandbox.environment()["GOOGLE_API_BASE"])


def _event(
    start: str = "2026-12-01T10:00:00Z", end: str = "2026-12-01T11:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {"summary": "Standup", "start": {"dateTime": start}, "end": {"dateTime": end}} | extra


def _http_error(call: Callable[[], Any]) -> HttpError:
    with pytest.raises(HttpError) as raised:
        call()
    return raised.value


# --- events --------------------------------------------------------------------------------


def test_insert_with_attendees_reminders_and_recurrence_then_get(
    calendar: Resource, server: GoogleCalendarServer
) -> None:
    body = _event(
        start="2026-12-01T10:00:00",
        end="2026-12-01T10:30:00",
        attendees=[{"email": "ada@example.com"}, {"email": "bob@example.com"}],
        reminders={"useDefault": False, "overrides": [{"method": "email", "minutes": 60}]},
        recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10"],
    )
    body["start"]["timeZone"] = body["end"]["timeZone"] = "Europe/Berlin"

    created = calendar.events().insert(calendarId="primary", body=body, sendUpdates="all").execute()

    assert created["status"] == "confirmed" and created["kind"] == "calendar#event"
    assert created["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert [a["email"] for a in created["attendees"]] == ["ada@example.com", "bob@example.com"]
    assert created["attendees"][0]["responseStatus"] == "needsAction"
    assert created["reminders"]["overrides"] == [{"method": "email", "minutes": 60}]
    assert created["organizer"] == {"email": SANDBOX_USER_EMAIL, "self": True}
    fetched = calendar.events().get(calendarId="primary", eventId=created["id"]).execute()
    assert fetched == created
    [seen] = httpx.get(f"{server.api_base}/_sandbox/events").json()["data"]
    assert seen["calendarId"] == SANDBOX_USER_EMAIL and seen["event"]["id"] == created["id"]
    assert seen["updates"] == [
        {
            "action": "created",
            "sendUpdates": "all",
            "recipients": ["ada@example.com", "bob@example.com"],
        }
    ]


def test_a_meet_conference_is_created(calendar: Resource) -> None:
    body = _event(
        conferenceData={
            "createRequest": {"requestId": "r-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}
        }
    )

    created = (
        calendar.events().insert(calendarId="primary", body=body, conferenceDataVersion=1).execute()
    )

    conference = created["conferenceData"]
    assert conference["createRequest"]["status"] == {"statusCode": "success"}
    [entry] = conference["entryPoints"]
    assert entry["entryPointType"] == "video"
    assert entry["uri"].startswith("https://meet.google.com/")
    assert created["hangoutLink"] == entry["uri"]
    # Without conferenceDataVersion=1 Google ignores conferenceData.
    plain = calendar.events().insert(calendarId="primary", body=body).execute()
    assert "conferenceData" not in plain and "hangoutLink" not in plain
    later = (
        calendar.events()
        .patch(
            calendarId="primary",
            eventId=plain["id"],
            body={"conferenceData": body["conferenceData"]},
            conferenceDataVersion=1,
        )
        .execute()
    )
    assert later["hangoutLink"].startswith("https://meet.google.com/")
    assert later["hangoutLink"] != created["hangoutLink"]
    zoom = {"createRequest": {"requestId": "r-2", "conferenceSolutionKey": {"type": "addOn"}}}
    refused = _http_error(
        calendar.events()
        .insert(calendarId="primary", body=_event(conferenceData=zoom), conferenceDataVersion=1)
        .execute
    )
    assert (refused.status_code, refused.reason) == (400, "Invalid conference type value.")


def test_list_filters_orders_and_pages(calendar: Resource) -> None:
    events = calendar.events()
    for day in (5, 3, 1, 4, 2):
        events.insert(
            calendarId="primary",
            body=_event(f"2026-12-0{day}T09:00:00Z", f"2026-12-0{day}T10:00:00Z", summary=str(day)),
        ).execute()
    events.insert(
        calendarId="primary", body=_event("2027-01-10T09:00:00Z", "2027-01-10T10:00:00Z")
    ).execute()

    summaries: list[str] = []
    tokens: list[str | None] = []
    request = events.list(
        calendarId="primary",
        timeMin="2026-12-01T09:30:00Z",
        timeMax="2026-12-31T00:00:00Z",
        singleEvents=True,
        orderBy="startTime",
        maxResults=2,
    )
    while request is not None:
        page = request.execute()
        summaries += [e["summary"] for e in page["items"]]
        tokens.append(page.get("nextPageToken"))
        request = events.list_next(request, page)

    assert summaries == ["1", "2", "3", "4", "5"]
    assert len(tokens) == 3 and tokens[-1] is None
    # timeMin is exclusive against the end: an event ending at timeMin is not listed.
    edge = events.list(calendarId="primary", timeMin="2026-12-01T10:00:00Z").execute()
    assert "1" not in [e.get("summary") for e in edge["items"]]


def test_patch_and_delete_then_410_and_404(
    calendar: Resource, server: GoogleCalendarServer
) -> None:
    events = calendar.events()
    created = events.insert(
        calendarId="primary", body=_event(attendees=[{"email": "ada@example.com"}])
    ).execute()

    patched = events.patch(
        calendarId="primary",
        eventId=created["id"],
        body={
            "summary": "Moved",
            "start": {"dateTime": "2026-12-02T10:00:00Z"},
            "end": {"dateTime": "2026-12-02T11:00:00Z"},
        },
        sendUpdates="all",
    ).execute()
    assert patched["summary"] == "Moved" and patched["sequence"] == 1
    assert patched["start"] == {"dateTime": "2026-12-02T10:00:00Z"}
    assert patched["attendees"] == created["attendees"]

    assert events.delete(calendarId="primary", eventId=created["id"]).execute() == ""
    gone = events.get(calendarId="primary", eventId=created["id"]).execute()
    assert gone["status"] == "cancelled"
    assert events.list(calendarId="primary").execute()["items"] == []
    again = _http_error(events.delete(calendarId="primary", eventId=created["id"]).execute)
    assert again.status_code == 410 and again.reason == "Resource has been deleted"
    missing = _http_error(events.get(calendarId="primary", eventId="nosuchevent").execute)
    assert missing.status_code == 404
    assert missing.error_details[0]["reason"] == "notFound"
    [seen] = httpx.get(f"{server.api_base}/_sandbox/events").json()["data"]
    assert [u["action"] for u in seen["updates"]] == ["updated"]


def test_acl_insert_shares_the_calendar(calendar: Resource) -> None:
    rule = (
        calendar.acl()
        .insert(
            calendarId="primary",
            body={"role": "reader", "scope": {"type": "user", "value": "ada@example.com"}},
        )
        .execute()
    )

    assert rule["id"] == "user:ada@example.com" and rule["role"] == "reader"
    listed = calendar.acl().list(calendarId="primary").execute()["items"]
    assert {(r["id"], r["role"]) for r in listed} == {
        (f"user:{SANDBOX_USER_EMAIL}", "owner"),
        ("user:ada@example.com", "reader"),
    }
    bad = _http_error(
        calendar.acl()
        .insert(calendarId="primary", body={"role": "boss", "scope": {"type": "user"}})
        .execute
    )
    assert bad.status_code == 400


def test_all_day_events_and_client_chosen_ids(calendar: Resource) -> None:
    events = calendar.events()
    body: dict[str, Any] = {"id": "meeting42", "summary": "Offsite"}
    body |= {"start": {"date": "2026-12-24"}, "end": {"date": "2026-12-26"}}

    created = events.insert(calendarId="team@example.com", body=body).execute()

    assert created["id"] == "meeting42"
    assert created["organizer"] == {"email": "team@example.com", "self": False}
    listed = events.list(
        calendarId="team@example.com",
        timeMin="2026-12-25T12:00:00+01:00",
        timeMax="2026-12-25T13:00:00+01:00",
    ).execute()
    assert [e["id"] for e in listed["items"]] == ["meeting42"]
    duplicate = _http_error(events.insert(calendarId="team@example.com", body=body).execute)
    assert duplicate.status_code == 409
    bad_id = _http_error(
        events.insert(calendarId="primary", body=body | {"id": "Not_Base32"}).execute
    )
    assert bad_id.status_code == 400


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _event("2026-12-01T11:00:00Z", "2026-12-01T10:00:00Z"),
            "The specified time range is empty.",
        ),
        (
            _event("2026-12-01T10:00:00", "2026-12-01T11:00:00")
            | {
                "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Mars/Olympus"},
                "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "Mars/Olympus"},
            },
            "Invalid time zone definition for start time.",
        ),
        (
            _event("2026-12-01T10:00:00", "2026-12-01T11:00:00"),
            "Missing time zone definition for start time.",
        ),
        (
            _event(recurrence=["RRULE:FREQ=SOMETIMES"])
            | {"start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"}},
            "Invalid recurrence rule.",
        ),
        (
            _event(recurrence=["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20270101"])
            | {"start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"}},
            "Invalid recurrence rule.",
        ),
        (_event(attendees=[{"email": "not-an-email"}]), "Invalid attendee email."),
        (_event("2026-13-01T10:00:00Z"), "Invalid value for: start.dateTime"),
        ({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}}, "Missing end time."),
        (
            _event(reminders={"useDefault": False, "overrides": [{"method": "sms", "minutes": 5}]}),
            "Invalid reminder method.",
        ),
        (
            _event(
                reminders={"useDefault": True, "overrides": [{"method": "popup", "minutes": 5}]}
            ),
            "Cannot specify both default reminders and overrides at the same time.",
        ),
    ],
)
def test_google_refuses_bad_events_with_400(
    calendar: Resource, server: GoogleCalendarServer, body: dict[str, Any], message: str
) -> None:
    error = _http_error(calendar.events().insert(calendarId="primary", body=body).execute)

    assert error.status_code == 400
    assert error.reason == message
    assert httpx.get(f"{server.api_base}/_sandbox/events").json()["data"] == []


def test_list_refuses_an_empty_range_and_startTime_order_without_single_events(
    calendar: Resource,
) -> None:
    events = calendar.events()
    empty = _http_error(
        events.list(
            calendarId="primary", timeMin="2026-12-02T00:00:00Z", timeMax="2026-12-01T00:00:00Z"
        ).execute
    )
    assert (empty.status_code, empty.reason) == (400, "The specified time range is empty.")
    order = _http_error(events.list(calendarId="primary", orderBy="startTime").execute)
    assert order.status_code == 400


# --- auth and faults -----------------------------------------------------------------------


def test_unknown_or_missing_tokens_get_401_in_googles_shape(server: GoogleCalendarServer) -> None:
    endpoint = server.api_endpoint
    raw = httpx.get(f"{endpoint}calendars/primary/events")
    assert raw.status_code == 401
    error = raw.json()["error"]
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
    assert error["errors"][0]["reason"] == "authError"
    assert raw.headers["www-authenticate"].startswith("Bearer")

    # google-auth answers a 401 by refreshing, which a token-only credential cannot do.
    with pytest.raises(RefreshError):
        _service(endpoint, token="stolen").events().list(calendarId="primary").execute()
    # Without the automatic refresh (Relay refreshes through the connection) the 401 surfaces.
    http = google_auth_httplib2.AuthorizedHttp(
        Credentials(token="stolen"), http=httplib2.Http(), max_refresh_attempts=0
    )
    service = build(
        "calendar",
        "v3",
        static_discovery=True,
        http=http,
        client_options={"api_endpoint": endpoint},
    )
    refused = _http_error(service.events().list(calendarId="primary").execute)
    assert refused.status_code == 401
    assert b"stolen" not in refused.content


def test_a_registered_token_is_accepted_as_its_user(server: GoogleCalendarServer) -> None:
    server.sandbox.register_token("issued-by-oauth", "ada@example.com")

    calendar = _service(server.api_endpoint, token="issued-by-oauth")
    created = calendar.events().insert(calendarId="primary", body=_event()).execute()

    assert created["organizer"]["email"] == "ada@example.com"
    assert created["creator"] == {"email": "ada@example.com", "self": True}


def test_oauth_sandbox_token_sink_notices_register_expire_and_revoke(
    server: GoogleCalendarServer,
) -> None:
    def notice(token: str, **extra: Any) -> httpx.Response:
        body = {"event": "issued", "provider": "google_calendar", "accessToken": token}
        body |= {"scopes": [], "expiresAt": None, "subject": "goo000000000001"} | extra
        return httpx.post(server.sandbox.token_sink, json=body)

    assert notice("sbx-live").status_code == 201
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert notice("sbx-expired", expiresAt=past).status_code == 201
    assert notice("sbx-twitter", provider="twitter").json() == {"accepted": False}

    live = _service(server.api_endpoint, token="sbx-live").events()
    created = live.insert(calendarId="primary", body=_event()).execute()
    assert created["organizer"]["email"] == "goo000000000001@example.com"
    for token in ("sbx-expired", "sbx-twitter"):
        raw = httpx.get(
            f"{server.api_endpoint}calendars/primary/events",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert raw.status_code == 401, token
    notice("sbx-live", event="revoked")
    with pytest.raises(RefreshError):
        live.list(calendarId="primary").execute()


def test_a_429_fault_surfaces_with_retry_after(
    calendar: Resource, server: GoogleCalendarServer
) -> None:
    httpx.post(
        f"{server.api_base}/_sandbox/faults", json={"count": 1, "status": 429, "retryAfter": 7}
    ).raise_for_status()

    error = _http_error(calendar.events().insert(calendarId="primary", body=_event()).execute)
    assert error.status_code == 429
    assert error.resp["retry-after"] == "7"
    assert error.error_details[0]["reason"] == "rateLimitExceeded"
    assert calendar.events().insert(calendarId="primary", body=_event()).execute()["id"]


def test_a_default_fault_answers_503(calendar: Resource, server: GoogleCalendarServer) -> None:
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()

    assert _http_error(calendar.events().list(calendarId="primary").execute).status_code == 503
    assert calendar.events().list(calendarId="primary").execute()["items"] == []


# --- what relay dev uses -------------------------------------------------------------------


def test_environment_and_command() -> None:
    sandbox = GoogleCalendarSandbox(port=4321, tokens=("secret-token",))

    assert sandbox.environment() == {"GOOGLE_API_BASE": "http://127.0.0.1:4321/calendar/v3/"}
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.google_calendar"]
    assert "secret-token" not in command


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    development = make_settings(relay_env="development")
    real = make_settings(
        relay_env="development", google_api_base="https://www.googleapis.com/calendar/v3/"
    )

    assert google_calendar.wanted(development)
    assert not google_calendar.wanted(make_settings(relay_env="development", sandbox="off"))
    assert not google_calendar.wanted(make_settings(relay_env="production"))
    assert not google_calendar.wanted(real) and google_calendar.plan(real) is None
    planned = google_calendar.plan(development)
    assert planned is not None
    assert "local Google Calendar" in google_calendar.describe(development, planned)
    assert "not configured" in google_calendar.describe(real, None)
    # A real Google OAuth client (or a catalog of one's own): its tokens are Google's, which
    # the sandbox would refuse, so Google stays real.
    env = tmp_path / "google.env"
    env.write_text("GOOGLE_CALENDAR_CLIENT_ID=real-id\nGOOGLE_CALENDAR_CLIENT_SECRET=real\n")
    with_client = make_settings(relay_env="development", _env_file=env)
    assert not google_calendar.wanted(with_client)
    assert google_calendar.describe(with_client, None) == (
        "real (https://www.googleapis.com/calendar/v3/)"
    )
    own = make_settings(relay_env="development", providers_file=tmp_path / "own.yaml")
    assert not google_calendar.wanted(own)


def test_runs_as_a_module(tmp_path: Path) -> None:
    sandbox = GoogleCalendarSandbox()
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb")
    )
    try:
        sandbox.wait_ready()
        calendar = _service(sandbox.environment()["GOOGLE_API_BASE"])
        created = calendar.events().insert(calendarId="primary", body=_event()).execute()
        assert calendar.events().get(calendarId="primary", eventId=created["id"]).execute()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert SANDBOX_ACCESS_TOKEN.encode() not in (tmp_path / "stderr").read_bytes()


async def test_the_sandbox_page_section_lists_events_and_updates(
    make_settings: Callable[..., Settings], calendar: Resource, server: GoogleCalendarServer
) -> None:
    body = _event(summary="Design review", attendees=[{"email": "ada@example.com"}])
    created = calendar.events().insert(calendarId="primary", body=body, sendUpdates="all")
    event = created.execute()
    settings = make_settings(relay_env="development", google_api_base=server.sandbox.api_endpoint)
    assert GoogleCalendarSection.applies(settings)
    assert not GoogleCalendarSection.applies(make_settings(relay_env="development"))
    async with httpx.AsyncClient() as http:
        view = await GoogleCalendarSection(settings, http).view()
    assert view.problems == ()
    (table,) = view.tables
    (row,) = table.rows
    assert row.key == event["id"]
    assert row.cells[1:5] == (
        "Design review",
        "2026-12-01T10:00:00Z",
        "confirmed",
        "ada@example.com",
    )
    assert row.cells[5] == "created → ada@example.com"
    assert SANDBOX_ACCESS_TOKEN not in repr(view)
