"""The FCM sandbox driven by firebase-admin as Relay drives FCM: credentials from the
service-account JSON the sandbox writes (google-auth's JWT grant against its token
endpoint), sends through the HTTP v1 API, and FCM's errors for the magic tokens."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import httpx
import pytest
from firebase_admin import credentials, exceptions, messaging
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account

from relay.sandbox import fcm
from relay.sandbox.fcm import FcmSandbox, FcmServer, ServiceAccount, point_messaging
from relay.settings import Settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FcmServer]:
    with FcmSandbox(port=0, credentials_file=tmp_path / "sa.json").run_in_thread() as s:
        yield s


def _app(sandbox: FcmSandbox) -> firebase_admin.App:
    """How Relay builds its app: FIREBASE_CREDENTIALS, then FCM_API_BASE."""
    env = sandbox.environment()
    app = firebase_admin.initialize_app(
        credentials.Certificate(env["FIREBASE_CREDENTIALS"]), name=f"test-{uuid.uuid4().hex}"
    )
    point_messaging(app, env["FCM_API_BASE"])
    return app


@pytest.fixture
def app(server: FcmServer) -> Iterator[firebase_admin.App]:
    app = _app(server.sandbox)
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)


def _messages(server: FcmServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{server.api_base}/_sandbox/messages").json()["data"]
    return data


def _push(token: str, **data: str) -> messaging.Message:
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title="Hi", body="You have mail"),
        data=data or None,
    )


def test_firebase_admin_sends_through_the_sandbox(
    app: firebase_admin.App, server: FcmServer
) -> None:
    name = messaging.send(_push("device-1", kind="mail"), app=app)

    assert name.startswith(f"projects/{fcm.SANDBOX_PROJECT}/messages/")
    [captured] = _messages(server)
    assert captured["name"] == name and captured["token"] == "device-1"
    assert (captured["title"], captured["body"]) == ("Hi", "You have mail")
    assert captured["data"] == {"kind": "mail"} and captured["status"] == "sent"


def test_multicast_reports_unregistered_and_other_token_errors(
    app: firebase_admin.App, server: FcmServer
) -> None:
    tokens = ["device-1", "bad-gone", "mismatch-other-sender", "invalid-###", "device-2"]
    batch = messaging.send_each_for_multicast(
        messaging.MulticastMessage(
            tokens=tokens, notification=messaging.Notification(title="Hi", body="x")
        ),
        app=app,
    )

    assert (batch.success_count, batch.failure_count) == (2, 3)
    by_token = dict(zip(tokens, batch.responses, strict=True))
    assert by_token["device-1"].success and by_token["device-2"].success
    assert isinstance(by_token["bad-gone"].exception, messaging.UnregisteredError)
    assert isinstance(by_token["mismatch-other-sender"].exception, messaging.SenderIdMismatchError)
    assert isinstance(by_token["invalid-###"].exception, exceptions.InvalidArgumentError)
    statuses = {m["token"]: (m["status"], m["errorCode"]) for m in _messages(server)}
    assert statuses["bad-gone"] == ("failed", "UNREGISTERED")
    assert statuses["device-1"] == ("sent", None)


def test_unregistered_has_fcms_error_body(app: firebase_admin.App) -> None:
    with pytest.raises(messaging.UnregisteredError) as raised:
        messaging.send(_push("bad-token"), app=app)

    response = raised.value.http_response
    assert response is not None and response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED",
                }
            ],
        }
    }


def test_dry_run_sends_nothing(app: firebase_admin.App, server: FcmServer) -> None:
    assert messaging.send(_push("device-1"), dry_run=True, app=app).endswith("fake_message_id")
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(_push("bad-token"), dry_run=True, app=app)
    assert _messages(server) == []


def test_topics_and_bad_requests(app: firebase_admin.App, server: FcmServer) -> None:
    assert messaging.send(messaging.Message(topic="news", data={"a": "b"}), app=app)
    token = server.state.issue_token(fcm.JWT_GRANT, _assertion(server.sandbox.account, server))
    url = f"{server.api_base}/v1/projects/{fcm.SANDBOX_PROJECT}/messages:send"
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    both = httpx.post(url, headers=headers, json={"message": {"token": "a", "topic": "b"}})
    assert both.status_code == 400 and both.json()["error"]["status"] == "INVALID_ARGUMENT"
    other = httpx.post(
        f"{server.api_base}/v1/projects/someone-else/messages:send",
        headers=headers,
        json={"message": {"token": "a"}},
    )
    assert other.status_code == 403
    anonymous = httpx.post(url, json={"message": {"token": "a"}})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["status"] == "UNAUTHENTICATED"


def _assertion(account: ServiceAccount, server: FcmServer) -> str:
    credentials_ = service_account.Credentials.from_service_account_info(
        account.info(server.sandbox.token_uri),
        scopes=["https://www.googleapis.com/auth/firebase.messaging"],
    )
    assertion: bytes = credentials_._make_authorization_grant_assertion()
    return assertion.decode("ascii")


def test_the_token_endpoint_refuses_a_key_it_did_not_issue(server: FcmServer) -> None:
    stranger = ServiceAccount.create(fcm.SANDBOX_PROJECT)
    info = stranger.info(server.sandbox.token_uri)
    info["client_email"] = server.sandbox.account.client_email
    forged = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )

    with pytest.raises(RefreshError) as raised:
        forged.refresh(GoogleRequest())
    assert "Invalid JWT Signature" in str(raised.value)
    genuine = service_account.Credentials.from_service_account_file(
        str(server.sandbox.credentials_path),
        scopes=["https://www.googleapis.com/auth/firebase.messaging"],
    )
    genuine.refresh(GoogleRequest())
    assert genuine.token and genuine.token.startswith("ya29.")
    wrong_grant = httpx.post(f"{server.api_base}/token", data={"grant_type": "password"})
    assert wrong_grant.status_code == 400
    assert wrong_grant.json()["error"] == "unsupported_grant_type"


def test_faults_answer_503_and_firebase_admin_retries(
    app: firebase_admin.App, server: FcmServer
) -> None:
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()

    # firebase-admin retries 503 on its own (urllib3 Retry); the message goes once.
    assert messaging.send(_push("device-1"), app=app)
    assert len(_messages(server)) == 1


# --- what relay dev uses -------------------------------------------------------------------


def test_credentials_file_environment_and_command(tmp_path: Path) -> None:
    path = tmp_path / "data" / "sa.json"
    sandbox = FcmSandbox(port=4321, credentials_file=path)

    assert sandbox.environment() == {
        "FIREBASE_CREDENTIALS": str(path),
        "FCM_API_BASE": "http://127.0.0.1:4321",
    }
    info = json.loads(path.read_text())
    assert info["type"] == "service_account" and info["project_id"] == fcm.SANDBOX_PROJECT
    assert info["token_uri"] == "http://127.0.0.1:4321/token"
    assert path.stat().st_mode & 0o077 == 0
    # Started again on another port: the same key, the new token_uri.
    again = FcmSandbox(port=4322, credentials_file=path)
    assert json.loads(path.read_text())["private_key"] == info["private_key"]
    assert json.loads(path.read_text())["token_uri"] == "http://127.0.0.1:4322/token"
    command = again.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.fcm"]
    assert not any("PRIVATE KEY" in part for part in command)


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings]) -> None:
    development = make_settings(relay_env="development")
    real = make_settings(relay_env="development", firebase_credentials="/etc/sa.json")

    assert fcm.wanted(development) and not fcm.wanted(real)
    assert not fcm.wanted(make_settings(relay_env="development", sandbox="off"))
    planned = fcm.plan(development)
    assert planned is not None
    assert planned.credentials_path == development.data_dir / fcm.CREDENTIALS_FILE_NAME
    assert "local FCM" in fcm.describe(development, planned)
    assert fcm.describe(real, None) == "real (fcm.googleapis.com)"


def test_runs_as_a_module(tmp_path: Path) -> None:
    sandbox = FcmSandbox(credentials_file=tmp_path / "sa.json")
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb")
    )
    app = None
    try:
        sandbox.wait_ready()
        app = _app(sandbox)
        assert messaging.send(_push("device-1"), app=app)
        with pytest.raises(messaging.UnregisteredError):
            messaging.send(_push("bad-1"), app=app)
    finally:
        if app is not None:
            firebase_admin.delete_app(app)
        process.terminate()
        process.wait(timeout=10)


# --- the /sandbox page's section -----------------------------------------------------------


async def test_the_page_section_lists_push_messages(
    app: firebase_admin.App, server: FcmServer, make_settings: Callable[..., Settings]
) -> None:
    from relay.sandbox.sections import SECTIONS, FcmSection

    messaging.send(_push("device-1"), app=app)
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(_push("bad-1"), app=app)
    settings = make_settings(relay_env="development", fcm_api_base=server.api_base)
    assert FcmSection in SECTIONS and FcmSection.applies(settings)

    async with httpx.AsyncClient() as http:
        [table] = (await FcmSection(settings, http).view()).tables
    assert [row.cells[:4] for row in table.rows] == [
        ("bad-1", "Hi", "You have mail", "failed (UNREGISTERED)"),
        ("device-1", "Hi", "You have mail", "sent"),
    ]


async def test_the_async_multicast_goes_through_the_sandbox_too(
    app: firebase_admin.App, server: FcmServer
) -> None:
    batch = await messaging.send_each_for_multicast_async(
        messaging.MulticastMessage(
            tokens=["device-1", "bad-2"], notification=messaging.Notification(title="Hi")
        ),
        dry_run=False,
        app=app,
    )

    assert (batch.success_count, batch.failure_count) == (1, 1)
    assert isinstance(batch.responses[1].exception, messaging.UnregisteredError)
    assert {m["token"] for m in _messages(server)} == {"device-1", "bad-2"}
