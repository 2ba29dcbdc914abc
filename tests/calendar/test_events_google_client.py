"""The Google Calendar client, the event-body mapping, the field checks and the error
translation, without the API: `GoogleCalendar` against the Google Calendar sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from temporalio.exceptions import ApplicationError

from relay.calendar.access import application_error, relay_error
from relay.calendar.google import (
    GoogleApiError,
    GoogleCalendar,
    TokenRejected,
    event_body,
    zoom_meeting_of,
)
from relay.calendar.validation import (
    check_email,
    check_end_after_start,
    check_rrule,
    check_time_zone,
)
from relay.errors import ErrorCode
from relay.sandbox.google_calendar import (
    SANDBOX_ACCESS_TOKEN,
    GoogleCalendarSandbox,
    GoogleCalendarServer,
)


@pytest.fixture
def server() -> Iterator[GoogleCalendarServer]:
    with GoogleCalendarSandbox(port=0).run_in_thread() as running:
        yield running


def test_the_client_inserts_patches_lists_and_deletes(server: GoogleCalendarServer) -> None:
    calendar = GoogleCalendar(SANDBOX_ACCESS_TOKEN, server.api_endpoint)
    body = event_body(
        summary="Standup",
        start=datetime(2026, 12, 1, 9, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        end="2026-12-01T09:45:00+01:00",
        time_zone="Europe/Berlin",
        attendees=["ada@example.com"],
        reminders=[],
        recurrence=["FREQ=DAILY;COUNT=5"],
        conference="meet",
        request_id="standup-1",
    )

    created = calendar.insert_event("primary", body, send_updates="all")
    patched = calendar.patch_event("primary", created["id"], {"summary": "Daily"})
    page = calendar.list_events("primary", max_results=1, time_min="2026-11-01T00:00:00Z")

    assert created["hangoutLink"].startswith("https://meet.google.com/")
    assert created["reminders"] == {"useDefault": False, "overrides": []}
    assert created["recurrence"] == ["RRULE:FREQ=DAILY;COUNT=5"]
    assert patched["summary"] == "Daily" and patched["attendees"][0]["email"] == "ada@example.com"
    assert [item["id"] for item in page["items"]] == [created["id"]]
    assert calendar.get_event("primary", created["id"])["summary"] == "Daily"
    assert calendar.delete_event("primary", created["id"]) is True
    assert calendar.delete_event("primary", created["id"]) is False  # 410: gone already
    assert calendar.delete_event("primary", "unknownevent1") is False  # 404
    assert calendar.share("primary", "bob@example.com", "reader")["role"] == "reader"


def test_the_client_surfaces_401_and_429_without_retrying(server: GoogleCalendarServer) -> None:
    with pytest.raises(TokenRejected) as rejected:
        GoogleCalendar("a-stolen-token", server.api_endpoint).list_events("primary")
    assert rejected.value.status == 401 and "a-stolen-token" not in str(rejected.value)

    server.state.fail_next(1, 429, retry_after=9)
    calendar = GoogleCalendar(SANDBOX_ACCESS_TOKEN, server.api_endpoint)
    with pytest.raises(GoogleApiError) as limited:
        calendar.list_events("primary")
    assert limited.value.status == 429 and limited.value.retry_after == 9
    assert limited.value.reason == "rateLimitExceeded" and limited.value.transient
    assert calendar.list_events("primary")["items"] == []

    with pytest.raises(GoogleApiError) as unreachable:
        GoogleCalendar(SANDBOX_ACCESS_TOKEN, "http://127.0.0.1:9/calendar/v3/").list_events("x")
    assert unreachable.value.status == 503 and unreachable.value.transient


def test_event_body_for_a_zoom_meeting_and_an_all_day_event() -> None:
    body = event_body(
        summary="Kick-off",
        description="Agenda",
        start=date(2026, 12, 1),
        end=date(2026, 12, 2),
        zoom_join_url="https://zoom.us/j/123",
        zoom_meeting_id="123",
    )
    assert body["start"] == {"date": "2026-12-01"} and body["end"] == {"date": "2026-12-02"}
    assert body["location"] == "https://zoom.us/j/123"
    assert body["description"] == "Agenda\n\nJoin Zoom meeting: https://zoom.us/j/123"
    assert zoom_meeting_of(body) == ("123", "https://zoom.us/j/123")
    assert event_body(summary="Only this") == {"summary": "Only this"}  # a PATCH body


def test_field_checks() -> None:
    assert check_time_zone("America/New_York") == "America/New_York"
    assert check_rrule("FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20270101T000000Z").startswith("RRULE:")
    assert check_rrule("EXDATE;TZID=Europe/Berlin:20261208T100000").startswith("EXDATE")
    assert check_email("Ada@Example.COM") == "ada@example.com"
    for bad_zone in ("Mars/Olympus", "localtime", "", "../../etc/passwd"):
        with pytest.raises(ValueError):
            check_time_zone(bad_zone)
    for bad_rule in (
        "FREQ=HOURLY;COUNT=2;UNTIL=20270101",
        "BYDAY=MO",
        "RRULE:FREQ=WEEKLY;X=1",
        "FREQ=DAILY;INTERVAL=0",
        "FREQ=MONTHLY;BYMONTHDAY=32",
        "FREQ=YEARLY;BYMONTH=13",
    ):
        with pytest.raises(ValueError):
            check_rrule(bad_rule)
    with pytest.raises(ValueError):
        check_email("ada@")
    check_end_after_start(datetime(2026, 12, 1, 10), datetime(2026, 12, 1, 11), "Europe/Berlin")
    with pytest.raises(ValueError):
        check_end_after_start(datetime(2026, 12, 1, 10), datetime(2026, 12, 1, 10), None)
    with pytest.raises(ValueError):
        check_end_after_start(date(2026, 12, 1), datetime(2026, 12, 2, 10), None)


def test_google_errors_translate_to_relay_codes_and_temporal_failures() -> None:
    limited = relay_error(GoogleApiError(403, "Rate Limit Exceeded", reason="rateLimitExceeded"))
    assert limited.code == ErrorCode.RATE_LIMITED and limited.details["retryAfter"] == 1.0
    assert relay_error(GoogleApiError(410, "Resource has been deleted")).code == ErrorCode.NOT_FOUND
    refused = relay_error(GoogleApiError(400, "Invalid attendee email.", reason="invalid"))
    assert refused.code == ErrorCode.PROVIDER_ERROR
    assert refused.message == "Google Calendar: Invalid attendee email."

    final = application_error(refused)
    retried = application_error(relay_error(GoogleApiError(429, "slow", retry_after=30)))
    outage = application_error(relay_error(GoogleApiError(503, "down")))
    assert isinstance(final, ApplicationError) and final.non_retryable
    assert final.type == "PROVIDER_ERROR"
    assert not retried.non_retryable and retried.next_retry_delay is not None
    assert retried.next_retry_delay.total_seconds() == 30
    assert not outage.non_retryable
