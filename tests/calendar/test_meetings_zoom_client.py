"""relay.calendar.zoom against the Zoom sandbox: the server-to-server token fetched once and
reused, fetched again once on a 401, Zoom's errors with its codes and Retry-After; and the
pure mapping of Relay's meeting fields to Zoom's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio

from relay.calendar.zoom import (
    MeetingFieldError,
    ZoomApiError,
    ZoomClient,
    from_settings,
    meeting_body,
    zoom_recurrence,
)
from relay.sandbox.zoom import ZoomSandbox, ZoomServer
from relay.settings import Settings


@pytest.fixture
def zoom_server() -> Iterator[ZoomServer]:
    with ZoomSandbox(port=0).run_in_thread() as server:
        yield server


class Counted:
    def __init__(self) -> None:
        self.token_requests = 0

    async def __call__(self, request: httpx.Request) -> None:
        if request.url.path == "/oauth/token":
            self.token_requests += 1


@pytest_asyncio.fixture(loop_scope="session")
async def zoom(zoom_server: ZoomServer) -> AsyncIterator[tuple[ZoomClient, Counted]]:
    counted = Counted()
    env = zoom_server.sandbox.environment()
    async with httpx.AsyncClient(event_hooks={"request": [counted]}) as http:
        client = ZoomClient(
            account_id=env["ZOOM_ACCOUNT_ID"],
            client_id=env["ZOOM_CLIENT_ID"],
            client_secret=env["ZOOM_CLIENT_SECRET"],
            api_base=env["ZOOM_API_BASE"],
            oauth_base=env["ZOOM_OAUTH_BASE"],
            http=http,
        )
        yield client, counted


BODY = meeting_body(
    topic="Standup",
    start_time="2026-12-01T09:00:00+01:00",
    duration=15,
    timezone="Europe/Berlin",
    recurrence="RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT=9",
    settings={"hostVideo": True, "muteUponEntry": True},
)


async def test_meetings_and_recordings_with_one_token(
    zoom: tuple[ZoomClient, Counted], zoom_server: ZoomServer
) -> None:
    client, counted = zoom
    created = await client.create_meeting(BODY)
    meeting_id = str(created["id"])
    assert created["type"] == 8 and created["recurrence"]["weekly_days"] == "2,4,6"
    assert created["start_time"] == "2026-12-01T08:00:00Z"
    await client.update_meeting(meeting_id, meeting_body(duration=30))
    assert (await client.get_meeting(meeting_id))["duration"] == 30
    assert await client.recordings(meeting_id) is None  # Zoom's 3301
    zoom_server.state.fire(meeting_id, "recording.completed")
    recording = await client.recordings(meeting_id)
    assert recording is not None and recording["recording_files"]
    assert await client.delete_meeting(meeting_id) is True
    assert await client.delete_meeting(meeting_id) is False  # already gone
    with pytest.raises(ZoomApiError) as refused:
        await client.get_meeting(meeting_id)
    assert (refused.value.status, refused.value.code) == (404, 3001)
    assert counted.token_requests == 1


async def test_a_rejected_token_is_replaced_once(
    zoom: tuple[ZoomClient, Counted], zoom_server: ZoomServer
) -> None:
    client, counted = zoom
    await client.create_meeting(BODY)
    zoom_server.state._tokens.clear()  # Zoom revoked it early
    await client.create_meeting(BODY)
    assert counted.token_requests == 2


async def test_errors_carry_zooms_code_message_and_retry_after(
    zoom: tuple[ZoomClient, Counted], zoom_server: ZoomServer
) -> None:
    client, _ = zoom
    zoom_server.state.fail_next(1, 429)
    with pytest.raises(ZoomApiError) as limited:
        await client.create_meeting(BODY)
    assert limited.value.status == 429 and limited.value.retry_after == timedelta(seconds=1)
    with pytest.raises(ZoomApiError) as invalid:
        await client.create_meeting({"topic": "x", "duration": -1})
    assert (invalid.value.status, invalid.value.code, invalid.value.field) == (400, 300, "duration")
    env = zoom_server.sandbox.environment()
    wrong = ZoomClient(
        account_id=env["ZOOM_ACCOUNT_ID"],
        client_id=env["ZOOM_CLIENT_ID"],
        client_secret="wrong-secret",
        api_base=env["ZOOM_API_BASE"],
        oauth_base=env["ZOOM_OAUTH_BASE"],
    )
    with pytest.raises(ZoomApiError) as unauthorized:
        await wrong.create_meeting(BODY)
    await wrong.aclose()
    assert unauthorized.value.status == 401
    assert unauthorized.value.message == "Invalid client_id or client_secret"
    assert "wrong-secret" not in str(unauthorized.value) and "wrong-secret" not in repr(wrong)


def test_from_settings_needs_all_three_credentials() -> None:
    partial = Settings(_env_file=None, zoom_account_id="a", zoom_client_id="b")  # type: ignore[call-arg]
    assert from_settings(partial) is None
    full = Settings(  # type: ignore[call-arg]
        _env_file=None, zoom_account_id="a", zoom_client_id="b", zoom_client_secret="c"
    )
    assert isinstance(from_settings(full), ZoomClient)


@pytest.mark.parametrize(
    ("rrule", "expected"),
    [
        ("RRULE:FREQ=DAILY;INTERVAL=2;COUNT=5", {"type": 1, "repeat_interval": 2, "end_times": 5}),
        (
            "FREQ=MONTHLY;BYMONTHDAY=15;UNTIL=20270601T000000Z",
            {
                "type": 3,
                "repeat_interval": 1,
                "monthly_day": 15,
                "end_date_time": "2027-06-01T00:00:00Z",
            },
        ),
    ],
)
def test_rrules_map_to_zooms_recurrence(rrule: str, expected: dict[str, object]) -> None:
    assert zoom_recurrence(rrule) == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"recurrence": "RRULE:FREQ=YEARLY;COUNT=2"}, "recurrence"),
        ({"recurrence": "RRULE:FREQ=WEEKLY"}, "recurrence"),
        ({"recurrence": "RRULE:FREQ=DAILY;COUNT=2;BYHOUR=3"}, "recurrence"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"start_time": "2026-12-01T09:00:00"}, "startTime"),
        ({"settings": {"hostVideo": True, "laserShow": True}}, "settings.laserShow"),
    ],
)
def test_fields_zoom_cannot_take_are_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(MeetingFieldError) as refused:
        meeting_body(**fields)  # type: ignore[arg-type]
    assert refused.value.field == field
