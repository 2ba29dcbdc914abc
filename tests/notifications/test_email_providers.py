"""The email providers against the real sandboxes: SendGridSender against the SendGrid
sandbox (read back from its /_sandbox/messages), SmtpSender against the aiosmtpd sandbox and
small aiosmtpd servers that stall, and TemplateStore on the fixture templates."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from temporalio.exceptions import ApplicationError

from relay.ledger import _provider_did_not_act
from relay.notifications.contracts import Channel, NotificationStatus, Provider
from relay.notifications.senders import Outgoing
from relay.notifications.sendgrid import (
    MAX_PERSONALIZATIONS,
    NOTIFICATION_ARG,
    SendGridSender,
    without_addresses,
)
from relay.notifications.smtp import SmtpSender
from relay.notifications.templates import (
    TemplateNotFoundError,
    TemplateRenderError,
    TemplateStore,
)
from relay.sandbox.sendgrid import SendGridSandbox, SendGridServer
from relay.sandbox.smtp import SmtpSandbox, SmtpServer
from relay.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
ATTACHMENT = {
    "filename": "notes.txt",
    "content": base64.b64encode(b"hi").decode(),
    "type": "text/plain",
}


def _email(to: str, **content: Any) -> Outgoing:
    return Outgoing(id=uuid.uuid4().hex, channel=Channel.EMAIL, to=to, content=content)


def _settings(
    make_settings: Callable[..., Settings], env: dict[str, str], **extra: object
) -> Settings:
    return make_settings(**{key.lower(): value for key, value in env.items()}, **extra)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- SendGrid ------------------------------------------------------------------------------


@pytest.fixture
def sendgrid_server() -> Iterator[SendGridServer]:
    with SendGridSandbox(port=0, event_delay=0).run_in_thread() as server:
        yield server


@pytest_asyncio.fixture
async def sendgrid(
    sendgrid_server: SendGridServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[SendGridSender]:
    settings = _settings(make_settings, sendgrid_server.sandbox.environment())
    assert SendGridSender.configured(settings)
    sender = SendGridSender.from_settings(settings)
    yield sender
    await sender.close()


def _captured(server: SendGridServer, limit: int = 50) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.api_base}/_sandbox/messages", params={"limit": limit})
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_sendgrid_is_configured_by_its_key(make_settings: Callable[..., Settings]) -> None:
    assert not SendGridSender.configured(make_settings())
    assert SendGridSender.configured(make_settings(sendgrid_api_key="SG.x"))


async def test_a_plain_email_reaches_sendgrid_with_its_content_and_custom_args(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer
) -> None:
    message = _email(
        "ada@example.com",
        subject="Hello Ada",
        html="<p>Hi <b>Ada</b></p>",
        text="Hi Ada",
        replyTo="help@example.com",
        attachments=[ATTACHMENT],
    )

    sent = await sendgrid.send(message)

    assert sent.provider is Provider.SENDGRID
    assert sent.status is NotificationStatus.SENT and sent.error_code is None
    [captured] = _captured(sendgrid_server)
    assert sent.provider_message_id == captured["messageId"]
    assert captured["to"] == ["ada@example.com"]
    assert captured["from"] == sendgrid_server.sandbox.email_from  # EMAIL_FROM
    assert captured["replyTo"] == "help@example.com"
    assert (captured["subject"], captured["html"], captured["text"]) == (
        "Hello Ada",
        "<p>Hi <b>Ada</b></p>",
        "Hi Ada",
    )
    assert captured["attachments"] == ["notes.txt"]
    assert captured["customArgs"] == {NOTIFICATION_ARG: message.id}


async def test_a_templated_email_carries_the_template_id_and_data(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer
) -> None:
    message = _email(
        "ada@example.com",
        templateId="d-0123456789abcdef",
        templateData={"name": "Ada", "items": [1, 2]},
        **{"from": "Team <team@example.com>"},
    )

    sent = await sendgrid.send(message)

    assert sent.status is NotificationStatus.SENT
    [captured] = _captured(sendgrid_server)
    assert captured["from"] == "team@example.com"
    assert captured["templateId"] == "d-0123456789abcdef"
    assert captured["templateData"] == {"name": "Ada", "items": [1, 2]}
    assert captured["subject"] is None and captured["html"] is None
    assert captured["customArgs"] == {NOTIFICATION_ARG: message.id}


async def test_bulk_sends_a_thousand_personalizations_in_one_request(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer
) -> None:
    recipients = 2500
    messages = [
        _email(f"user{n}@example.com", templateId="d-bulk", templateData={"n": n})
        for n in range(recipients)
    ]
    batches = [messages[i : i + MAX_PERSONALIZATIONS] for i in range(0, recipients, 1000)]

    results = [await sendgrid.send_bulk(batch) for batch in batches]

    assert [len(r) for r in results] == [1000, 1000, 500]
    request_ids = []
    for batch_results in results:
        assert {s.status for s in batch_results} == {NotificationStatus.SENT}
        [request_id] = {s.provider_message_id for s in batch_results}  # one request each
        request_ids.append(request_id)
    assert len(set(request_ids)) == 3
    captured = sendgrid_server.state.messages()
    assert len(captured) == recipients
    per_request = {rid: [c for c in captured if c["messageId"] == rid] for rid in request_ids}
    assert [len(per_request[rid]) for rid in request_ids] == [1000, 1000, 500]
    # Each personalization kept its own recipient, data and notification id.
    by_id = {c["customArgs"][NOTIFICATION_ARG]: c for c in captured}
    for n, message in enumerate(messages):
        assert by_id[message.id]["to"] == [f"user{n}@example.com"]
        assert by_id[message.id]["templateData"] == {"n": n}
    # And the sandbox's own listing shows the last request whole.
    listed = _captured(sendgrid_server, limit=1000)
    assert sum(1 for c in listed if c["messageId"] == request_ids[2]) == 500


async def test_bulk_refuses_more_than_a_thousand_or_mixed_content(sendgrid: SendGridSender) -> None:
    with pytest.raises(ValueError):
        await sendgrid.send_bulk(
            [_email(f"u{n}@example.com", templateId="d-x") for n in range(1001)]
        )
    with pytest.raises(ValueError):
        await sendgrid.send_bulk(
            [_email("a@example.com", templateId="d-x"), _email("b@example.com", templateId="d-y")]
        )


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("relay@nowhere", "Does not contain a valid address."),
        # No address at all: SendGrid's message quotes example addresses, which go too.
        ("not-an-address", "The from object must be provided for every email send."),
    ],
)
async def test_an_invalid_from_is_failed_with_sendgrids_code_and_no_address(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer, sender: str, reason: str
) -> None:
    sent = await sendgrid.send(
        _email("ada@example.com", subject="Hi", text="Hi", **{"from": sender})
    )

    assert sent.status is NotificationStatus.FAILED
    assert sent.error_code == "SENDGRID_400"
    assert sent.error_message and sent.error_message.startswith(reason)
    assert "@" not in sent.error_message
    assert _captured(sendgrid_server) == []


async def test_a_wrong_key_is_failed_with_401(
    sendgrid_server: SendGridServer,
) -> None:
    sender = SendGridSender(
        "SG.wrong", api_base=sendgrid_server.api_base, email_from="r@example.com"
    )
    try:
        sent = await sender.send(_email("ada@example.com", subject="Hi", text="Hi"))
    finally:
        await sender.close()
    assert (sent.status, sent.error_code) == (NotificationStatus.FAILED, "SENDGRID_401")
    assert sent.error_message and "authorization" in sent.error_message


async def test_a_bulk_refused_for_one_recipient_sends_the_others(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer
) -> None:
    messages = [
        _email("a@example.com", templateId="d-x", templateData={"n": 0}),
        _email("nobody@nowhere", templateId="d-x", templateData={"n": 1}),
        _email("c@example.com", templateId="d-x", templateData={"n": 2}),
    ]

    sent = await sendgrid.send_bulk(messages)

    assert [s.status for s in sent] == [
        NotificationStatus.SENT,
        NotificationStatus.FAILED,
        NotificationStatus.SENT,
    ]
    assert sent[1].error_code == "SENDGRID_400" and "@" not in (sent[1].error_message or "")
    assert sent[0].provider_message_id == sent[2].provider_message_id
    assert sorted(c["to"][0] for c in _captured(sendgrid_server)) == [
        "a@example.com",
        "c@example.com",
    ]


async def test_a_sendgrid_outage_raises_retryable_and_the_ledger_reads_did_not_act(
    sendgrid: SendGridSender, sendgrid_server: SendGridServer
) -> None:
    httpx.post(f"{sendgrid_server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()
    message = _email("ada@example.com", subject="Hi", text="Hi")

    with pytest.raises(ApplicationError) as raised:
        await sendgrid.send(message)

    assert not raised.value.non_retryable
    assert raised.value.details[0] == {"provider": "sendgrid", "status": 503}
    assert _provider_did_not_act(raised.value)
    assert "ada@" not in str(raised.value)
    assert _captured(sendgrid_server) == []
    # The retry goes through.
    assert (await sendgrid.send(message)).status is NotificationStatus.SENT


async def test_an_unreachable_sendgrid_raises_not_connected() -> None:
    sender = SendGridSender("SG.x", api_base=f"http://127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_email("ada@example.com", subject="Hi", text="Hi"))
    finally:
        await sender.close()
    assert raised.value.details[0]["connected"] is False
    assert _provider_did_not_act(raised.value) and not raised.value.non_retryable


def test_error_messages_lose_their_addresses() -> None:
    assert (
        without_addresses("550 <Ada.L@Example.com>: unknown user")
        == "550 <<address>>: unknown user"
    )
    assert without_addresses(None) is None


# --- templates -----------------------------------------------------------------------------


def test_templates_render_html_escaped_and_text_raw() -> None:
    store = TemplateStore(TEMPLATES)
    assert store.exists("welcome") and store.exists("receipt")
    rendered = store.render("welcome", {"name": "Ada", "note": "<script>x()</script> & co"})

    assert rendered.subject == "Welcome, Ada!"
    assert "<p>&lt;script&gt;x()&lt;/script&gt; &amp; co</p>" in rendered.html
    assert "<script>" not in rendered.html
    assert rendered.text is not None and "<script>x()</script> & co" in rendered.text
    # The same object comes back: compiled once.
    assert store._compiled("welcome") is store._compiled("welcome")


def test_a_subject_is_one_line_and_body_txt_is_optional() -> None:
    rendered = TemplateStore(TEMPLATES).render(
        "receipt", {"number": "7\r\nBcc: x@example.com", "total": 3, "inject": True}
    )
    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    assert rendered.subject == "Receipt 7 Bcc: x@example.com Injected: header"
    assert rendered.text is None


@pytest.mark.parametrize(
    "template_id", ["../welcome", "welcome/../welcome", "/etc", "", "a" * 200, "nope", ".."]
)
def test_unknown_or_unsafe_ids_are_not_found(template_id: str) -> None:
    store = TemplateStore(TEMPLATES)
    assert not store.exists(template_id)
    with pytest.raises(TemplateNotFoundError):
        store.render(template_id, {})


def test_no_directory_means_no_templates() -> None:
    assert not TemplateStore(None).exists("welcome")


def test_a_missing_variable_or_unsafe_access_is_a_render_error() -> None:
    store = TemplateStore(TEMPLATES)
    with pytest.raises(TemplateRenderError, match="note"):
        store.render("welcome", {"name": "Ada"})
    with pytest.raises(TemplateRenderError) as raised:
        store.render("broken", {"name": "secret-value"})
    assert "secret-value" not in str(raised.value)


# --- SMTP ----------------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpSandbox(port=0, http_port=0).run_in_thread() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: SmtpServer, make_settings: Callable[..., Settings]) -> SmtpSender:
    settings = _settings(
        make_settings,
        smtp_server.sandbox.environment(),
        email_from="Relay <relay@example.com>",
        email_templates_dir=TEMPLATES,
    )
    assert SmtpSender.configured(settings)
    return SmtpSender.from_settings(settings, TemplateStore(settings.email_templates_dir))


def _mail(server: SmtpServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{server.url}/_sandbox/messages").json()["data"]
    return data


async def test_smtp_sends_a_plain_email_with_alternatives_and_attachments(
    smtp: SmtpSender, smtp_server: SmtpServer
) -> None:
    sent = await smtp.send(
        _email(
            "ada@example.com",
            subject="Hello Ada",
            html="<p>Hi <b>Ada</b></p>",
            text="Hi Ada",
            replyTo="help@example.com",
            attachments=[ATTACHMENT],
        )
    )

    assert (sent.provider, sent.status) == (Provider.SMTP, NotificationStatus.SENT)
    [captured] = _mail(smtp_server)
    assert sent.provider_message_id == captured["messageId"]
    assert sent.provider_message_id and sent.provider_message_id.endswith("@example.com>")
    assert captured["mailFrom"] == "relay@example.com"
    assert captured["rcptTos"] == ["ada@example.com"]
    assert captured["from"] == "Relay <relay@example.com>"
    assert captured["replyTo"] == "help@example.com"
    assert captured["subject"] == "Hello Ada"
    assert captured["text"].strip() == "Hi Ada"
    assert captured["html"].strip() == "<p>Hi <b>Ada</b></p>"
    assert captured["attachments"] == [
        {"filename": "notes.txt", "contentType": "text/plain", "size": 2}
    ]


async def test_smtp_renders_the_template_with_html_escaped(
    smtp: SmtpSender, smtp_server: SmtpServer
) -> None:
    sent = await smtp.send(
        _email(
            "ada@example.com",
            templateId="welcome",
            templateData={"name": "Ada", "note": "<script>alert(1)</script>"},
        )
    )

    assert sent.status is NotificationStatus.SENT
    [captured] = _mail(smtp_server)
    assert captured["subject"] == "Welcome, Ada!"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in captured["html"]
    assert "<script>" not in captured["html"]
    assert "<script>alert(1)</script>" in captured["text"]


async def test_smtp_fails_an_unknown_template_or_missing_data_without_sending(
    smtp: SmtpSender, smtp_server: SmtpServer
) -> None:
    missing = await smtp.send(_email("ada@example.com", templateId="nope"))
    incomplete = await smtp.send(_email("ada@example.com", templateId="welcome"))

    assert (missing.status, missing.error_code) == (NotificationStatus.FAILED, "TEMPLATE_NOT_FOUND")
    assert (incomplete.status, incomplete.error_code) == (
        NotificationStatus.FAILED,
        "TEMPLATE_ERROR",
    )
    assert _mail(smtp_server) == []


async def test_smtp_a_refused_mailbox_is_failed_with_its_code(
    smtp: SmtpSender, smtp_server: SmtpServer
) -> None:
    sent = await smtp.send(_email("reject@example.com", subject="Hi", text="Hi"))

    assert (sent.status, sent.error_code) == (NotificationStatus.FAILED, "SMTP_550")
    assert sent.error_message and "reject@" not in sent.error_message
    assert _mail(smtp_server) == []


async def test_smtp_a_transient_refusal_raises_did_not_act(
    smtp: SmtpSender, smtp_server: SmtpServer
) -> None:
    httpx.post(f"{smtp_server.url}/_sandbox/faults", json={"count": 1}).raise_for_status()
    message = _email("ada@example.com", subject="Hi", text="Hi")

    with pytest.raises(ApplicationError) as raised:
        await smtp.send(message)

    assert not raised.value.non_retryable
    assert raised.value.details[0] == {"provider": "smtp", "status": 451}
    assert _provider_did_not_act(raised.value)
    assert _mail(smtp_server) == []
    assert (await smtp.send(message)).status is NotificationStatus.SENT


async def test_smtp_refused_connection_raises_not_connected() -> None:
    sender = SmtpSender("127.0.0.1", _closed_port(), tls=False, email_from="r@example.com")
    with pytest.raises(ApplicationError) as raised:
        await sender.send(_email("ada@example.com", subject="Hi", text="Hi"))
    assert raised.value.details[0]["connected"] is False
    assert _provider_did_not_act(raised.value) and not raised.value.non_retryable


class _Stalling:
    """An SMTP server that goes silent at one step, as an overloaded one does."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.release = asyncio.Event()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:  # noqa: N802
        if self.step == "rcpt":
            await asyncio.sleep(5)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.step == "data":
            await asyncio.sleep(5)
        return "250 OK"


@pytest.mark.parametrize(("step", "did_not_act"), [("rcpt", True), ("data", False)])
async def test_smtp_a_timeout_after_data_is_ambiguous_before_it_is_not(
    step: str, did_not_act: bool
) -> None:
    controller = Controller(_Stalling(step), hostname="127.0.0.1", port=_closed_port())
    controller.start()
    try:
        sender = SmtpSender(
            "127.0.0.1", controller.port, tls=False, email_from="r@example.com", timeout=0.5
        )
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_email("ada@example.com", subject="Hi", text="Hi"))
    finally:
        controller.stop()
    assert not raised.value.non_retryable
    assert _provider_did_not_act(raised.value) is did_not_act
    assert raised.value.details[0]["stage"] == ("data" if step == "data" else "session")
