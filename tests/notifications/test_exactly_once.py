"""No retry sends a message twice: the provider-call ledger, counted at the provider; and the
recovery path of a provider callback recorded but not applied."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.notifications import NotificationActivities
from relay.crypto import Keyring
from relay.db import utcnow
from relay.inbound import repository as inbox
from relay.ledger import Ledger
from relay.models.platform import ProviderCall
from relay.notifications import repository
from relay.notifications.contracts import Channel, NotificationStatus
from relay.notifications.repository import NewMessage
from relay.sandbox.sendgrid import SendGridSandbox
from relay.settings import Settings
from tests.conftest import eventually
from tests.notifications.test_sms_push import wait_status

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def sendgrid(tmp_path: Path) -> Iterator[Any]:
    with SendGridSandbox(port=0, event_delay=0, key_file=tmp_path / "k.pem").run_in_thread() as s:
        yield s


@pytest.fixture
def activities(
    engine: Engine, keyring: Keyring, make_settings: Callable[..., Settings], sendgrid: Any
) -> NotificationActivities:
    """The send activities alone (no worker, no pump): the test drives each attempt."""
    environment = {name.lower(): value for name, value in sendgrid.sandbox.environment().items()}
    settings = make_settings(**environment)
    return NotificationActivities(
        settings=settings,
        engine=engine,
        keyring=keyring,
        client=None,  # type: ignore[arg-type]
        ledger=Ledger(engine),
    )


def _queue(engine: Engine, keyring: Keyring) -> str:
    (queued,) = repository.enqueue(
        engine,
        keyring,
        [NewMessage(Channel.EMAIL, {"subject": "s", "text": "t"}, to="ada@example.com")],
    )
    return queued.id


async def test_a_send_retried_after_the_provider_accepted_it_sends_nothing_twice(
    engine: Engine, keyring: Keyring, activities: NotificationActivities, sendgrid: Any
) -> None:
    _queue(engine, keyring)
    now = utcnow()
    (first,) = repository.claim(engine, now=now, lease=timedelta(seconds=30), limit=10)
    (sent,) = await activities.send_claimed([first])
    # The activity died before recording: its lease runs out and the message is claimed again.
    (again,) = repository.claim(
        engine, now=now + timedelta(minutes=1), lease=timedelta(seconds=30), limit=10
    )
    assert again.id == first.id and again.attempts == 2
    (resent,) = await activities.send_claimed([again])
    assert resent.status is sent.status is NotificationStatus.SENT
    assert resent.provider_message_id == sent.provider_message_id
    assert len(sendgrid.state.messages()) == 1


async def test_a_send_whose_outcome_is_unknown_is_marked_and_not_sent_again(
    engine: Engine, keyring: Keyring, activities: NotificationActivities, sendgrid: Any
) -> None:
    notification_id = _queue(engine, keyring)
    # An earlier attempt reserved the call and died mid-request: nobody knows if it left.
    with Session(engine) as session:
        session.add(
            ProviderCall(
                idempotency_key=f"notification-{notification_id}:sendgrid",
                provider="sendgrid",
                operation="send",
                reserved_until=utcnow() - timedelta(minutes=1),
            )
        )
        session.commit()
    claimed = repository.claim(engine, now=utcnow(), lease=timedelta(seconds=30), limit=10)
    outcomes = await activities.send_claimed(claimed)
    assert [o.status for o in outcomes] == [NotificationStatus.UNKNOWN]
    repository.record(engine, outcomes, now=utcnow())
    row = repository.load(engine, notification_id)
    assert row.status == "UNKNOWN" and row.error_code == "UNKNOWN_OUTCOME"
    assert sendgrid.state.messages() == []
    # Nothing claims it again.
    assert (
        repository.claim(
            engine, now=utcnow() + timedelta(hours=1), lease=timedelta(seconds=30), limit=10
        )
        == []
    )


async def test_a_callback_recorded_but_not_applied_is_applied_by_the_dispatcher(
    notifications_stack: Any,
) -> None:
    from api.routes.notifications.webhooks import _target

    async with notifications_stack(smtp=False, twilio=False, fcm=False) as stack:
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications/email",
                json={"to": "drop@example.com", "subject": "s", "text": "t"},
            )
            notification_id = response.json()["data"]["id"]
            await wait_status(stack, notification_id, "FAILED")
            # As if the route died between recording a "delivered" and applying it: the
            # inbox row names the dispatcher, and a replay (or the forwarder) hands it over.
            event = {
                "email": "someone@example.com",
                "event": "open",
                "sg_event_id": f"late-{uuid.uuid4().hex}",
                "timestamp": int(utcnow().timestamp()),
                "relayNotificationId": notification_id,
            }
            recorded = inbox.record(
                stack.engine,
                stack.keyring,
                provider="sendgrid",
                event_id=str(event["sg_event_id"]),
                type="open",
                payload=json.dumps(event).encode(),
                target=_target(stack.settings),
            )
            replay = await http.post(f"/v1/inbound-events/{recorded.id}/replay")
            assert replay.status_code in (200, 202), replay.text

            async def applied() -> bool:
                data = await stack.get(notification_id)
                return any(e["event"] == "open" for e in data["events"])

            await eventually(applied)
