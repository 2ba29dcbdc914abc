"""The Zoom sandbox driven with httpx as Relay drives Zoom (Zoom has no official Python SDK):
the server-to-server token grant, users' tokens from the OAuth providers sandbox's token
sink, meetings and recordings, and the signed webhooks and URL validation received on
loopback and verified with hmac over the exact raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.sandbox import zoom as zoom_sandbox
from relay.sandbox.sections import SandboxError, ZoomSection
from relay.sandbox.server import AppServer
from relay.sandbox.zoom import ZoomSandbox, ZoomServer
from relay.settings import Settings
from tests.support.receiver import Post, Receiver

SECRET = "test-webhook-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver


@pytest.fixture
def server(receiver: Receiver) -> Iterator[ZoomServer]:
    sandbox = ZoomSandbox(
        port=0, webhook_secret=SECRET, webhook_url=f"{receiver.base}/webhooks/zoom"
    )
    with sandbox.run_in_thread() as s:
        yield s


def _token(server: ZoomServer, client_secret: str | None = None) -> httpx.Response:
    env = server.sandbox.environment()
    return httpx.post(
        f"{env['ZOOM_OAUTH_BASE']}/oauth/token",
        params={"grant_type": "account_credentials", "account_id": env["ZOOM_ACCOUNT_ID"]},
        auth=(env["ZOOM_CLIENT_ID"], client_secret or env["ZOOM_CLIENT_SECRET"]),
    )


@pytest.fixture
def api(server: ZoomServer) -> Iterator[httpx.Client]:
    token = _token(server).json()["access_token"]
    base = server.sandbox.environment()["ZOOM_API_BASE"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _meeting(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {
        "topic": "Planning",
        "type": 2,
        "start_time": "2026-12-01T15:00:00Z",
        "duration": 30,
        "timezone": "Europe/Paris",
        "agenda": "Q1",
        "settings": {"host_video": True, "waiting_room": True},
        **fields,
    }
    response = api.post("/v2/users/me/meetings", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _verified(post: Post, secret: str = SECRET, body: bytes | None = None) -> bool:
    timestamp = post.header("x-zm-request-timestamp") or ""
    raw = post.body if body is None else body
    message = f"v0:{timestamp}:".encode() + raw
    expected = "v0=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, post.header("x-zm-signature") or "")


# --- the token endpoint --------------------------------------------------------------------


def test_the_token_grant_with_good_and_bad_credentials(server: ZoomServer) -> None:
    good = _token(server)
    assert good.status_code == 200
    grant = good.json()
    assert grant["token_type"] == "bearer" and grant["expires_in"] == 3600
    assert grant["access_token"] and grant["scope"]

    bad = _token(server, client_secret="wrong")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert "wrong" not in bad.text

    other = httpx.post(
        f"{server.api_base}/oauth/token",
        params={"grant_type": "account_credentials", "account_id": "someone-else"},
        auth=(server.sandbox.client_id, server.sandbox.client_secret),
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_request"


def test_the_api_wants_a_token_it_issued(server: ZoomServer) -> None:
    for headers in ({}, {"Authorization": "Bearer not-issued"}):
        response = httpx.get(f"{server.api_base}/v2/meetings/12345678901", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"code": 124, "message": "Invalid access token."}


# --- meetings ------------------------------------------------------------------------------


def test_create_get_patch_and_delete_a_meeting(api: httpx.Client, server: ZoomServer) -> None:
    created = _meeting(api)
    assert 10**10 <= created["id"] < 10**11
    assert created["uuid"] and created["password"]
    assert created["join_url"].startswith(f"{server.api_base}/j/{created['id']}")
    assert created["start_url"].startswith(f"{server.api_base}/s/{created['id']}")
    assert created["settings"]["waiting_room"] is True

    path = f"/v2/meetings/{created['id']}"
    fetched = api.get(path).json()
    assert fetched["topic"] == "Planning" and fetched["timezone"] == "Europe/Paris"
    assert fetched["join_url"] == created["join_url"]

    patched = api.patch(
        path,
        json={
            "topic": "Moved",
            "start_time": "2026-12-02T09:00:00Z",
            "settings": {"participant_video": True},
        },
    )
    assert patched.status_code == 204 and patched.content == b""
    fetched = api.get(path).json()
    assert fetched["topic"] == "Moved" and fetched["start_time"] == "2026-12-02T09:00:00Z"
    assert fetched["settings"]["participant_video"] and fetched["settings"]["waiting_room"]

    assert api.delete(path).status_code == 204
    gone = api.get(path)
    assert gone.status_code == 404 and gone.json()["code"] == 3001
    assert api.delete(path).status_code == 404


def test_a_recurring_meeting(api: httpx.Client) -> None:
    recurrence = {"type": 2, "repeat_interval": 1, "weekly_days": "2,4", "end_times": 6}
    created = _meeting(api, type=8, recurrence=recurrence)
    fetched = api.get(f"/v2/meetings/{created['id']}").json()
    assert fetched["type"] == 8 and fetched["recurrence"]["weekly_days"] == "2,4"

    refused = api.post("/v2/users/me/meetings", json={"topic": "x", "type": 8})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "recurrence.type"
    bad_zone = api.post("/v2/users/me/meetings", json={"topic": "x", "timezone": "Mars/Base"})
    assert bad_zone.json()["errors"][0]["field"] == "timezone"


# --- recordings and webhooks ---------------------------------------------------------------


def _fire(server: ZoomServer, meeting_id: int, event: str) -> httpx.Response:
    return httpx.post(
        f"{server.api_base}/_sandbox/meetings/{meeting_id}/events", json={"event": event}
    )


def test_recordings_appear_after_recording_completed(
    api: httpx.Client, server: ZoomServer, receiver: Receiver
) -> None:
    meeting = _meeting(api)
    path = f"/v2/meetings/{meeting['id']}/recordings"
    missing = api.get(path)
    assert missing.status_code == 404 and missing.json()["code"] == 3301

    assert _fire(server, meeting["id"], "recording.completed").status_code == 202
    (post,) = receiver.wait_for(1)
    recording = api.get(path).json()
    assert recording["id"] == meeting["id"] and recording["recording_count"] == 2
    files = recording["recording_files"]
    assert {f["file_type"] for f in files} == {"MP4", "M4A"}
    assert all(f["download_url"] and f["play_url"] for f in files)

    event = post.json()
    assert event["event"] == "recording.completed"
    assert event["payload"]["account_id"] == server.sandbox.account_id
    assert event["payload"]["object"]["recording_files"] == files
    assert _verified(post)


def test_meeting_webhooks_are_signed_over_the_raw_body(
    api: httpx.Client, server: ZoomServer, receiver: Receiver
) -> None:
    meeting = _meeting(api)
    _fire(server, meeting["id"], "meeting.started")
    _fire(server, meeting["id"], "meeting.ended")
    posts = receiver.wait_for(2)

    events = sorted(posts, key=lambda p: p.json()["event"])
    assert [p.json()["event"] for p in events] == ["meeting.ended", "meeting.started"]
    for post in posts:
        assert post.path == "/webhooks/zoom"
        body = post.json()
        assert body["payload"]["object"]["id"] == str(meeting["id"])
        assert body["payload"]["object"]["uuid"] == meeting["uuid"]
        assert isinstance(body["event_ts"], int)
        assert _verified(post)
        changed = post.body.replace(b"meeting.", b"meeting_")
        assert not _verified(post, body=changed)
        assert not _verified(post, secret="another-secret")
    assert "end_time" in events[0].json()["payload"]["object"]

    listed = httpx.get(f"{server.api_base}/_sandbox/meetings").json()["data"]
    assert listed[0]["id"] == meeting["id"] and listed[0]["status"] == "finished"
    assert [w["event"] for w in listed[0]["webhooks"]] == ["meeting.started", "meeting.ended"]

    unknown = _fire(server, meeting["id"], "meeting.deleted")
    assert unknown.status_code == 400
    assert _fire(server, 12345678901, "meeting.started").status_code == 404


# --- URL validation ------------------------------------------------------------------------


def _validator_app(secret: str) -> Starlette:
    async def answer(request: Request) -> Response:
        plain = json.loads(await request.body())["payload"]["plainToken"]
        encrypted = hmac.new(secret.encode(), plain.encode(), hashlib.sha256).hexdigest()
        return JSONResponse({"plainToken": plain, "encryptedToken": encrypted})

    return Starlette(routes=[Route("/webhooks/zoom", answer, methods=["POST"])])


@pytest.mark.parametrize(("secret", "passed"), [(SECRET, True), ("wrong-secret", False)])
def test_the_url_validation_round_trip(server: ZoomServer, secret: str, passed: bool) -> None:
    endpoint = AppServer(_validator_app(secret), "127.0.0.1", 0, "validator", lambda: None)
    endpoint.start()
    try:
        url = f"http://127.0.0.1:{endpoint.port}/webhooks/zoom"
        result = httpx.post(f"{server.api_base}/_sandbox/validate", json={"url": url}).json()
    finally:
        endpoint.stop()
    assert result["passed"] is passed
    if not passed:
        assert result["reason"] == "encryptedToken does not match"


def test_url_validation_fails_against_a_receiver_that_does_not_answer(
    server: ZoomServer, receiver: Receiver
) -> None:
    result = httpx.post(f"{server.api_base}/_sandbox/validate", json={}).json()
    assert result == {"passed": False, "responseStatus": 200, "reason": "the answer is not JSON"}
    (post,) = receiver.wait_for(1)
    assert post.json()["event"] == "endpoint.url_validation" and _verified(post)


# --- faults, environment -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_faults(api: httpx.Client, server: ZoomServer, status: int) -> None:
    armed = httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1, "status": status})
    assert armed.status_code == 200
    failed = api.post("/v2/users/me/meetings", json={"topic": "x"})
    assert failed.status_code == status and failed.json()["code"] == status
    if status == 429:
        assert failed.headers["Retry-After"] == "1"
    assert api.post("/v2/users/me/meetings", json={"topic": "x"}).status_code == 201


def test_environment_and_command() -> None:
    sandbox = ZoomSandbox(port=4321)
    assert sandbox.environment() == {
        "ZOOM_ACCOUNT_ID": zoom_sandbox.SANDBOX_ACCOUNT_ID,
        "ZOOM_CLIENT_ID": zoom_sandbox.SANDBOX_CLIENT_ID,
        "ZOOM_CLIENT_SECRET": zoom_sandbox.SANDBOX_CLIENT_SECRET,
        "ZOOM_WEBHOOK_SECRET": zoom_sandbox.SANDBOX_WEBHOOK_SECRET,
        "ZOOM_API_BASE": "http://127.0.0.1:4321",
        "ZOOM_OAUTH_BASE": "http://127.0.0.1:4321",
    }
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.zoom"]
    assert zoom_sandbox.SANDBOX_CLIENT_SECRET not in command
    assert zoom_sandbox.SANDBOX_WEBHOOK_SECRET not in command


def test_an_expired_token_is_refused(api: httpx.Client, server: ZoomServer) -> None:
    assert api.post("/v2/users/me/meetings", json={"topic": "x"}).status_code == 201
    token = api.headers["Authorization"].removeprefix("Bearer ")
    server.state._tokens[token] = 0.0  # as if issued an hour ago
    expired = api.post("/v2/users/me/meetings", json={"topic": "x"})
    assert expired.status_code == 401 and expired.json()["code"] == 124


def test_oauth_sandbox_token_sink_notices_register_expire_and_revoke(
    api: httpx.Client, server: ZoomServer
) -> None:
    def notice(token: str, **extra: Any) -> httpx.Response:
        body = {"event": "issued", "provider": "zoom", "accessToken": token}
        body |= {"scopes": [], "expiresAt": None, "subject": "zoo000000000001"} | extra
        return httpx.post(server.sandbox.token_sink, json=body)

    def create(token: str) -> httpx.Response:
        return httpx.post(
            f"{server.api_base}/v2/users/me/meetings",
            json={"topic": "Mine", "type": 2, "start_time": "2026-12-01T15:00:00Z"},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert server.sandbox.token_sink == f"{server.api_base}/_sandbox/tokens"
    assert notice("zoom-user-live").status_code == 201
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert notice("zoom-user-expired", expiresAt=past).status_code == 201
    assert notice("google-token", provider="google_calendar").json() == {"accepted": False}
    assert httpx.post(server.sandbox.token_sink, json={"subject": "x"}).status_code == 400

    mine = create("zoom-user-live")
    assert mine.status_code == 201, mine.text
    _meeting(api)  # the account's server-to-server token
    hosts = {m["topic"]: m["host"] for m in server.state.meetings()}
    assert hosts == {"Mine": "user:zoo000000000001", "Planning": "account"}
    for token in ("zoom-user-expired", "google-token"):
        refused = create(token)
        assert refused.status_code == 401 and refused.json()["code"] == 124, token
    notice("zoom-user-live", event="revoked")
    assert create("zoom-user-live").status_code == 401


def test_a_refused_webhook_is_tried_again() -> None:
    with Receiver.running(fail_first=1) as receiver:
        sandbox = ZoomSandbox(port=0, webhook_secret=SECRET)
        with sandbox.run_in_thread() as server:
            sandbox.register_webhook(f"{receiver.base}/webhooks/zoom")
            token = _token(server).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            created = httpx.post(
                f"{server.api_base}/v2/users/me/meetings", json={"topic": "x"}, headers=headers
            ).json()
            _fire(server, created["id"], "meeting.ended")
            (post,) = receiver.wait_for(1)
            assert receiver.refused == 1 and _verified(post)
            receiver.wait_until(lambda _: _webhook_state(server) == "delivered")


def _webhook_state(server: ZoomServer) -> str:
    meetings = httpx.get(f"{server.api_base}/_sandbox/meetings").json()["data"]
    return str(meetings[0]["webhooks"][0]["delivery"])


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings]) -> None:
    development = make_settings(relay_env="development", api_port=8123)
    assert zoom_sandbox.wanted(development)
    planned = zoom_sandbox.plan(development)
    assert planned is not None
    assert planned.webhook_url == "http://localhost:8123/webhooks/zoom"
    line = zoom_sandbox.describe(development, planned)
    assert "local Zoom" in line and "/webhooks/zoom" in line
    # Any Zoom credential of the developer's: no sandbox (it would override them).
    for configured in (
        {"zoom_account_id": "acct"},
        {"zoom_client_id": "client"},
        {"zoom_client_secret": "secret"},
    ):
        settings = make_settings(relay_env="development", **configured)
        assert not zoom_sandbox.wanted(settings) and zoom_sandbox.plan(settings) is None
    real = make_settings(
        relay_env="development", zoom_account_id="a", zoom_client_id="c", zoom_client_secret="s"
    )
    assert zoom_sandbox.describe(real, None) == "real (https://api.zoom.us)"
    assert not zoom_sandbox.wanted(make_settings(relay_env="development", sandbox="off"))
    assert not zoom_sandbox.wanted(make_settings())  # RELAY_ENV=test
    assert not zoom_sandbox.wanted(make_settings(relay_env="production"))
    assert "not configured" in zoom_sandbox.describe(make_settings(), None)


def test_runs_as_a_module(tmp_path: Path, receiver: Receiver) -> None:
    sandbox = ZoomSandbox(webhook_secret=SECRET, webhook_url=f"{receiver.base}/webhooks/zoom")
    stderr = tmp_path / "stderr"
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=stderr.open("wb")
    )
    try:
        sandbox.wait_ready()
        token = httpx.post(
            sandbox.token_url,
            params={"grant_type": "account_credentials", "account_id": sandbox.account_id},
            auth=(sandbox.client_id, sandbox.client_secret),
        ).json()["access_token"]
        created = httpx.post(
            f"{sandbox.api_base}/v2/users/me/meetings",
            json={"topic": "x"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert created["join_url"].startswith(f"{sandbox.api_base}/j/")
        httpx.post(
            f"{sandbox.api_base}/_sandbox/meetings/{created['id']}/events",
            json={"event": "meeting.started"},
        ).raise_for_status()
        (post,) = receiver.wait_for(1)
        assert _verified(post)
    finally:
        process.terminate()
        process.wait(timeout=10)
    logged = stderr.read_bytes()
    assert SECRET.encode() not in logged and token.encode() not in logged
    assert sandbox.client_secret.encode() not in logged


async def test_the_sandbox_page_section_fires_events_and_checks_validation(
    make_settings: Callable[..., Settings],
    server: ZoomServer,
    api: httpx.Client,
    receiver: Receiver,
) -> None:
    created = _meeting(api)
    settings = make_settings(relay_env="development", zoom_api_base=server.api_base)
    assert ZoomSection.applies(settings)
    assert not ZoomSection.applies(make_settings(relay_env="development"))  # api.zoom.us
    async with httpx.AsyncClient() as http:
        section = ZoomSection(settings, http)
        said = await section.act("meeting-ended", str(created["id"]))
        assert (
            said
            == f"meeting.ended sent for meeting {created['id']} to {receiver.base}/webhooks/zoom"
        )
        (post,) = receiver.wait_for(1)
        assert _verified(post) and json.loads(post.body)["event"] == "meeting.ended"
        view = await section.view()
        # The receiver answers no challenge: the check reports it failed.
        with pytest.raises(SandboxError, match="URL validation failed"):
            await section.act("validate", None)
    (table,) = view.tables
    (row,) = table.rows
    assert row.key == str(created["id"])
    assert row.cells[1] == "Planning" and row.cells[3] == "finished"
    assert "?" not in row.cells[5]  # the join URL without its passcode
    assert row.cells[6].startswith("meeting.ended: ")
    assert [c.label for c in row.controls] == [
        "meeting.started",
        "meeting.ended",
        "recording.completed",
    ]
    assert [c.action for c in view.controls] == ["validate"]
    assert created["password"] not in repr(view) and SECRET not in repr(view)
