"""FcmSender against the FCM sandbox (relay/sandbox/fcm.py), through firebase-admin as the
worker runs it: per-token results, dead-token removal, 500-token chunks, and outages
classified the way the provider-call ledger reads them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import httpx
import pytest
import pytest_asyncio
from firebase_admin import credentials, exceptions
from temporalio.exceptions import ApplicationError

from relay.errors import ConfigError
from relay.notifications import fcm
from relay.notifications.contracts import Channel, NotificationStatus, Provider
from relay.notifications.fcm import FcmSender
from relay.notifications.senders import Outgoing, Sent
from relay.sandbox.fcm import SANDBOX_PROJECT, FcmSandbox, FcmServer
from relay.settings import Settings
from tests.conftest import free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FcmServer]:
    with FcmSandbox(port=0, credentials_file=tmp_path / "sa.json").run_in_thread() as running:
        yield running


def _settings(make_settings: Callable[..., Settings], server: FcmServer) -> Settings:
    env = server.sandbox.environment()
    return make_settings(**{name.lower(): value for name, value in env.items()})


@pytest_asyncio.fixture
async def sender(
    server: FcmServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[FcmSender]:
    sender = FcmSender.from_settings(_settings(make_settings, server))
    try:
        yield sender
    finally:
        await sender.close()


def _push(tokens: list[str], **content: Any) -> Outgoing:
    content = {"title": "Hi", "body": "You have mail", **content}
    return Outgoing(
        id=uuid.uuid4().hex, channel=Channel.PUSH, to=None, content=content, tokens=tokens
    )


def _captured(server: FcmServer) -> dict[str, dict[str, Any]]:
    return {m["token"]: m for m in server.state.messages()}


def _by_token(sent: Sent) -> dict[str, Any]:
    return {t.token: t for t in sent.tokens}


async def test_a_push_reaches_every_token_with_its_content(
    sender: FcmSender, server: FcmServer
) -> None:
    tokens = ["device-a", "device-b", "device-c"]
    sent = await sender.send(
        _push(
            tokens,
            data={"kind": "mail", "id": "42"},
            android={"priority": "high", "ttl": 60, "channelId": "inbox"},
            apns={"badge": 3, "headers": {"apns-priority": "10"}},
        )
    )

    assert sent.provider is Provider.FCM and sent.status is NotificationStatus.SENT
    assert [t.token for t in sent.tokens] == tokens
    assert all(t.ok and not t.remove and t.error_code is None for t in sent.tokens)
    ids = {t.message_id for t in sent.tokens}
    assert len(ids) == 3
    assert all(i and i.startswith(f"projects/{SANDBOX_PROJECT}/messages/") for i in ids)
    assert sent.provider_message_id in ids and sent.error_code is None
    captured = _captured(server)
    assert set(captured) == set(tokens)
    for token in tokens:
        message = captured[token]
        assert message["name"] == _by_token(sent)[token].message_id
        assert (message["title"], message["body"]) == ("Hi", "You have mail")
        assert message["data"] == {"kind": "mail", "id": "42"}
        assert message["android"]["priority"] == "high"
        assert message["android"]["ttl"] == "60s"
        assert message["android"]["notification"]["channel_id"] == "inbox"
        assert message["apns"]["headers"] == {"apns-priority": "10"}
        assert message["apns"]["payload"]["aps"]["badge"] == 3


async def test_a_duplicate_token_gets_one_message(sender: FcmSender, server: FcmServer) -> None:
    sent = await sender.send(_push(["device-a", "device-a"]))

    assert [t.token for t in sent.tokens] == ["device-a"]
    assert len(server.state.messages()) == 1


async def test_1201_tokens_go_out_as_500_500_and_201(sender: FcmSender, server: FcmServer) -> None:
    tokens = [f"device-{i:04d}" for i in range(1201)]

    sent = await sender.send(_push(tokens, data={"n": "1"}))

    assert sent.status is NotificationStatus.SENT
    assert len(sent.tokens) == 1201 and all(t.ok for t in sent.tokens)
    # Each message is one HTTP request; the sandbox records them in the order it handled
    # them. A chunk starts only once the previous one has been answered in full, so the
    # first 500 handled are exactly the first chunk's tokens, and so on.
    handled = [m["token"] for m in reversed(server.state.messages())]
    assert len(handled) == 1201
    assert set(handled[:500]) == set(tokens[:500])
    assert set(handled[500:1000]) == set(tokens[500:1000])
    assert set(handled[1000:]) == set(tokens[1000:])


async def test_dead_tokens_are_reported_for_removal(sender: FcmSender, server: FcmServer) -> None:
    tokens = ["device-ok", "bad-gone", "mismatch-other-sender", "invalid-###"]

    sent = await sender.send(_push(tokens))

    assert sent.status is NotificationStatus.SENT  # one device got it
    results = _by_token(sent)
    assert results["device-ok"].ok and not results["device-ok"].remove
    assert (results["bad-gone"].error_code, results["bad-gone"].remove) == ("UNREGISTERED", True)
    mismatch = results["mismatch-other-sender"]
    assert (mismatch.error_code, mismatch.remove) == ("SENDER_ID_MISMATCH", True)
    invalid = results["invalid-###"]
    assert (invalid.error_code, invalid.remove) == ("INVALID_ARGUMENT", True)
    assert not any(results[t].ok for t in tokens[1:])
    assert {m["token"]: m["status"] for m in server.state.messages()}["device-ok"] == "sent"


async def test_no_token_reached_is_failed_with_the_first_code(sender: FcmSender) -> None:
    sent = await sender.send(_push(["bad-one", "mismatch-two"]))

    assert sent.status is NotificationStatus.FAILED
    assert sent.error_code == "FCM_UNREGISTERED"
    assert sent.provider_message_id is None
    assert [t.remove for t in sent.tokens] == [True, True]


async def test_no_tokens_at_all(sender: FcmSender, server: FcmServer) -> None:
    sent = await sender.send(_push([]))

    assert sent.status is NotificationStatus.FAILED
    assert sent.error_code == "FCM_NO_VALID_TOKENS" and sent.tokens == []
    assert server.state.messages() == []


@pytest.mark.parametrize(
    "content",
    [
        {"data": {"count": 3}},  # FCM takes only strings
        {"android": {"priority": "high", "vibrate": True}},  # not a field Relay maps
        {"android": {"color": "red"}},  # the SDK wants #rrggbb
        {"apns": {"headers": {"apns-priority": 10}}},
    ],
)
async def test_content_fcm_would_refuse_is_failed_before_sending(
    sender: FcmSender, server: FcmServer, content: dict[str, Any]
) -> None:
    sent = await sender.send(_push(["device-a", "device-b"], **content))

    assert sent.status is NotificationStatus.FAILED
    assert sent.error_code == "FCM_INVALID_ARGUMENT"
    assert [(t.ok, t.error_code, t.remove) for t in sent.tokens] == [
        (False, "INVALID_ARGUMENT", False),
        (False, "INVALID_ARGUMENT", False),
    ]
    assert server.state.messages() == []


def test_invalid_argument_removes_only_when_fcm_names_the_token(server: FcmServer) -> None:
    # firebase-admin refuses a non-string data value itself, so FCM's own INVALID_ARGUMENT
    # about the data is fetched here with a plain request and classified as the SDK hands
    # it over (an InvalidArgumentError carrying FCM's response).
    access = credentials.Certificate(str(server.sandbox.credentials_path)).get_access_token()
    url = f"{server.api_base}/v1/projects/{SANDBOX_PROJECT}/messages:send"
    headers = {"Authorization": f"Bearer {access.access_token}"}

    about_data = httpx.post(
        url, headers=headers, json={"message": {"token": "device-a", "data": {"n": 1}}}
    )
    about_token = httpx.post(url, headers=headers, json={"message": {"token": "invalid-x"}})

    assert about_data.status_code == about_token.status_code == 400
    data_failure = fcm.classify(exceptions.InvalidArgumentError("x", http_response=about_data))
    token_failure = fcm.classify(exceptions.InvalidArgumentError("x", http_response=about_token))
    assert (data_failure.code, data_failure.remove, data_failure.transient) == (
        "INVALID_ARGUMENT",
        False,
        False,
    )
    assert (token_failure.code, token_failure.remove) == ("INVALID_ARGUMENT", True)


async def test_fcm_unavailable_is_retryable_and_fcm_did_not_act(
    sender: FcmSender, server: FcmServer
) -> None:
    server.state.fail_next(2)

    with pytest.raises(ApplicationError) as raised:
        await sender.send(_push(["device-a", "device-b"]))

    # Two faults, two messages: had firebase-admin retried on its own, both would be sent.
    failure = raised.value
    assert not failure.non_retryable and failure.type == "PROVIDER_ERROR"
    assert failure.details[0] == {"provider": "fcm", "status": 503}
    assert server.state.messages() == []
    assert (await sender.send(_push(["device-a"]))).status is NotificationStatus.SENT


async def test_a_transient_failure_after_some_tokens_got_it_is_not_retried(
    sender: FcmSender, server: FcmServer
) -> None:
    server.state.fail_next(1)

    sent = await sender.send(_push(["device-a", "device-b", "device-c"]))

    assert sent.status is NotificationStatus.SENT
    failed = [t for t in sent.tokens if not t.ok]
    assert [(t.error_code, t.remove) for t in failed] == [("UNAVAILABLE", False)]
    assert len(server.state.messages()) == 2


async def test_fcm_refusing_connections_is_retryable_and_nothing_was_sent(
    server: FcmServer,
) -> None:
    # The token endpoint is the sandbox's; FCM itself is a port nothing listens on.
    closed = f"http://127.0.0.1:{free_port()}"
    sender = FcmSender(str(server.sandbox.credentials_path), closed)
    try:
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_push(["device-a", "device-b"]))
    finally:
        await sender.close()

    assert not raised.value.non_retryable
    assert raised.value.details[0] == {"provider": "fcm", "connected": False}


async def test_an_unreachable_token_endpoint_sends_nothing(tmp_path: Path) -> None:
    with FcmSandbox(port=0, credentials_file=tmp_path / "sa.json").run_in_thread() as running:
        api_base = running.api_base
    sender = FcmSender(str(tmp_path / "sa.json"), api_base)  # the sandbox has stopped
    try:
        with pytest.raises(ApplicationError) as raised:
            await sender.send(_push(["device-a"]))
    finally:
        await sender.close()

    assert not raised.value.non_retryable
    assert raised.value.details[0] == {"provider": "fcm", "connected": False}


async def test_settings_and_close(
    server: FcmServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    assert fcm.configured(_settings(make_settings, server))
    assert FcmSender.configured(_settings(make_settings, server))
    assert not fcm.configured(make_settings())
    with pytest.raises(ConfigError):
        FcmSender.from_settings(make_settings())
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(ConfigError) as raised:
        FcmSender(str(broken))
    assert "FIREBASE_CREDENTIALS" in str(raised.value)

    first = FcmSender.from_settings(_settings(make_settings, server))
    second = FcmSender.from_settings(_settings(make_settings, server))
    names = {first._app.name, second._app.name}
    assert len(names) == 2 and all(firebase_admin.get_app(n) for n in names)
    await first.close()
    await first.close()  # twice is harmless
    with pytest.raises(ValueError):
        firebase_admin.get_app(first._app.name)
    assert (await second.send(_push(["device-a"]))).status is NotificationStatus.SENT
    await second.close()
