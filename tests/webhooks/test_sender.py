"""One attempt against a real receiver: timeouts, redirects, truncation, connection errors."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta

from relay.db import utcnow
from relay.models.webhooks import AttemptTrigger
from relay.webhooks.outbox import EndpointInfo, Job
from relay.webhooks.sender import attempt, make_session
from relay.webhooks.ssrf import SsrfGuard
from tests.conftest import free_port
from tests.webhooks.conftest import Receiver, always

GUARD = SsrfGuard([ipaddress.ip_network("127.0.0.0/8")])


def job(url: str, headers: dict[str, str] | None = None) -> Job:
    endpoint = EndpointInfo(uuid.uuid4(), url, headers or {}, "", [], True, None)
    return Job(uuid.uuid4(), endpoint, uuid.uuid4(), "t", 1, 1, AttemptTrigger.SCHEDULED, "PENDING")


async def send(url: str, *, timeout: float = 5, headers: dict[str, str] | None = None):
    session = make_session(GUARD, limit=8)
    try:
        return await attempt(
            session,
            GUARD,
            job(url, headers),
            b'{"type":"t","timestamp":"x","data":{}}',
            [b"k" * 32],
            timeout=timedelta(seconds=timeout),
            clock=utcnow,
        )
    finally:
        await session.close()


async def test_timeout_is_a_failed_attempt(receiver: Receiver) -> None:
    receiver.delay["slow"] = 2.0
    outcome = await send(receiver.url("slow"), timeout=0.3)
    assert outcome.status_code is None and not outcome.ok
    assert outcome.error == "timed out after 0.3s"


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.behave("moved", always(302))
    outcome = await send(receiver.url("moved"))
    assert outcome.status_code == 302 and not outcome.ok
    assert receiver.at("redirected-moved") == []


async def test_response_body_is_kept_to_4_kib(receiver: Receiver) -> None:
    receiver.behave("chatty", always(500, body="x" * 10_000))
    outcome = await send(receiver.url("chatty"))
    assert outcome.status_code == 500
    assert outcome.response_body == "x" * 4096


async def test_connection_refused_is_recorded_without_the_url() -> None:
    outcome = await send(f"http://127.0.0.1:{free_port()}/hook?token=secret")
    assert outcome.status_code is None
    assert outcome.error and outcome.error.startswith("connection failed")
    assert "secret" not in outcome.error


async def test_custom_headers_are_sent_beside_relays(receiver: Receiver) -> None:
    outcome = await send(receiver.url("custom"), headers={"X-Tenant": "t-1"})
    assert outcome.ok
    [request] = receiver.at("custom")
    assert request.headers["x-tenant"] == "t-1"
    assert request.headers["content-type"] == "application/json"
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(request.headers)
