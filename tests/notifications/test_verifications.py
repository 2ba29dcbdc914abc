"""Verification codes: expiry, the check and send limits on the time-skipping server, the
code kept out of history, the activity's idempotence against the real database, and one
send and check end to end through the HTTP routes on the dev server.

The code a test checks is the one queued for sending: read from the notifications table
and opened with the keyring, as the send pump would read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.notifications_verification import VerificationActivities
from api.app import create_app
from api.routes.notifications.verifications import router
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.errors import ErrorCode, RelayError
from relay.notifications import repository
from relay.notifications.contracts import (
    CODE_TTL_SECONDS,
    MAX_CHECKS,
    MAX_SENDS,
    Channel,
    SuppressionChannel,
    VerificationStatus,
    verification_workflow_id,
)
from relay.notifications.verification import (
    CheckResult,
    SendCodeInput,
    VerificationKey,
    VerificationView,
    save_destination,
    verifications,
)
from relay.settings import Settings
from tests.conftest import ServerThread, task_queue
from workflows.clients.notifications import check_verification, send_verification
from workflows.notifications_verification import VerificationWorkflow

TTL = timedelta(seconds=CODE_TTL_SECONDS)
_CODE = re.compile(r"\b([0-9]{6})\b")


def new_email() -> str:
    return f"verify-{uuid.uuid4().hex[:12]}@example.com"


def new_number() -> str:
    return f"+1415555{secrets.randbelow(10_000):04d}"


def queued_code(engine: Engine, keyring: Keyring, notification_id: str) -> str:
    """The code in a queued message, read as the send pump reads it."""
    row = repository.load(engine, notification_id)
    assert row is not None
    content = repository.open_content(keyring, notification_id, row.content)
    text = content.get("body") or content["text"]
    found = _CODE.search(text)
    assert found is not None
    return found.group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


@dataclass
class Verifier:
    """Sends and checks through the route's own client functions, on one task queue."""

    env: WorkflowEnvironment
    settings: Settings
    engine: Engine
    keyring: Keyring
    key: VerificationKey
    started: set[str] = dataclasses.field(default_factory=set)

    def id_of(self, to: str) -> str:
        kind = SuppressionChannel.EMAIL if "@" in to else SuppressionChannel.PHONE
        return self.key.verification_id(kind, to)

    async def send(self, to: str, channel: Channel = Channel.EMAIL) -> VerificationView:
        verification_id = self.id_of(to)
        save_destination(self.engine, self.keyring, verification_id, channel, to)
        self.started.add(verification_workflow_id(verification_id))
        return await send_verification(self.env.client, self.settings, verification_id, channel)

    async def check(self, to: str, code: str) -> CheckResult:
        verification_id = self.id_of(to)
        digest = self.key.digest(verification_id, code)
        return await check_verification(self.env.client, verification_id, digest)

    def code(self, view: VerificationView) -> str:
        assert view.notification_id is not None
        return queued_code(self.engine, self.keyring, view.notification_id)


@pytest_asyncio.fixture(loop_scope="session")
async def verifier(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Verifier]:
    settings = make_settings(temporal_task_queue=task_queue())
    key = VerificationKey.from_settings(settings)
    activities = VerificationActivities(engine=engine, keyring=keyring, key=key)
    async with Worker(
        time_skipping_env.client,
        task_queue=settings.temporal_task_queue,
        workflows=[VerificationWorkflow],
        activities=activities.activities(),
    ):
        verifier = Verifier(time_skipping_env, settings, engine, keyring, key)
        yield verifier
        # A run left waiting on its timers would hold up time skipping for later tests
        # once no worker polls its task queue.
        for workflow_id in verifier.started:
            with contextlib.suppress(RPCError):
                await time_skipping_env.client.get_workflow_handle(workflow_id).terminate()


# --- codes and checks -----------------------------------------------------------------------


async def test_a_wrong_code_then_the_right_one(verifier: Verifier) -> None:
    to = new_email()
    view = await verifier.send(to)
    assert view.new_code and view.status == VerificationStatus.PENDING
    assert view.sends_left == MAX_SENDS - 1
    code = verifier.code(view)

    missed = await verifier.check(to, wrong(code))
    assert (missed.valid, missed.status, missed.checks_left) == (False, "PENDING", MAX_CHECKS - 1)
    hit = await verifier.check(to, code)
    assert (hit.valid, hit.status) == (True, VerificationStatus.VERIFIED)
    # The right code is spent by its first success.
    again = await verifier.check(to, code)
    assert again.valid is False


async def test_a_code_checked_after_ten_minutes_is_invalid(verifier: Verifier) -> None:
    to = new_email()
    code = verifier.code(await verifier.send(to))
    await verifier.env.sleep(TTL + timedelta(seconds=1))
    late = await verifier.check(to, code)
    assert (late.valid, late.status) == (False, VerificationStatus.EXPIRED)


async def test_a_code_checked_within_ten_minutes_is_valid(verifier: Verifier) -> None:
    to = new_email()
    code = verifier.code(await verifier.send(to))
    await verifier.env.sleep(TTL - timedelta(seconds=5))
    assert (await verifier.check(to, code)).valid is True


async def test_the_sixth_check_is_refused_even_with_the_right_code(verifier: Verifier) -> None:
    to = new_email()
    code = verifier.code(await verifier.send(to))
    results = [await verifier.check(to, wrong(code)) for _ in range(MAX_CHECKS)]
    assert [result.valid for result in results] == [False] * MAX_CHECKS
    assert [result.checks_left for result in results] == [4, 3, 2, 1, 0]
    assert results[-1].status == VerificationStatus.EXHAUSTED

    with pytest.raises(RelayError) as refused:
        await verifier.check(to, code)
    assert refused.value.code is ErrorCode.TOO_MANY_ATTEMPTS
    assert refused.value.status == 429
    assert code not in refused.value.message

    # A new send makes a new code, which takes checks again.
    fresh = await verifier.send(to)
    assert fresh.new_code
    new_code = verifier.code(fresh)
    assert (await verifier.check(to, new_code)).valid is True


async def test_five_sends_in_ten_minutes_then_too_many_attempts(verifier: Verifier) -> None:
    to = new_email()
    views = [await verifier.send(to) for _ in range(MAX_SENDS)]
    assert [view.new_code for view in views] == [True, False, False, False, False]
    assert [view.sends_left for view in views] == [4, 3, 2, 1, 0]
    # A resend while the code lives sends the same code, each as a message of its own.
    assert len({view.notification_id for view in views}) == MAX_SENDS
    assert {verifier.code(view) for view in views} == {verifier.code(views[0])}

    with pytest.raises(RelayError) as refused:
        await verifier.send(to)
    assert refused.value.code is ErrorCode.TOO_MANY_ATTEMPTS
    assert refused.value.status == 429
    assert 0 < refused.value.details["retryAfterSeconds"] <= 600

    await verifier.env.sleep(timedelta(minutes=10, seconds=1))
    later = await verifier.send(to)
    assert later.new_code and later.sends_left == MAX_SENDS - 1
    assert (await verifier.check(to, verifier.code(later))).valid is True


async def test_a_check_with_no_verification_is_invalid(verifier: Verifier) -> None:
    result = await verifier.check(new_email(), "123456")
    assert (result.valid, result.checks_left) == (False, 0)


# --- nothing personal in history ----------------------------------------------------------


def _payloads(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        if "data" in node and "metadata" in node:
            return [node]
        return [found for value in node.values() for found in _payloads(value)]
    if isinstance(node, list):
        return [found for value in node for found in _payloads(value)]
    return []


async def history_text(client: Client, workflow_id: str) -> str:
    """Every payload of the workflow's history, decoded through the client's codec, and
    the rest of the history as JSON."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    as_dict = history.to_json_dict()
    payloads = [json_format.ParseDict(found, Payload()) for found in _payloads(as_dict)]
    codec = client.data_converter.payload_codec
    assert codec is not None
    decoded = await codec.decode(payloads)
    parts = [history.to_json()]
    for payload in decoded:
        parts.append(payload.data.decode("utf-8", "replace"))
    return "\n".join(parts)


async def test_history_holds_the_digest_and_never_the_code_or_destination(
    verifier: Verifier,
) -> None:
    to = new_email()
    view = await verifier.send(to)
    code = verifier.code(view)
    await verifier.check(to, wrong(code))
    assert (await verifier.check(to, code)).valid is True

    text = await history_text(verifier.env.client, verification_workflow_id(view.verification_id))
    # The decoding works: the digest the workflow keeps is there in the clear.
    assert verifier.key.digest(view.verification_id, code) in text
    assert code not in text
    assert wrong(code) not in text
    assert to not in text
    assert to.split("@")[0] not in text


# --- the activity ---------------------------------------------------------------------------


async def test_a_retried_send_code_queues_one_notification_with_the_same_code(
    engine: Engine, keyring: Keyring, make_settings: Callable[..., Settings]
) -> None:
    key = VerificationKey.from_settings(make_settings())
    activities = VerificationActivities(engine=engine, keyring=keyring, key=key)
    to = new_number()
    verification_id = key.verification_id(SuppressionChannel.PHONE, to)
    save_destination(engine, keyring, verification_id, Channel.SMS, to)
    params = SendCodeInput(
        verification_id=verification_id,
        channel=Channel.SMS.value,
        seed=str(uuid.uuid4()),
        code_number=1,
        send_number=1,
    )

    first = await activities.send_code(params)
    retried = await activities.send_code(params)

    assert retried == first
    notifications = repository.notifications
    with engine.connect() as connection:
        rows = connection.execute(
            select(notifications).where(notifications.c.to_address == to)
        ).all()
    assert [row.id for row in rows] == [first.notification_id]
    row = rows[0]
    assert (row.channel, row.status, row.critical) == ("sms", "PENDING", True)
    code = queued_code(engine, keyring, row.id)
    assert key.digest(verification_id, code) == first.digest
    # The destination is sealed in `verifications`.
    with engine.connect() as connection:
        sealed = connection.execute(
            select(verifications.c.destination).where(verifications.c.id == verification_id)
        ).scalar_one()
    assert to not in sealed


# --- end to end through HTTP ----------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def verification_api(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[str, str]]:
    client = temporal_env.client
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+15005550006",
    )
    _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}", ["admin"])
    app = create_app(settings, engine=engine, keyring=keyring)
    if not any(getattr(route, "path", "") == "/v1/verifications" for route in app.routes):
        app.include_router(router)
    activities = VerificationActivities.from_context(_context(settings, engine, keyring, client))
    async with Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[VerificationWorkflow],
        activities=activities.activities(),
    ):
        with ServerThread(app) as server:
            yield server.url, raw_key


def _context(settings: Settings, engine: Engine, keyring: Keyring, client: Client) -> Any:
    from relay.ledger import Ledger
    from relay.worker_context import WorkerContext

    return WorkerContext(settings, engine, keyring, client, Ledger(engine))


async def test_send_and_check_through_the_api(
    verification_api: tuple[str, str], engine: Engine, keyring: Keyring
) -> None:
    import httpx

    url, api_key = verification_api
    to = new_number()
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as http:
        sent = await http.post("/v1/verifications", json={"channel": "sms", "to": to})
        assert sent.status_code == 201, sent.text
        data = sent.json()["data"]
        assert (data["channel"], data["status"], data["sendsLeft"]) == ("sms", "PENDING", 4)
        assert data["expiresAt"]

        notifications = repository.notifications
        with engine.connect() as connection:
            row = connection.execute(
                select(notifications).where(notifications.c.to_address == to)
            ).one()
        code = queued_code(engine, keyring, row.id)
        assert code not in sent.text

        missed = await http.post("/v1/verifications/check", json={"to": to, "code": wrong(code)})
        assert missed.status_code == 200, missed.text
        assert missed.json()["data"] == {"valid": False, "status": "PENDING", "checksLeft": 4}

        # The same number written another way is the same destination.
        spaced = f"{to[:2]} {to[2:5]} {to[5:8]} {to[8:]}"
        hit = await http.post("/v1/verifications/check", json={"to": spaced, "code": code})
        assert hit.status_code == 200, hit.text
        assert hit.json()["data"] == {"valid": True, "status": "VERIFIED", "checksLeft": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "email", "to": "not-an-address"}, "to"),
        ({"channel": "email", "to": "a@b"}, "to"),
        ({"channel": "sms", "to": "4155550123"}, "to"),
        ({"channel": "whatsapp", "to": "+1 800 FLOWERS"}, "to"),
        ({"channel": "push", "to": "+14155550123"}, "channel"),
    ],
)
async def test_a_bad_destination_is_422_naming_the_field_and_writes_nothing(
    verification_api: tuple[str, str], engine: Engine, body: dict[str, str], field: str
) -> None:
    import httpx

    url, api_key = verification_api
    with engine.connect() as connection:
        before = connection.execute(select(verifications.c.id)).all()
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as http:
        answer = await http.post("/v1/verifications", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [item["field"] for item in error["details"]] == [field]
    assert body["to"] not in answer.text
    with engine.connect() as connection:
        assert connection.execute(select(verifications.c.id)).all() == before
