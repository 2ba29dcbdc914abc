"""TwilioSender against the Twilio sandbox (relay/sandbox/twilio.py), through the `twilio`
package's async client as the worker runs it; and E.164 validation."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError

from relay.errors import ConfigError
from relay.notifications import twilio
from relay.notifications.contracts import Channel, NotificationStatus, Provider
from relay.notifications.phones import to_e164
from relay.notifications.senders import Outgoing
from relay.notifications.twilio import TwilioSender
from relay.sandbox.twilio import TwilioSandbox, TwilioServer
from relay.settings import Settings

CALLBACK = "http://127.0.0.1:9/webhooks/twilio/status?notificationId="


@pytest.fixture
def server() -> Iterator[TwilioServer]:
    # Status callbacks go to a closed port here; tests/notifications/test_twilio_events.py
    # receives and verifies them.
    with TwilioSandbox(port=0, callback_delay=0).run_in_thread() as running:
        yield running


def _settings(make_settings: Callable[..., Settings], server: TwilioServer) -> Settings:
    env = server.sandbox.environment()
    return make_settings(**{name.lower(): value for name, value in env.items()})


@pytest_asyncio.fixture
async def sender(
    server: TwilioServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[TwilioSender]:
    sender = TwilioSender.from_settings(_settings(make_settings, server))
    try:
        yield sender
    finally:
        await sender.close()


def _outgoing(channel: Channel, to: str, **content: Any) -> Outgoing:
    notification_id = uuid.uuid4().hex
    return Outgoing(
        id=notification_id,
        channel=channel,
        to=to,
        content=content,
        status_callback=CALLBACK + notification_id,
    )


def _captured(server: TwilioServer) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{server.api_base}/_sandbox/messages")
    response.raise_for_status()
    return {m["sid"]: m for m in response.json()["data"]}


# --- sends ---------------------------------------------------------------------------------


async def test_an_sms_reaches_twilio_with_its_sender_body_and_status_callback(
    sender: TwilioSender, server: TwilioServer
) -> None:
    message = _outgoing(Channel.SMS, "+14155550123", body="Your code is 123456")

    sent = await sender.send(message)

    assert sent.provider is Provider.TWILIO and sent.status is NotificationStatus.SENT
    assert sent.error_code is None and sent.provider_message_id is not None
    captured = _captured(server)[sent.provider_message_id]
    assert captured["channel"] == "sms"
    assert captured["to"] == "+14155550123"
    assert captured["from"] == server.sandbox.from_number
    assert captured["body"] == "Your code is 123456"
    assert captured["statusCallback"] == message.status_callback


async def test_whatsapp_media_goes_with_the_whatsapp_prefix_on_both_numbers(
    sender: TwilioSender, server: TwilioServer
) -> None:
    several = _outgoing(
        Channel.WHATSAPP,
        "+14155550123",
        body="Your ticket",
        mediaUrl=["https://example.com/a.png", "https://example.com/b.pdf"],
    )
    one = _outgoing(Channel.WHATSAPP, "+14155550124", mediaUrl="https://example.com/c.png")

    first = await sender.send(several)
    second = await sender.send(one)

    assert first.status is second.status is NotificationStatus.SENT
    assert first.provider_message_id and second.provider_message_id
    captured = _captured(server)
    media = captured[first.provider_message_id]
    assert media["channel"] == "whatsapp"
    assert media["to"] == "whatsapp:+14155550123"
    assert media["from"] == f"whatsapp:{server.sandbox.whatsapp_number}"
    assert media["body"] == "Your ticket"
    assert media["mediaUrls"] == ["https://example.com/a.png", "https://example.com/b.pdf"]
    assert media["statusCallback"] == several.status_callback
    alone = captured[second.provider_message_id]
    assert alone["mediaUrls"] == ["https://example.com/c.png"] and alone["body"] == ""


async def test_a_whatsapp_content_template_sends_its_sid_and_variables_as_json(
    sender: TwilioSender, server: TwilioServer
) -> None:
    content_sid = "HX" + "0123456789abcdef" * 2
    message = _outgoing(
        Channel.WHATSAPP,
        "+14155550123",
        contentSid=content_sid,
        contentVariables={"1": "Ada", "2": "12:30"},
    )

    sent = await sender.send(message)

    assert sent.status is NotificationStatus.SENT and sent.provider_message_id
    captured = _captured(server)[sent.provider_message_id]
    assert captured["contentSid"] == content_sid
    assert captured["contentVariables"] == {"1": "Ada", "2": "12:30"}
    assert captured["to"] == "whatsapp:+14155550123"
    assert captured["from"] == f"whatsapp:{server.sandbox.whatsapp_number}"


# --- refusals and failures -----------------------------------------------------------------


async def test_a_refused_number_is_failed_with_twilios_code_and_no_number_in_the_message(
    sender: TwilioSender, server: TwilioServer
) -> None:
    sent = await sender.send(_outgoing(Channel.SMS, "+15005550001", body="hi"))

    assert sent.status is NotificationStatus.FAILED
    assert sent.error_code == "TWILIO_21211" and sent.provider_message_id is None
    assert sent.error_message == "The 'To' number <number> is not a valid phone number."
    assert "5005550001" not in str(sent.as_dict())
    assert _captured(server) == {}


async def test_an_opted_out_whatsapp_number_is_failed_with_21610(
    sender: TwilioSender, server: TwilioServer
) -> None:
    sent = await sender.send(_outgoing(Channel.WHATSAPP, "+15005550004", body="hi"))

    assert (sent.status, sent.error_code) == (NotificationStatus.FAILED, "TWILIO_21610")


async def test_a_twilio_outage_is_raised_retryable_with_its_status(
    sender: TwilioSender, server: TwilioServer
) -> None:
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()

    with pytest.raises(ApplicationError) as raised:
        await sender.send(_outgoing(Channel.SMS, "+14155550123", body="hi"))

    assert not raised.value.non_retryable
    assert raised.value.type == "PROVIDER_ERROR"
    assert raised.value.details == ({"provider": "twilio", "status": 503},)
    assert _captured(server) == {}
    # The fault is spent: the retry Temporal would make goes through.
    again = await sender.send(_outgoing(Channel.SMS, "+14155550123", body="hi"))
    assert again.status is NotificationStatus.SENT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_connection_is_retryable_and_says_twilio_never_got_it(
    make_settings: Callable[..., Settings], server: TwilioServer
) -> None:
    settings = _settings(make_settings, server).model_copy(
        update={"twilio_api_base": f"http://127.0.0.1:{_closed_port()}"}
    )
    sender = TwilioSender.from_settings(settings)
    try:
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_outgoing(Channel.SMS, "+14155550123", body="hi"))
    finally:
        await sender.close()

    assert not raised.value.non_retryable
    assert raised.value.details == ({"provider": "twilio", "connected": False},)
    assert "+14155550123" not in str(raised.value)


async def test_a_silent_twilio_times_out_as_an_ambiguous_retryable_failure(
    server: TwilioServer,
) -> None:
    # A socket that accepts connections (the kernel's backlog) and never answers: the
    # request leaves, so whether Twilio acted is unknown — no "connected": False.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        sandbox = server.sandbox
        sender = TwilioSender(
            sandbox.account_sid,
            sandbox.auth_token,
            from_number=sandbox.from_number,
            api_base=f"http://127.0.0.1:{silent.getsockname()[1]}",
            timeout=0.5,
        )
        try:
            with pytest.raises(ApplicationError) as raised:
                await sender.send(_outgoing(Channel.SMS, "+14155550123", body="hi"))
        finally:
            await sender.close()

    assert not raised.value.non_retryable
    assert "timed out" in str(raised.value)
    assert raised.value.details == ({"provider": "twilio"},)


async def test_a_channel_without_its_sender_number_fails_without_a_request(
    make_settings: Callable[..., Settings], server: TwilioServer
) -> None:
    settings = _settings(make_settings, server).model_copy(update={"twilio_whatsapp_number": None})
    sender = TwilioSender.from_settings(settings)
    try:
        sent = await sender.send(_outgoing(Channel.WHATSAPP, "+14155550123", body="hi"))
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_outgoing(Channel.EMAIL, "ada@example.com", text="hi"))
    finally:
        await sender.close()

    assert (sent.status, sent.error_code) == (NotificationStatus.FAILED, "PROVIDER_NOT_CONFIGURED")
    assert raised.value.non_retryable
    assert _captured(server) == {}


def test_configured_needs_the_account_and_the_channels_sender(
    make_settings: Callable[..., Settings], server: TwilioServer
) -> None:
    full = _settings(make_settings, server)
    sms_only = full.model_copy(update={"twilio_whatsapp_number": None})
    no_token = full.model_copy(update={"twilio_auth_token": None})

    assert twilio.configured(full, Channel.SMS) and twilio.configured(full, Channel.WHATSAPP)
    assert twilio.configured(sms_only, Channel.SMS)
    assert not twilio.configured(sms_only, Channel.WHATSAPP)
    assert not twilio.configured(no_token, Channel.SMS)
    assert not twilio.configured(full, Channel.EMAIL)
    assert not twilio.configured(make_settings(), Channel.SMS)
    with pytest.raises(ConfigError):
        TwilioSender.from_settings(no_token)


# --- E.164 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("+14155550123", "+14155550123"),
        (" +1 (415) 555-0123 ", "+14155550123"),
        ("+44 7911 123456", "+447911123456"),
        ("+33 6 12 34 56 78", "+33612345678"),
    ],
)
def test_to_e164_accepts_valid_international_numbers(written: str, e164: str) -> None:
    assert to_e164(written) == e164


@pytest.mark.parametrize(
    "written",
    [
        "12345",
        "+1",
        "+12345",
        "phone",
        "+1 800 FLOWERS",
        "14155550123",
        "+1 415 555 0123 ext. 4",
        "++14155550123",
        "+1415555012",  # a digit short
        "",
    ],
)
def test_to_e164_refuses_what_is_not_an_international_number(written: str) -> None:
    with pytest.raises(ValueError) as raised:
        to_e164(written)

    digits = "".join(c for c in written if c.isdigit())
    assert len(digits) < 4 or digits not in str(raised.value)
