"""Secret rotation through the running API: expiring the old secrets at once after a leak,
request validation, and concurrent rotations that lose no secret (SQLite and PostgreSQL).

Every delivery is checked with the `standardwebhooks` reference library, unmodified; the
secrets stored for an endpoint are read back from the database and opened with the keyring.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook, WebhookVerificationError

from relay.crypto import Keyring
from relay.webhooks import repository
from relay.webhooks.signing import Rotation, open_secret, rotate
from tests.conftest import Stack, eventually
from tests.webhooks.conftest import Received, Receiver
from tests.webhooks.helpers import create_endpoint, endpoint_row


async def create(http: httpx.AsyncClient, receiver: Receiver, name: str) -> dict[str, Any]:
    response = await http.post(
        "/v1/webhooks", json={"url": receiver.url(name), "events": [f"{name}.test"]}
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def stored(stack: Stack, webhook_id: str) -> tuple[str, list[str], int]:
    """The endpoint's current secret, its old secrets (opened) and its secret version."""
    endpoint_id = uuid.UUID(webhook_id)
    row = endpoint_row(stack.engine, endpoint_id)
    current = open_secret(stack.keyring, endpoint_id, row.secret)
    old = [open_secret(stack.keyring, endpoint_id, entry["secret"]) for entry in row.old_secrets]
    return current, old, row.secret_version


async def deliver(http: httpx.AsyncClient, receiver: Receiver, name: str) -> Received:
    """Publish one event to the endpoint `name` and return the request its receiver got."""
    before = len(receiver.at(name))
    response = await http.post("/v1/events", json={"type": f"{name}.test", "data": {}})
    assert response.status_code == 202 and response.json()["data"]["endpoints"] == 1
    await eventually(lambda: len(receiver.at(name)) > before)
    return receiver.at(name)[before]


def signatures(request: Received) -> list[str]:
    return request.headers["webhook-signature"].split(" ")


def verifies(secret: str, request: Received) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


# --- expirePrevious ----------------------------------------------------------------------


async def test_expire_previous_stops_every_old_secret_at_once(
    stack: Stack, receiver: Receiver
) -> None:
    """Without the flag the old secrets keep signing; with it only the new one signs, from
    the very next delivery on."""
    async with stack.http() as http:
        created = await create(http, receiver, "leak")
        hook, first = created["id"], created["secret"]

        # Unchanged without the flag: an empty object and an explicit false.
        normal = await http.post(f"/v1/webhooks/{hook}/rotate-secret", json={})
        assert normal.status_code == 200, normal.text
        assert normal.json()["data"]["previousSecretsExpired"] is False
        second = normal.json()["data"]["secret"]
        normal = await http.post(
            f"/v1/webhooks/{hook}/rotate-secret", json={"expirePrevious": False}
        )
        assert normal.status_code == 200, normal.text
        data = normal.json()["data"]
        third = data["secret"]
        assert data["previousSecretsExpired"] is False and data["secretVersion"] == 3
        expires = datetime.fromisoformat(data["previousSecretExpiresAt"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
        request = await deliver(http, receiver, "leak")
        assert len(signatures(request)) == 3
        assert all(verifies(secret, request) for secret in (first, second, third))

        # After a leak: expire them all now.
        emergency = await http.post(
            f"/v1/webhooks/{hook}/rotate-secret", json={"expirePrevious": True}
        )
        assert emergency.status_code == 200, emergency.text
        data = emergency.json()["data"]
        fresh = data["secret"]
        assert data["previousSecretsExpired"] is True and data["secretVersion"] == 4
        assert datetime.fromisoformat(data["previousSecretExpiresAt"]) <= datetime.now(UTC)
        assert stored(stack, hook)[:2] == (fresh, [])

        request = await deliver(http, receiver, "leak")
        assert len(signatures(request)) == 1
        assert verifies(fresh, request)
        for leaked in (first, second, third):
            assert not verifies(leaked, request)

        # A later normal rotation keeps the fresh secret for its grace period, and nothing
        # that was expired comes back.
        later = (await http.post(f"/v1/webhooks/{hook}/rotate-secret")).json()["data"]
        assert later["previousSecretsExpired"] is False
        assert stored(stack, hook)[:2] == (later["secret"], [fresh])
        request = await deliver(http, receiver, "leak")
        assert len(signatures(request)) == 2
        assert verifies(later["secret"], request) and verifies(fresh, request)
        assert not any(verifies(leaked, request) for leaked in (first, second, third))


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"expirePrevious": True, "expireOld": True}, "expireOld"),
        ({"grace": "0s"}, "grace"),
        ({"expirePrevious": "yes"}, "expirePrevious"),
        ({"expirePrevious": "true"}, "expirePrevious"),
        ({"expirePrevious": 1}, "expirePrevious"),
        ({"expirePrevious": None}, "expirePrevious"),
        ([True], ""),
        ("expire", ""),
    ],
)
async def test_invalid_rotate_bodies_are_422_and_rotate_nothing(
    stack: Stack, receiver: Receiver, body: Any, field: str
) -> None:
    async with stack.http() as http:
        created = await create(http, receiver, "strict")
        before = stored(stack, created["id"])
        response = await http.post(f"/v1/webhooks/{created['id']}/rotate-secret", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        if field:
            assert field in [detail["field"] for detail in error["details"]]
        assert stored(stack, created["id"]) == before == (created["secret"], [], 1)


async def test_rotate_without_a_body_still_works(stack: Stack, receiver: Receiver) -> None:
    async with stack.http() as http:
        created = await create(http, receiver, "bare")
        hook = created["id"]
        for kwargs in [
            {},  # no body, no Content-Type
            {"content": b"", "headers": {"Content-Type": "application/json"}},
            {"content": b"null", "headers": {"Content-Type": "application/json"}},
        ]:
            response = await http.post(f"/v1/webhooks/{hook}/rotate-secret", **kwargs)
            assert response.status_code == 200, (kwargs, response.text)
            assert response.json()["data"]["previousSecretsExpired"] is False
    current, old, version = stored(stack, hook)
    assert version == 4 and len(old) == 3 and created["secret"] in old
    assert current == response.json()["data"]["secret"]


# --- concurrency -------------------------------------------------------------------------


async def test_concurrent_rotations_lose_no_secret(stack: Stack, receiver: Receiver) -> None:
    """Ten rotations at once, through the real API: each is applied on top of the one
    before it, so every secret handed out still signs and the last one applied is current."""
    async with stack.http() as http:
        created = await create(http, receiver, "race")
        hook = created["id"]
        responses = await asyncio.gather(
            *(http.post(f"/v1/webhooks/{hook}/rotate-secret") for _ in range(10))
        )
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        results = [r.json()["data"] for r in responses]
        current, old, version = stored(stack, hook)

        returned = [result["secret"] for result in results]
        assert len(set(returned)) == 10
        lost = [s for s in returned if s != current and s not in old]
        assert lost == [], f"{len(lost)} of the secrets handed out no longer sign"
        assert created["secret"] in old  # the original keeps its grace period too
        assert len(old) == 10

        # The rotations were applied one after another: versions 2..11, each once, and the
        # current secret is the one from the single response that was applied last.
        assert sorted(result["secretVersion"] for result in results) == list(range(2, 12))
        assert version == 11
        [last] = [result for result in results if result["secretVersion"] == version]
        assert last["secret"] == current

        request = await deliver(http, receiver, "race")
        assert len(signatures(request)) == 11
        assert verifies(current, request)
        assert all(verifies(secret, request) for secret in [*returned, created["secret"]])


async def test_an_emergency_rotation_racing_normal_ones_never_brings_back_a_leaked_secret(
    stack: Stack, receiver: Receiver
) -> None:
    """A normal rotation that read the row before an `expirePrevious` rotation must not
    write the leaked secret back into the old secrets when it lands after it."""
    async with stack.http() as http:
        created = await create(http, receiver, "mixed")
        hook, leaked = created["id"], created["secret"]
        bodies: list[dict[str, bool]] = [{}] * 4 + [{"expirePrevious": True}] + [{}] * 4
        responses = await asyncio.gather(
            *(http.post(f"/v1/webhooks/{hook}/rotate-secret", json=body) for body in bodies)
        )
        assert [r.status_code for r in responses] == [200] * len(bodies)
        results = [r.json()["data"] for r in responses]
        current, old, version = stored(stack, hook)
        [emergency] = [result for result in results if result["previousSecretsExpired"]]

        assert leaked != current and leaked not in old
        # Exactly the secrets issued from the emergency rotation on still sign.
        after = {r["secret"] for r in results if r["secretVersion"] >= emergency["secretVersion"]}
        before = {r["secret"] for r in results if r["secretVersion"] < emergency["secretVersion"]}
        assert {current, *old} == after
        assert not before & {current, *old}
        assert version == 1 + len(bodies)

        request = await deliver(http, receiver, "mixed")
        assert verifies(current, request)
        assert not any(verifies(secret, request) for secret in [leaked, *before])


def test_a_rotation_that_read_a_stale_row_rebuilds_on_the_winner(
    engine: Engine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compare-and-set path, made deterministic: another rotation commits between this
    one's read and its write, so the write must miss and the rotation be rebuilt on top."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL holds the row lock from the read (FOR UPDATE): nothing can land")
    endpoint_id = create_endpoint(engine, keyring, "http://127.0.0.1:9/x", ["*"])
    original = open_secret(keyring, endpoint_id, endpoint_row(engine, endpoint_id).secret)
    builds: list[int] = []
    winner: list[repository.AppliedRotation] = []

    def rotate_with_interference(*args: Any, **kwargs: Any) -> Rotation:
        builds.append(1)
        if len(builds) == 1:  # a rotation sneaks in after the first read
            winner.append(
                repository.rotate_secret(
                    engine, keyring, endpoint_id, expire_previous=False, now=datetime.now(UTC)
                )
            )
        return rotate(*args, **kwargs)

    monkeypatch.setattr(repository, "rotate", rotate_with_interference)
    loser = repository.rotate_secret(
        engine, keyring, endpoint_id, expire_previous=False, now=datetime.now(UTC)
    )
    # Built three times: the stale build (missed), the winner's, the rebuild on top of it.
    assert len(builds) == 3
    assert (winner[0].version, loser.version) == (2, 3)
    row = endpoint_row(engine, endpoint_id)
    assert open_secret(keyring, endpoint_id, row.secret) == loser.rotation.secret
    old = [open_secret(keyring, endpoint_id, entry["secret"]) for entry in row.old_secrets]
    assert old == [winner[0].rotation.secret, original]
