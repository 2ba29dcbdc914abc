"""Twilio's status callbacks and incoming replies, as the Twilio sandbox sends them: received
on a loopback server standing where Relay's route stands, verified with `verify` (the
`twilio` package's RequestValidator) for the URL as called, and parsed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs

import httpx
import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from relay.errors import ErrorCode, RelayError
from relay.notifications.contracts import Channel, NotificationStatus, Provider
from relay.notifications.senders import Outgoing
from relay.notifications.twilio import TwilioSender
from relay.notifications.twilio_events import (
    parse_incoming,
    parse_status,
    public_request_url,
    verify,
)
from relay.sandbox import twilio as twilio_sandbox
from relay.sandbox.twilio import TwilioSandbox, TwilioServer
from relay.settings import Settings
from tests.support.receiver import Post, Receiver

STATUS_PATH = "/webhooks/twilio/status"
INCOMING_PATH = "/webhooks/twilio/incoming"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver


@pytest.fixture
def server(receiver: Receiver) -> Iterator[TwilioServer]:
    sandbox = TwilioSandbox(
        port=0, callback_delay=0, incoming_url=f"{receiver.base}{INCOMING_PATH}"
    )
    with sandbox.run_in_thread() as running:
        yield running


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], server: TwilioServer, receiver: Receiver
) -> Settings:
    """Relay as the sandbox reaches it: PUBLIC_BASE_URL is the receiver."""
    env = {name.lower(): value for name, value in server.sandbox.environment().items()}
    return make_settings(public_base_url=receiver.base, **env)


@pytest_asyncio.fixture
async def sender(settings: Settings) -> AsyncIterator[TwilioSender]:
    sender = TwilioSender.from_settings(settings)
    try:
        yield sender
    finally:
        await sender.close()


def _url(settings: Settings, got: Post) -> str:
    return public_request_url(settings, got.path, got.query)


async def _send(
    sender: TwilioSender, settings: Settings, to: str, channel: Channel = Channel.SMS
) -> tuple[str, str]:
    """(notification id, message sid) of a message whose callbacks come to the receiver."""
    notification_id = uuid.uuid4().hex
    callback = f"{settings.base_url}{STATUS_PATH}?notificationId={notification_id}"
    sent = await sender.send(
        Outgoing(notification_id, channel, to, {"body": "hi"}, status_callback=callback)
    )
    assert sent.status is NotificationStatus.SENT and sent.provider_message_id
    return notification_id, sent.provider_message_id


def _notification_id(got: Post) -> str | None:
    return parse_qs(got.query).get("notificationId", [None])[0]


# --- status callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "statuses", "error_code"),
    [
        (
            "+14155550123",
            [("sent", NotificationStatus.SENT), ("delivered", NotificationStatus.DELIVERED)],
            None,
        ),
        (
            twilio_sandbox.UNDELIVERED_NUMBER,
            [("sent", NotificationStatus.SENT), ("undelivered", NotificationStatus.UNDELIVERED)],
            "TWILIO_30003",
        ),
        (twilio_sandbox.FAILED_NUMBER, [("failed", NotificationStatus.FAILED)], "TWILIO_30008"),
    ],
)
async def test_status_callbacks_verify_for_the_url_called_and_parse_to_their_status(
    sender: TwilioSender,
    settings: Settings,
    receiver: Receiver,
    to: str,
    statuses: list[tuple[str, NotificationStatus]],
    error_code: str | None,
) -> None:
    notification_id, sid = await _send(sender, settings, to)

    callbacks = receiver.wait_for(len(statuses))
    events = []
    for got in callbacks:
        assert got.path == STATUS_PATH
        verify(settings, _url(settings, got), got.params, got.header("X-Twilio-Signature"))
        events.append(parse_status(got.params, _notification_id(got)))

    assert [(e.event, e.status) for e in events] == statuses
    for event, (status, _) in zip(events, statuses, strict=True):
        assert event.provider is Provider.TWILIO
        assert event.event_id == f"{sid}:{status}"
        assert event.provider_message_id == sid
        assert event.notification_id == notification_id
        assert event.detail == {"channel": "sms"}
    assert [e.error_code for e in events][:-1] == [None] * (len(events) - 1)
    assert events[-1].error_code == error_code


async def test_whatsapp_callbacks_name_their_channel(
    sender: TwilioSender, settings: Settings, receiver: Receiver
) -> None:
    notification_id, sid = await _send(sender, settings, "+14155550123", Channel.WHATSAPP)

    callbacks = receiver.wait_for(2)
    for got in callbacks:
        verify(settings, _url(settings, got), got.params, got.header("X-Twilio-Signature"))
    events = [parse_status(got.params, _notification_id(got)) for got in callbacks]
    assert [e.status for e in events] == [NotificationStatus.SENT, NotificationStatus.DELIVERED]
    assert {e.detail["channel"] for e in events} == {"whatsapp"}
    assert {e.notification_id for e in events} == {notification_id}


async def test_forged_tampered_or_unsigned_callbacks_are_refused(
    sender: TwilioSender, settings: Settings, receiver: Receiver
) -> None:
    await _send(sender, settings, "+14155550123")
    got = receiver.wait_for(2)[1]
    url = _url(settings, got)
    verify(settings, url, got.params, got.header("X-Twilio-Signature"))

    forged = RequestValidator("not-the-auth-token").compute_signature(url, got.params)
    other_notification = url.replace("notificationId=", "notificationId=x")
    attempts = [
        (url, got.params, forged),
        (url, got.params | {"MessageStatus": "failed"}, got.header("X-Twilio-Signature")),
        (url, {k: v for k, v in got.params.items() if k != "To"}, got.header("X-Twilio-Signature")),
        (other_notification, got.params, got.header("X-Twilio-Signature")),
        (url, got.params, None),
        (url, got.params, ""),
    ]
    for attempt_url, params, signature in attempts:
        with pytest.raises(RelayError) as refused:
            verify(settings, attempt_url, params, signature)
        assert refused.value.code is ErrorCode.INVALID_SIGNATURE
        assert refused.value.status == 400


def test_behind_a_proxy_the_public_url_is_the_one_verified(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        public_base_url="https://relay.example.com/", twilio_auth_token="a-real-token"
    )
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    public = "https://relay.example.com/webhooks/twilio/status?notificationId=n1"
    signed = RequestValidator("a-real-token").compute_signature(public, params)

    url = public_request_url(settings, STATUS_PATH, "notificationId=n1")
    assert url == public
    verify(settings, url, params, signed)
    # What the app itself sees behind the proxy was not what Twilio signed.
    with pytest.raises(RelayError):
        verify(
            settings,
            "http://10.0.0.5:8000/webhooks/twilio/status?notificationId=n1",
            params,
            signed,
        )
    assert public_request_url(settings, "webhooks/twilio/status", "") == public.split("?")[0]


def test_without_an_auth_token_nothing_verifies(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(RelayError) as refused:
        verify(make_settings(), "https://relay.example.com/webhooks/twilio/status", {}, "x")

    assert refused.value.code is ErrorCode.PROVIDER_NOT_CONFIGURED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", NotificationStatus.SENT),
        ("accepted", NotificationStatus.SENT),
        ("scheduled", NotificationStatus.SENT),
        ("sending", NotificationStatus.SENT),
        ("sent", NotificationStatus.SENT),
        ("delivered", NotificationStatus.DELIVERED),
        ("read", NotificationStatus.DELIVERED),
        ("undelivered", NotificationStatus.UNDELIVERED),
        ("failed", NotificationStatus.FAILED),
        ("canceled", NotificationStatus.FAILED),
        ("partially_delivered", None),
    ],
)
def test_every_twilio_status_maps(status: str, expected: NotificationStatus | None) -> None:
    event = parse_status({"MessageSid": "SM1", "MessageStatus": status}, None)

    assert (event.event, event.status, event.event_id) == (status, expected, f"SM1:{status}")
    assert event.notification_id is None and event.error_code is None


def test_a_callback_without_its_sid_or_status_is_refused() -> None:
    for params in ({"MessageStatus": "sent"}, {"MessageSid": "SM1"}):
        with pytest.raises(RelayError) as refused:
            parse_status(params, "n1")
        assert (refused.value.code, refused.value.status) == (ErrorCode.VALIDATION_ERROR, 400)


# --- incoming replies ----------------------------------------------------------------------


async def test_stop_and_start_replies_from_the_sandbox_verify_and_parse(
    settings: Settings, server: TwilioServer, receiver: Receiver
) -> None:
    inbound = f"{server.api_base}/_sandbox/inbound"
    httpx.post(inbound, json={"from": "+14155550123", "body": "stop"}).raise_for_status()
    httpx.post(inbound, json={"from": "whatsapp:+14155550124", "body": "Start"}).raise_for_status()
    httpx.post(inbound, json={"from": "+14155550125", "body": "stop it please"}).raise_for_status()

    # The sandbox posts them from a pool, so they may come in any order.
    replies = {got.params["From"]: got for got in receiver.wait_for(3)}
    for got in replies.values():
        assert got.path == INCOMING_PATH
        verify(settings, _url(settings, got), got.params, got.header("X-Twilio-Signature"))
    stop = parse_incoming(replies["+14155550123"].params)
    start = parse_incoming(replies["whatsapp:+14155550124"].params)
    chatter = parse_incoming(replies["+14155550125"].params)

    assert stop is not None and start is not None and chatter is None
    assert (stop.number, stop.opt_out, stop.channel) == ("+14155550123", True, Channel.SMS)
    assert stop.event_id == replies["+14155550123"].params["MessageSid"]
    assert (start.number, start.opt_out, start.channel) == (
        "+14155550124",
        False,
        Channel.WHATSAPP,
    )


@pytest.mark.parametrize(
    ("body", "opt_out"),
    [
        *[(word, True) for word in ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")],
        (" quit \n", True),
        *[(word, False) for word in ("START", "YES", "UNSTOP", "unstop")],
        ("HELP", None),
        ("Thanks!", None),
        ("", None),
    ],
)
def test_twilios_default_opt_out_keywords(body: str, opt_out: bool | None) -> None:
    reply = parse_incoming({"MessageSid": "SM1", "From": "+14155550123", "Body": body})

    assert (reply.opt_out if reply else None) is opt_out


def test_twilios_opt_out_type_decides_for_custom_keywords() -> None:
    params = {"MessageSid": "SM1", "From": "+14155550123"}

    custom_stop = parse_incoming(params | {"Body": "ARRETE", "OptOutType": "STOP"})
    custom_start = parse_incoming(params | {"Body": "REPRENDRE", "OptOutType": "START"})
    help_reply = parse_incoming(params | {"Body": "HELP", "OptOutType": "HELP"})

    assert custom_stop is not None and custom_stop.opt_out
    assert custom_start is not None and not custom_start.opt_out
    assert help_reply is None
