"""SendGrid's Event Webhook as the sandbox really sends it: mail sent with SendGridSender to
the magic recipients, the signed POSTs captured by a loopback receiver, then verified and
parsed by relay.notifications.sendgrid_events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from relay.errors import ErrorCode, RelayError
from relay.notifications import sendgrid_events
from relay.notifications.contracts import (
    Channel,
    NotificationStatus,
    Provider,
    ProviderEvent,
    SuppressionReason,
)
from relay.notifications.senders import Outgoing, Sent
from relay.notifications.sendgrid import SendGridSender
from relay.sandbox.sendgrid import EventSigner, SendGridSandbox, SendGridServer
from relay.settings import Settings
from tests.support.receiver import Post
from tests.support.receiver import Receiver as SharedReceiver

SIGNATURE = sendgrid_events.SIGNATURE_HEADER
TIMESTAMP = sendgrid_events.TIMESTAMP_HEADER


EVENTS_PATH = "/webhooks/sendgrid/events"


class Receiver(SharedReceiver):
    """Relay's /webhooks/sendgrid/events stands here: it records every POST."""

    def wait_for_events(self, count: int) -> list[Post]:
        return self.wait_until(lambda posts: sum(len(p.json()) for p in posts) >= count)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as receiver:
        yield receiver  # type: ignore[misc]


@pytest.fixture
def server(receiver: Receiver) -> Iterator[SendGridServer]:
    with SendGridSandbox(
        port=0, webhook_url=receiver.base + EVENTS_PATH, event_delay=0
    ).run_in_thread() as s:
        yield s


@pytest.fixture
def settings(server: SendGridServer, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**{k.lower(): v for k, v in server.sandbox.environment().items()})


@pytest_asyncio.fixture
async def sender(settings: Settings) -> AsyncIterator[SendGridSender]:
    sender = SendGridSender.from_settings(settings)
    yield sender
    await sender.close()


@dataclass
class Sends:
    messages: dict[str, Outgoing]  # by local part
    results: dict[str, Sent]
    posts: list[Post]


# processed+delivered, processed+bounce, dropped, processed+delivered+spamreport
EXPECTED_EVENTS = 2 + 2 + 1 + 3


@pytest_asyncio.fixture
async def sends(sender: SendGridSender, receiver: Receiver) -> Sends:
    locals_ = ["ada", "bounce", "drop", "spam"]
    messages = {
        local: Outgoing(
            id=uuid.uuid4().hex,
            channel=Channel.EMAIL,
            to=f"{local}@example.com",
            content={"templateId": "d-events", "templateData": {"who": local}},
        )
        for local in locals_
    }
    sent = await sender.send_bulk(list(messages.values()))
    assert {s.status for s in sent} == {NotificationStatus.SENT}
    posts = receiver.wait_for_events(EXPECTED_EVENTS)
    return Sends(messages, dict(zip(locals_, sent, strict=True)), posts)


def _parsed(posts: list[Post]) -> list[ProviderEvent]:
    return [event for post in posts for event in sendgrid_events.parse(post.body)]


# --- verification ----------------------------------------------------------------------------


async def test_the_sandboxs_signed_posts_verify(sends: Sends, settings: Settings) -> None:
    assert sends.posts
    for post in sends.posts:
        sendgrid_events.verify(settings, post.body, post.headers)
        # Header names are case-insensitive on the wire.
        lowered = {k.lower(): v for k, v in post.headers.items()}
        sendgrid_events.verify(settings, post.body, lowered)


async def test_a_modified_or_forged_body_is_refused(sends: Sends, settings: Settings) -> None:
    post = sends.posts[0]
    events = json.loads(post.body)
    events[0]["event"] = "delivered" if events[0]["event"] != "delivered" else "processed"
    modified = json.dumps(events, separators=(",", ":")).encode()
    forger = EventSigner()  # a key pair that is not the configured one
    forged_headers = post.headers | {SIGNATURE: forger.sign(post.headers[TIMESTAMP], modified)}

    for body, headers in [
        (modified, post.headers),
        (post.body + b" ", post.headers),
        (modified, forged_headers),
        (post.body, post.headers | {SIGNATURE: "not base64!"}),
        (post.body, {TIMESTAMP: post.headers[TIMESTAMP]}),
        (post.body, {SIGNATURE: post.headers[SIGNATURE]}),
        (post.body, post.headers | {TIMESTAMP: "yesterday"}),
    ]:
        with pytest.raises(RelayError) as raised:
            sendgrid_events.verify(settings, body, headers)
        assert raised.value.code is ErrorCode.INVALID_SIGNATURE
        assert raised.value.status == 400


def test_timestamps_outside_five_minutes_are_refused(
    server: SendGridServer, settings: Settings
) -> None:
    body = b'[{"event":"delivered","sg_event_id":"e1"}]'
    signer = server.sandbox.signer
    now = time.time()
    for offset, accepted in [(-290, True), (290, True), (-310, False), (310, False)]:
        stamp = str(int(now + offset))
        headers = {SIGNATURE: signer.sign(stamp, body), TIMESTAMP: stamp}
        if accepted:
            sendgrid_events.verify(settings, body, headers, now=now)
        else:
            with pytest.raises(RelayError) as raised:
                sendgrid_events.verify(settings, body, headers, now=now)
            assert raised.value.code is ErrorCode.INVALID_SIGNATURE
    # The same signed request, replayed ten minutes later.
    stamp = str(int(now))
    headers = {SIGNATURE: signer.sign(stamp, body), TIMESTAMP: stamp}
    with pytest.raises(RelayError):
        sendgrid_events.verify(settings, body, headers, now=now + 600)


def test_without_a_public_key_nothing_verifies(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(RelayError) as raised:
        sendgrid_events.verify(make_settings(), b"[]", {SIGNATURE: "x", TIMESTAMP: "1"})
    assert raised.value.code is ErrorCode.PROVIDER_NOT_CONFIGURED


# --- parsing ---------------------------------------------------------------------------------


async def test_parse_maps_the_sandboxs_events(sends: Sends) -> None:
    events = _parsed(sends.posts)
    assert len(events) == EXPECTED_EVENTS
    assert len({e.event_id for e in events}) == EXPECTED_EVENTS
    by_local: dict[str, list[ProviderEvent]] = {}
    for event in events:
        assert event.address is not None
        by_local.setdefault(event.address.partition("@")[0], []).append(event)

    def kinds(local: str) -> dict[str, ProviderEvent]:
        found = {e.event: e for e in by_local[local]}
        for e in found.values():
            assert e.provider is Provider.SENDGRID
            assert e.notification_id == sends.messages[local].id
            assert e.provider_message_id == sends.results[local].provider_message_id
            assert e.address == f"{local}@example.com"
            assert e.occurred_at is not None
            assert abs(e.occurred_at - datetime.now(UTC)) < timedelta(minutes=1)
        return found

    ada = kinds("ada")
    assert set(ada) == {"processed", "delivered"}
    assert ada["processed"].status is NotificationStatus.SENT
    assert ada["delivered"].status is NotificationStatus.DELIVERED
    assert all(e.suppress is None for e in ada.values())

    bounce = kinds("bounce")["bounce"]
    assert (bounce.status, bounce.suppress) == (
        NotificationStatus.BOUNCED,
        SuppressionReason.BOUNCE,
    )
    assert bounce.error_message == "550 5.1.1 Unknown user" and bounce.error_code == "5.1.1"

    drop = kinds("drop")
    assert set(drop) == {"dropped"}
    assert drop["dropped"].status is NotificationStatus.FAILED
    assert drop["dropped"].suppress is SuppressionReason.DROPPED
    assert drop["dropped"].error_message == "Bounced Address"

    spam = kinds("spam")
    assert set(spam) == {"processed", "delivered", "spamreport"}
    assert spam["spamreport"].status is None
    assert spam["spamreport"].suppress is SuppressionReason.SPAM_REPORT


def test_parse_records_engagement_and_maps_unsubscribes() -> None:
    body = json.dumps(
        [
            {
                "email": "Ada@Example.COM",
                "timestamp": 1700000000,
                "event": kind,
                "sg_event_id": f"id-{kind}",
                "sg_message_id": "abc123.filter0001.7.0",
                "relayNotificationId": "n-1",
                "reason": "mailbox ada@example.com full" if kind == "deferred" else None,
            }
            for kind in ("deferred", "open", "click", "unsubscribe", "group_unsubscribe")
        ]
    ).encode()

    events = {e.event: e for e in sendgrid_events.parse(body)}

    assert all(e.status is None for e in events.values())
    assert events["unsubscribe"].suppress is SuppressionReason.UNSUBSCRIBE
    assert events["group_unsubscribe"].suppress is SuppressionReason.UNSUBSCRIBE
    assert {events[k].suppress for k in ("deferred", "open", "click")} == {None}
    deferred = events["deferred"]
    assert deferred.address == "ada@example.com"
    assert deferred.provider_message_id == "abc123"
    assert deferred.notification_id == "n-1"
    assert deferred.occurred_at == datetime.fromtimestamp(1700000000, UTC)
    assert deferred.error_message == "mailbox <address> full"


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe", b'{"event":"delivered"}', b"[1, 2]", b'[{"event":"x"}]']
)
def test_malformed_bodies_are_validation_errors(body: bytes) -> None:
    with pytest.raises(RelayError) as raised:
        sendgrid_events.parse(body)
    assert raised.value.code is ErrorCode.VALIDATION_ERROR
