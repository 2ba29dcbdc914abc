"""The SendGrid sandbox driven by the `sendgrid` package as Relay drives SendGrid, its Event
Webhook received on loopback and verified with the package's own `EventWebhook`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sendgrid.helpers.mail import Mail, Personalization, To

from relay.sandbox import sendgrid
from relay.sandbox.sendgrid import SendGridSandbox, SendGridServer
from relay.settings import Settings
from tests.support.receiver import Post
from tests.support.receiver import Receiver as SharedReceiver

WAIT_SECONDS = 15


class Receiver(SharedReceiver):
    """Records every POST to it; Relay's /webhooks/sendgrid/events stands here."""

    @property
    def url(self) -> str:
        return f"{self.base}/webhooks/sendgrid/events"

    def events(self) -> list[dict[str, Any]]:
        return [event for post in self.posts for event in post.json()]

    def wait_for_events(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        self.wait_until(lambda _: done(self.events()))
        return self.events()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver  # type: ignore[misc]


@pytest.fixture
def server(receiver: Receiver) -> Iterator[SendGridServer]:
    with SendGridSandbox(port=0, webhook_url=receiver.url, event_delay=0).run_in_thread() as s:
        yield s


@pytest.fixture
def client(server: SendGridServer) -> SendGridAPIClient:
    env = server.sandbox.environment()
    return SendGridAPIClient(env["SENDGRID_API_KEY"], host=env["SENDGRID_API_BASE"])


def _mail(*to: str, **kwargs: Any) -> Mail:
    defaults: dict[str, Any] = {
        "from_email": "relay@example.com",
        "subject": "Hello",
        "html_content": "<p>Hi <b>there</b></p>",
        "plain_text_content": "Hi there",
    }
    return Mail(to_emails=list(to), **(defaults | kwargs))


def _verified(post: Post, public_key: str) -> bool:
    verifier = EventWebhook(public_key)
    return bool(
        verifier.verify_signature(
            post.body.decode("utf-8"),
            post.headers[EventWebhookHeader.SIGNATURE],
            post.headers[EventWebhookHeader.TIMESTAMP],
        )
    )


def _messages(server: SendGridServer) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.api_base}/_sandbox/messages")
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# --- the mail send API ---------------------------------------------------------------------


def test_the_sendgrid_package_sends_and_the_message_is_captured(
    client: SendGridAPIClient, server: SendGridServer
) -> None:
    response = client.send(_mail("ada@example.com"))

    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    [captured] = _messages(server)
    assert captured["messageId"] == message_id
    assert captured["to"] == ["ada@example.com"]
    assert captured["from"] == "relay@example.com"
    assert captured["subject"] == "Hello"
    assert captured["text"] == "Hi there"
    assert captured["html"] == "<p>Hi <b>there</b></p>"


def test_dynamic_templates_need_no_subject_or_content(
    client: SendGridAPIClient, server: SendGridServer
) -> None:
    mail = Mail(from_email="relay@example.com", to_emails="ada@example.com")
    mail.template_id = "d-0123456789abcdef"
    mail.dynamic_template_data = {"name": "Ada"}

    assert client.send(mail).status_code == 202
    [captured] = _messages(server)
    assert captured["templateId"] == "d-0123456789abcdef"
    assert captured["templateData"] == {"name": "Ada"}


def test_each_personalization_is_a_message_and_newest_come_first(
    client: SendGridAPIClient, server: SendGridServer
) -> None:
    mail = Mail(from_email="relay@example.com", subject="Bulk", plain_text_content="x")
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        personalization = Personalization()
        personalization.add_to(To(address))
        personalization.dynamic_template_data = {"who": address}
        mail.add_personalization(personalization)
    first = client.send(mail).headers["X-Message-Id"]
    second = client.send(_mail("d@example.com")).headers["X-Message-Id"]

    messages = _messages(server)
    assert messages[0]["to"] == ["d@example.com"]
    assert sorted(m["to"][0] for m in messages[1:]) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert all(m["templateData"] == {"who": m["to"][0]} for m in messages[1:])
    assert {m["messageId"] for m in messages[1:]} == {first} and messages[0]["messageId"] == second
    assert len({m["id"] for m in messages}) == 4


def test_a_wrong_or_missing_key_is_refused_in_sendgrids_shape(server: SendGridServer) -> None:
    wrong = SendGridAPIClient("SG.not-the-key", host=server.api_base)
    with pytest.raises(UnauthorizedError) as raised:
        wrong.send(_mail("ada@example.com"))
    body = json.loads(raised.value.body)
    assert body["errors"][0]["message"].startswith("The provided authorization grant is invalid")

    bare = httpx.post(f"{server.api_base}/v3/mail/send", json={})
    assert bare.status_code == 401
    assert bare.json() == {
        "errors": [{"message": "authorization required", "field": None, "help": None}]
    }
    assert _messages(server) == []


def _post(server: SendGridServer, body: object) -> httpx.Response:
    return httpx.post(
        f"{server.api_base}/v3/mail/send",
        json=body,
        headers={"Authorization": f"Bearer {server.sandbox.api_key}"},
    )


def _fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    return {e["field"] for e in errors}


def test_validation_reports_every_problem_like_sendgrid(server: SendGridServer) -> None:
    assert _fields(_post(server, {})) == {
        "personalizations",
        "from.email",
        "subject",
        "content",
    }
    body = {
        "personalizations": [{"to": [{"email": "not-an-address"}]}, {"to": []}],
        "from": {"email": "relay@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": ""}],
    }
    assert _fields(_post(server, body)) == {
        "personalizations.0.to.0.email",
        "personalizations.1.to",
        "content.0.value",
    }
    too_many = {
        "personalizations": [{"to": [{"email": f"u{n}@example.com"}]} for n in range(1001)],
        "from": {"email": "relay@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
    }
    assert "personalizations" in _fields(_post(server, too_many))
    malformed = httpx.post(
        f"{server.api_base}/v3/mail/send",
        content=b"{not json",
        headers={"Authorization": f"Bearer {server.sandbox.api_key}"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["message"] == "Bad Request"
    assert _messages(server) == []


def test_the_package_raises_bad_request_with_sendgrids_errors(client: SendGridAPIClient) -> None:
    with pytest.raises(BadRequestsError) as raised:
        client.send({"personalizations": [{"to": [{"email": "a@example.com"}]}]})

    fields = {e["field"] for e in json.loads(raised.value.body)["errors"]}
    assert fields == {"from.email", "subject", "content"}


def test_subject_in_every_personalization_is_enough(server: SendGridServer) -> None:
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}], "subject": "Own"}],
        "from": {"email": "relay@example.com"},
        "content": [{"type": "text/plain", "value": "x"}],
    }
    response = _post(server, body)
    assert response.status_code == 202
    assert _messages(server)[0]["subject"] == "Own"


def test_sandbox_mode_validates_and_sends_nothing(server: SendGridServer) -> None:
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "relay@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
        "mail_settings": {"sandbox_mode": {"enable": True}},
    }
    assert _post(server, body).status_code == 200
    assert _messages(server) == []


def test_faults_answer_503(client: SendGridAPIClient, server: SendGridServer) -> None:
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()

    first = _post(server, {})
    assert first.status_code == 503
    assert client.send(_mail("a@example.com")).status_code == 202


# --- the Event Webhook ---------------------------------------------------------------------


def test_events_are_signed_and_verified_by_the_sendgrid_package(
    client: SendGridAPIClient, server: SendGridServer, receiver: Receiver
) -> None:
    message_id = client.send(_mail("ada@example.com")).headers["X-Message-Id"]

    events = receiver.wait_for_events(lambda got: any(e["event"] == "delivered" for e in got))
    assert [e["event"] for e in events] == ["processed", "delivered"]
    for event in events:
        assert event["email"] == "ada@example.com"
        assert event["sg_message_id"].startswith(f"{message_id}.")
        assert isinstance(event["timestamp"], int)
    assert len({e["sg_event_id"] for e in events}) == 2
    public_key = server.sandbox.environment()["SENDGRID_WEBHOOK_PUBLIC_KEY"]
    assert all(_verified(post, public_key) for post in receiver.posts)
    assert _messages(server)[0]["status"] == "delivered"


def test_tampered_or_foreign_events_fail_the_sendgrid_verifier(
    client: SendGridAPIClient, server: SendGridServer, receiver: Receiver
) -> None:
    client.send(_mail("ada@example.com"))
    receiver.wait_for_events(lambda got: len(got) == 2)
    post = receiver.posts[0]
    public_key = server.sandbox.public_key

    tampered = Post(post.url, post.headers, post.body.replace(b"processed", b"delivered"))
    assert not _verified(tampered, public_key)
    later = dict(post.headers)
    later[EventWebhookHeader.TIMESTAMP] = str(int(post.headers[EventWebhookHeader.TIMESTAMP]) + 1)
    assert not _verified(Post(post.url, later, post.body), public_key)
    other_key = SendGridSandbox(port=1).public_key
    assert not _verified(post, other_key)
    assert _verified(post, public_key)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bounce@example.com", ["processed", "bounce"]),
        ("drop@example.com", ["dropped"]),
        ("spam@example.com", ["processed", "delivered", "spamreport"]),
    ],
)
def test_magic_recipients_get_their_outcomes(
    client: SendGridAPIClient,
    server: SendGridServer,
    receiver: Receiver,
    address: str,
    expected: list[str],
) -> None:
    client.send(_mail(address))

    events = receiver.wait_for_events(lambda got: len(got) == len(expected))
    assert [e["event"] for e in events] == expected
    assert _messages(server)[0]["status"] == expected[-1]
    if expected[-1] == "bounce":
        assert events[-1]["type"] == "bounce" and events[-1]["status"] == "5.1.1"


def test_custom_args_and_categories_ride_on_every_event(
    server: SendGridServer, receiver: Receiver
) -> None:
    body = {
        "personalizations": [
            {"to": [{"email": "a@example.com"}], "custom_args": {"relayNotificationId": "n1"}}
        ],
        "from": {"email": "relay@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
        "categories": ["verification"],
    }
    assert _post(server, body).status_code == 202

    events = receiver.wait_for_events(lambda got: len(got) == 2)
    assert all(e["relayNotificationId"] == "n1" for e in events)
    assert all(e["category"] == ["verification"] for e in events)


def test_webhooks_can_be_registered_later(server: SendGridServer, receiver: Receiver) -> None:
    listed = httpx.get(f"{server.api_base}/_sandbox/webhooks").json()
    assert listed == {"webhooks": [{"url": receiver.url}]}
    refused = httpx.post(f"{server.api_base}/_sandbox/webhooks", json={"url": "ftp://x"})
    assert refused.status_code == 400
    server.sandbox.register_webhook("http://127.0.0.1:9/other")
    urls = [w["url"] for w in httpx.get(f"{server.api_base}/_sandbox/webhooks").json()["webhooks"]]
    assert urls == [receiver.url, "http://127.0.0.1:9/other"]


def test_a_refused_post_is_retried_before_the_next_stage(
    client: SendGridAPIClient, server: SendGridServer, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    client.send(_mail("ada@example.com"))

    events = receiver.wait_for_events(lambda got: len(got) == 2)
    assert [e["event"] for e in events] == ["processed", "delivered"]
    assert receiver.refused == 1
    first = server.state.deliveries[0]
    assert (first.status, first.attempts, first.response_status) == ("delivered", 2, 200)


def test_a_target_that_never_answers_is_given_up_and_recorded(receiver: Receiver) -> None:
    sandbox = SendGridSandbox(port=0, webhook_url="http://127.0.0.1:9/gone", event_delay=0)
    with sandbox.run_in_thread() as server:
        server.state._poster.delays = (0.0, 0.0)
        server.sandbox.register_webhook(receiver.url)
        SendGridAPIClient(sandbox.api_key, host=sandbox.api_base).send(_mail("ada@example.com"))
        # The live target gets every stage though the other one fails.
        receiver.wait_for_events(lambda got: len(got) == 2)

        def dead() -> list[sendgrid.Delivery]:
            return [d for d in server.state.deliveries if d.url.endswith("/gone")]

        deadline = time.monotonic() + WAIT_SECONDS
        while any(d.status == "pending" for d in dead()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(dead()) == 2  # both stages were tried there too
        assert all(d.status == "failed" and d.attempts == 2 for d in dead())


def test_a_bulk_send_gets_every_event_without_a_thread_per_wait(
    server: SendGridServer, receiver: Receiver
) -> None:
    server.state.event_delay = 0.2
    body = {
        "personalizations": [{"to": [{"email": f"u{n}@example.com"}]} for n in range(300)],
        "from": {"email": "relay@example.com"},
        "subject": "Bulk",
        "content": [{"type": "text/plain", "value": "x"}],
    }
    for _ in range(10):
        assert _post(server, body).status_code == 202

    events = receiver.wait_for_events(lambda got: len(got) == 6000)
    assert sum(e["event"] == "delivered" for e in events) == 3000
    assert len(receiver.posts) == 20  # one signed array per request and stage


# --- the HTML preview ----------------------------------------------------------------------


def test_the_html_preview_is_served_under_a_restrictive_policy(
    client: SendGridAPIClient, server: SendGridServer
) -> None:
    client.send(_mail("ada@example.com", html_content="<p>Hi</p><script>alert(1)</script>"))
    [captured] = _messages(server)

    response = httpx.get(f"{server.api_base}/_sandbox/messages/{captured['id']}/html")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy
    assert "script-src" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{server.api_base}/_sandbox/messages/nope/html").status_code == 404


# --- what relay dev uses -------------------------------------------------------------------


def test_environment_and_command(tmp_path: Path) -> None:
    sandbox = SendGridSandbox(port=4321, key_file=tmp_path / "key.pem")

    env = sandbox.environment()
    assert env == {
        "SENDGRID_API_KEY": sendgrid.SANDBOX_API_KEY,
        "SENDGRID_API_BASE": "http://127.0.0.1:4321",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": sandbox.public_key,
        "EMAIL_FROM": sendgrid.SANDBOX_FROM,
    }
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0
    # The same key file gives the same key: a restarted sandbox still matches Relay's key.
    assert SendGridSandbox(port=1, key_file=tmp_path / "key.pem").public_key == sandbox.public_key
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.sendgrid"]
    assert sendgrid.SANDBOX_API_KEY not in command


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings]) -> None:
    development = make_settings(relay_env="development")
    off = make_settings(relay_env="development", sandbox="off")
    real = make_settings(relay_env="development", sendgrid_api_key="SG.real")

    assert sendgrid.wanted(development) and not sendgrid.wanted(off)
    assert not sendgrid.wanted(make_settings()) and not sendgrid.wanted(real)
    planned = sendgrid.plan(development)
    assert planned is not None and planned.key_file is not None
    assert planned.key_file.parent == development.data_dir
    assert sendgrid.plan(real) is None
    assert "local SendGrid" in sendgrid.describe(development, planned)
    assert sendgrid.describe(real, None) == "real (api.sendgrid.com)"
    assert sendgrid.describe(off, None).startswith("not configured")


def test_runs_as_a_module(tmp_path: Path, receiver: Receiver) -> None:
    sandbox = SendGridSandbox(webhook_url=receiver.url, event_delay=0, key_file=tmp_path / "k.pem")
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb")
    )
    try:
        sandbox.wait_ready()
        client = SendGridAPIClient(sandbox.api_key, host=sandbox.api_base)
        assert client.send(_mail("ada@example.com")).status_code == 202
        receiver.wait_for_events(lambda got: len(got) == 2)
        # The child signs with the key the parent hands Relay.
        assert all(_verified(post, sandbox.public_key) for post in receiver.posts)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert sandbox.api_key.encode() not in (tmp_path / "stderr").read_bytes()


# --- the /sandbox page's section -----------------------------------------------------------


async def test_the_page_section_lists_emails_and_shows_their_text(
    client: SendGridAPIClient,
    server: SendGridServer,
    receiver: Receiver,
    make_settings: Callable[..., Settings],
) -> None:
    from relay.sandbox.sections import SECTIONS, SendGridSection

    client.send(_mail("bounce@example.com", subject="Your receipt"))
    receiver.wait_for_events(lambda got: len(got) == 2)
    settings = make_settings(
        relay_env="development",
        sendgrid_api_base=server.api_base,
        sendgrid_api_key=server.sandbox.api_key,
    )
    assert SendGridSection in SECTIONS and SendGridSection.applies(settings)
    assert not SendGridSection.applies(make_settings(sendgrid_api_base=server.api_base))

    async with httpx.AsyncClient() as http:
        section = SendGridSection(settings, http)
        view = await section.view()
        [table] = view.tables
        [row] = table.rows
        assert row.cells[:3] == ("bounce@example.com", "Your receipt", "bounce")
        assert row.cells[4].endswith(f"/_sandbox/messages/{row.key}/html")
        text = await section.act("show-text", row.key)
        assert "Your receipt" in text and "Hi there" in text
    assert server.sandbox.api_key not in repr(view)


async def test_the_page_section_reports_a_sandbox_that_is_down(
    make_settings: Callable[..., Settings],
) -> None:
    from relay.sandbox.sections import SendGridSection

    settings = make_settings(relay_env="development", sendgrid_api_base="http://127.0.0.1:9")
    async with httpx.AsyncClient() as http:
        view = await SendGridSection(settings, http).view()
    assert view.tables == () and view.problems and "did not answer" in view.problems[0]
