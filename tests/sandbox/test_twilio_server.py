"""The Twilio sandbox driven by the `twilio` package as Relay drives Twilio, its status
callbacks and incoming messages received on loopback and verified with the package's own
`RequestValidator`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from relay.sandbox import twilio as twilio_sandbox
from relay.sandbox.twilio import TwilioSandbox, TwilioServer, point_client, twilio_client
from relay.settings import Settings
from tests.support.receiver import Post
from tests.support.receiver import Receiver as SharedReceiver


class Receiver(SharedReceiver):
    def statuses(self, sid: str) -> list[str]:
        return [p.params["MessageStatus"] for p in self.posts if p.params["MessageSid"] == sid]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver  # type: ignore[misc]


@pytest.fixture
def server(receiver: Receiver) -> Iterator[TwilioServer]:
    sandbox = TwilioSandbox(
        port=0, callback_delay=0, incoming_url=f"{receiver.base}/webhooks/twilio/incoming"
    )
    with sandbox.run_in_thread() as s:
        yield s


@pytest.fixture
def client(server: TwilioServer) -> Client:
    return twilio_client(server.sandbox)


def _status_url(receiver: Receiver) -> str:
    return f"{receiver.base}/webhooks/twilio/status?notification=n1"


def _valid(server: TwilioServer, callback: Post) -> bool:
    validator = RequestValidator(server.sandbox.auth_token)
    return bool(
        validator.validate(callback.url, callback.params, callback.headers["X-Twilio-Signature"])
    )


def _messages(server: TwilioServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{server.api_base}/_sandbox/messages").json()["data"]
    return data


# --- the Messages API ----------------------------------------------------------------------


def test_the_twilio_package_sends_an_sms_and_fetches_it(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    env = server.sandbox.environment()
    message = client.messages.create(
        to="+14155550100",
        from_=env["TWILIO_FROM_NUMBER"],
        body="Your code is 123456",
        status_callback=_status_url(receiver),
    )

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.to == "+14155550100" and message.from_ == env["TWILIO_FROM_NUMBER"]
    assert message.account_sid == env["TWILIO_ACCOUNT_SID"]
    assert message.direction == "outbound-api"
    receiver.wait_until(lambda got: len(got) == 2)
    fetched = client.messages(message.sid).fetch()
    assert fetched.sid == message.sid and fetched.status == "delivered"
    assert fetched.body == "Your code is 123456"
    [captured] = _messages(server)
    assert captured["sid"] == message.sid and captured["channel"] == "sms"
    assert captured["status"] == "delivered"


def test_whatsapp_media_and_content_templates(client: Client, server: TwilioServer) -> None:
    whatsapp = server.sandbox.environment()["TWILIO_WHATSAPP_NUMBER"]
    media = client.messages.create(
        to="whatsapp:+14155550100",
        from_=f"whatsapp:{whatsapp}",
        media_url=["https://example.com/a.png", "https://example.com/b.png"],
    )
    template = client.messages.create(
        to="whatsapp:+14155550101",
        from_=f"whatsapp:{whatsapp}",
        content_sid="HX" + "a" * 32,
        content_variables='{"1": "Ada"}',
    )

    assert media.to == "whatsapp:+14155550100" and media.num_media == "2"
    messages = {m["sid"]: m for m in _messages(server)}
    assert messages[media.sid]["mediaUrls"] == [
        "https://example.com/a.png",
        "https://example.com/b.png",
    ]
    assert messages[template.sid]["channel"] == "whatsapp"
    assert messages[template.sid]["contentVariables"] == {"1": "Ada"}


def test_a_messaging_service_send_is_accepted(client: Client) -> None:
    message = client.messages.create(
        to="+14155550100", messaging_service_sid="MG" + "b" * 32, body="hi"
    )

    assert message.status == "accepted"
    assert message.messaging_service_sid == "MG" + "b" * 32


def _refusal(client: Client, **kwargs: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(**kwargs)
    assert raised.value.status == 400
    return raised.value


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        ("+15005550001", "+15005550006", 21211),
        ("+15005550002", "+15005550006", 21612),
        ("+15005550003", "+15005550006", 21408),
        ("+15005550004", "+15005550006", 21610),
        ("+15005550009", "+15005550006", 21614),
        ("+14155550100", "+15005550001", 21212),
        ("+14155550100", "+15005550007", 21606),
        ("+14155550100", "+15005550008", 21611),
        ("0800 not a number", "+15005550006", 21211),
        ("whatsapp:+14155550100", "+15005550006", 63007),
    ],
)
def test_twilios_magic_numbers_are_refused_with_their_codes(
    client: Client, server: TwilioServer, to: str, from_: str, code: int
) -> None:
    error = _refusal(client, to=to, from_=from_, body="hi")

    assert error.code == code
    assert error.uri.endswith("/Messages.json")
    assert _messages(server) == []


def test_refusals_have_twilios_error_shape(server: TwilioServer) -> None:
    sandbox = server.sandbox
    url = f"{server.api_base}/2010-04-01/Accounts/{sandbox.account_sid}/Messages.json"
    auth = (sandbox.account_sid, sandbox.auth_token)

    response = httpx.post(
        url, auth=auth, data={"To": "+15005550001", "From": "+15005550006", "Body": "x"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21211,
        "message": "The 'To' number +15005550001 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    missing = {
        (): 21604,
        (("To", "+14155550100"),): 21603,
        (("To", "+14155550100"), ("From", "+15005550006")): 21602,
        (("To", "+14155550100"), ("From", "+15005550006"), ("Body", "x" * 1601)): 21617,
        (
            ("To", "+14155550100"),
            ("From", "+15005550006"),
            ("Body", "x"),
            ("StatusCallback", "ftp://x"),
        ): 21609,
    }
    for form, code in missing.items():
        answer = httpx.post(url, auth=auth, data=dict(form))
        assert (answer.status_code, answer.json()["code"]) == (400, code), form


def test_wrong_credentials_and_unknown_messages(server: TwilioServer) -> None:
    sandbox = server.sandbox
    wrong = point_client(Client(sandbox.account_sid, "not-the-token"), server.api_base)
    with pytest.raises(TwilioRestException) as raised:
        wrong.messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert (raised.value.status, raised.value.code) == (401, 20003)

    client = twilio_client(sandbox)
    with pytest.raises(TwilioRestException) as missing:
        client.messages("SM" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)


def test_listing_filters_by_number(client: Client) -> None:
    client.messages.create(to="+14155550100", from_="+15005550006", body="a")
    client.messages.create(to="+14155550101", from_="+15005550006", body="b")

    listed = client.messages.list(to="+14155550101")
    assert [m.body for m in listed] == ["b"]
    assert len(client.messages.list()) == 2


def test_faults_answer_503(client: Client, server: TwilioServer) -> None:
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1}).raise_for_status()

    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to="+14155550100", from_="+15005550006", body="x")
    assert raised.value.status == 503
    assert client.messages.create(to="+14155550100", from_="+15005550006", body="x").sid


# --- status callbacks ----------------------------------------------------------------------


def test_status_callbacks_are_signed_as_twilio_signs_them(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    message = client.messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback=_status_url(receiver)
    )

    callbacks = receiver.wait_until(lambda got: len(got) == 2)
    assert receiver.statuses(message.sid) == ["sent", "delivered"]
    for callback in callbacks:
        assert callback.url == _status_url(receiver)
        assert callback.params["To"] == "+14155550100"
        assert callback.params["From"] == "+15005550006"
        assert callback.params["AccountSid"] == server.sandbox.account_sid
        assert callback.params["SmsSid"] == message.sid
        assert "ErrorCode" not in callback.params
        assert _valid(server, callback)
    assert [c["delivery"] for c in _messages(server)[0]["callbacks"]] == ["delivered"] * 2


def _form(url: str, headers: dict[str, str], params: dict[str, str]) -> Post:
    """A callback with these form fields (the signature left as it was)."""
    return Post(url, headers, urlencode(params).encode())


def test_forged_or_tampered_callbacks_fail_the_twilio_validator(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    client.messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback=_status_url(receiver)
    )
    callback = receiver.wait_until(lambda got: len(got) == 2)[1]

    tampered = _form(callback.url, callback.headers, callback.params | {"MessageStatus": "failed"})
    assert not _valid(server, tampered)
    elsewhere = Post(callback.url.replace("n1", "n2"), callback.headers, callback.body)
    assert not _valid(server, elsewhere)
    forged = RequestValidator("another-token").compute_signature(callback.url, callback.params)
    assert not _valid(server, Post(callback.url, {"X-Twilio-Signature": forged}, callback.body))
    assert _valid(server, callback)


@pytest.mark.parametrize(
    ("to", "statuses", "error"),
    [
        (twilio_sandbox.UNDELIVERED_NUMBER, ["sent", "undelivered"], "30003"),
        (twilio_sandbox.FAILED_NUMBER, ["failed"], "30008"),
    ],
)
def test_magic_outcomes_after_acceptance(
    client: Client,
    server: TwilioServer,
    receiver: Receiver,
    to: str,
    statuses: list[str],
    error: str,
) -> None:
    message = client.messages.create(
        to=to, from_="+15005550006", body="hi", status_callback=_status_url(receiver)
    )

    assert message.status == "queued"
    callbacks = receiver.wait_until(lambda got: len(got) == len(statuses))
    assert receiver.statuses(message.sid) == statuses
    assert callbacks[-1].params["ErrorCode"] == error
    assert all(_valid(server, c) for c in callbacks)
    assert client.messages(message.sid).fetch().error_code == int(error)


def test_a_default_status_callback_serves_messages_naming_none(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    server.sandbox.register_webhook(f"{receiver.base}/webhooks/twilio/status", "status")
    message = client.messages.create(to="+14155550100", from_="+15005550006", body="hi")

    receiver.wait_until(lambda got: len(got) == 2)
    assert receiver.statuses(message.sid) == ["sent", "delivered"]


def test_a_refused_callback_is_retried_and_order_is_kept(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    message = client.messages.create(
        to="+14155550100", from_="+15005550006", body="hi", status_callback=_status_url(receiver)
    )

    receiver.wait_until(lambda got: len(got) == 2)
    assert receiver.statuses(message.sid) == ["sent", "delivered"]
    callbacks = _messages(server)[0]["callbacks"]
    assert [(c["delivery"], c["attempts"]) for c in callbacks] == [
        ("delivered", 2),
        ("delivered", 1),
    ]


def test_many_messages_each_get_their_callbacks(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    server.state.callback_delay = 0.2
    sids = [
        client.messages.create(
            to=f"+1415555{n:04d}",
            from_="+15005550006",
            body="x",
            status_callback=_status_url(receiver),
        ).sid
        for n in range(100)
    ]

    receiver.wait_until(lambda got: len(got) == 200)
    assert all(receiver.statuses(sid) == ["sent", "delivered"] for sid in sids)


# --- an inbound STOP ----------------------------------------------------------------------


def test_a_stop_reply_is_posted_signed_and_opts_the_number_out(
    client: Client, server: TwilioServer, receiver: Receiver
) -> None:
    reply = httpx.post(f"{server.api_base}/_sandbox/inbound", json={"from": "+14155550123"})
    assert reply.status_code == 201

    [callback] = receiver.wait_until(lambda got: len(got) == 1)
    assert callback.url.endswith("/webhooks/twilio/incoming")
    assert callback.params["Body"] == "STOP" and callback.params["OptOutType"] == "STOP"
    assert callback.params["From"] == "+14155550123"
    assert callback.params["To"] == server.sandbox.from_number
    assert _valid(server, callback)
    assert _refusal(client, to="+14155550123", from_="+15005550006", body="x").code == 21610

    httpx.post(
        f"{server.api_base}/_sandbox/inbound", json={"from": "+14155550123", "body": "START"}
    ).raise_for_status()
    receiver.wait_until(lambda got: len(got) == 2)
    assert client.messages.create(to="+14155550123", from_="+15005550006", body="x").sid


# --- what relay dev uses -------------------------------------------------------------------


def test_environment_and_command() -> None:
    sandbox = TwilioSandbox(port=4321)

    assert sandbox.environment() == {
        "TWILIO_ACCOUNT_SID": twilio_sandbox.SANDBOX_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": twilio_sandbox.SANDBOX_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_WHATSAPP_NUMBER": "+14155238886",
        "TWILIO_API_BASE": "http://127.0.0.1:4321",
    }
    assert sandbox.account_sid.startswith("AC") and len(sandbox.account_sid) == 34
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.twilio"]
    assert twilio_sandbox.SANDBOX_AUTH_TOKEN not in command


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings]) -> None:
    development = make_settings(relay_env="development")
    off = make_settings(relay_env="development", sandbox="off")
    real = make_settings(relay_env="development", twilio_account_sid="AC" + "1" * 32)

    assert twilio_sandbox.wanted(development) and not twilio_sandbox.wanted(off)
    assert not twilio_sandbox.wanted(make_settings()) and not twilio_sandbox.wanted(real)
    planned = twilio_sandbox.plan(development)
    assert planned is not None and "local Twilio" in twilio_sandbox.describe(development, planned)
    assert twilio_sandbox.plan(real) is None
    assert twilio_sandbox.describe(real, None) == "real (api.twilio.com)"


def test_runs_as_a_module(tmp_path: Path, receiver: Receiver) -> None:
    sandbox = TwilioSandbox(callback_delay=0)
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb")
    )
    try:
        sandbox.wait_ready()
        client = twilio_client(sandbox)
        message = client.messages.create(
            to="+14155550100",
            from_="+15005550006",
            body="hi",
            status_callback=_status_url(receiver),
        )
        receiver.wait_until(lambda got: len(got) == 2)
        assert receiver.statuses(message.sid) == ["sent", "delivered"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert sandbox.auth_token.encode() not in (tmp_path / "stderr").read_bytes()


# --- the /sandbox page's section -----------------------------------------------------------


async def test_the_page_section_lists_messages_and_replies_stop(
    client: Client,
    server: TwilioServer,
    receiver: Receiver,
    make_settings: Callable[..., Settings],
) -> None:
    from relay.sandbox.sections import SECTIONS, TwilioSection

    message = client.messages.create(
        to="+14155550100",
        from_="+15005550006",
        body="Your code",
        status_callback=_status_url(receiver),
    )
    receiver.wait_until(lambda got: len(got) == 2)
    settings = make_settings(relay_env="development", twilio_api_base=server.api_base)
    assert TwilioSection in SECTIONS and TwilioSection.applies(settings)

    async with httpx.AsyncClient() as http:
        section = TwilioSection(settings, http)
        [row] = (await section.view()).tables[0].rows
        assert row.key == message.sid
        assert row.cells[:6] == (
            "sms",
            "+14155550100",
            "+15005550006",
            "Your code",
            "delivered",
            "delivered",
        )
        said = await section.act("reply-stop", message.sid)
        assert "+14155550100 replied STOP" in said
        rows = (await section.view()).tables[0].rows
    stop = receiver.wait_until(lambda got: len(got) == 3)[2]
    assert stop.params["Body"] == "STOP" and _valid(server, stop)
    assert rows[0].cells[0] == "sms (in)" and rows[0].controls == ()
    assert _refusal(client, to="+14155550100", from_="+15005550006", body="x").code == 21610
