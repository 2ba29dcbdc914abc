"""One HTTP attempt of a delivery: the signed request and what came back.

The request is `POST` with the Standard Webhooks headers, no redirects followed,
one total timeout (WEBHOOK_TIMEOUT). The outcome keeps the status, the first 4 KiB
of the response body and a short error; never a header value or a secret.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from relay import __version__
from relay.webhooks.outbox import RESPONSE_BODY_LIMIT, EventBody, Job, Outcome
from relay.webhooks.signing import message_id, signature_header
from relay.webhooks.ssrf import GuardedResolver, SsrfGuard, UnsafeUrlError, find_blocked

USER_AGENT = f"Relay-Webhooks/{__version__}"
# Header names an endpoint's custom headers may not set (compared lower-case).
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def is_reserved_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith("webhook-")


def event_body(event: EventBody) -> bytes:
    """`{type, timestamp, data}`, the same bytes on every attempt of every delivery."""
    return json.dumps(
        {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def make_session(guard: SsrfGuard, *, limit: int) -> aiohttp.ClientSession:
    """The shared client: guarded DNS, no cookies kept between endpoints."""
    connector = aiohttp.TCPConnector(
        limit=limit, resolver=GuardedResolver(guard), ttl_dns_cache=10, force_close=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        headers={"User-Agent": USER_AGENT},
    )


async def attempt(
    session: aiohttp.ClientSession,
    guard: SsrfGuard,
    job: Job,
    body: bytes,
    keys: list[bytes],
    *,
    timeout: timedelta,  # noqa: ASYNC109 - aiohttp enforces it per request
    clock: Callable[[], datetime],
) -> Outcome:
    started_at = clock()
    began = time.monotonic()

    def done(**result: Any) -> Outcome:
        return Outcome(job, started_at, int((time.monotonic() - began) * 1000), **result)

    url = job.endpoint.url
    try:
        _, literal = guard.check_syntax(url)
    except UnsafeUrlError as exc:
        return done(error=f"refused: {exc}")
    if literal is not None and (reason := guard.refusal(literal)):
        return done(error=f"refused: blocked address: {reason}")
    msg_id = message_id(job.delivery_id)
    timestamp = int(started_at.timestamp())
    headers = {
        **job.endpoint.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=_client_timeout(timeout.total_seconds()),
        ) as response:
            raw = await response.content.read(RESPONSE_BODY_LIMIT)
            return done(
                status_code=response.status,
                response_body=raw.decode("utf-8", errors="replace") if raw else None,
                retry_after=response.headers.get("Retry-After"),
            )
    except TimeoutError:
        return done(error=f"timed out after {timeout.total_seconds():g}s")
    except (aiohttp.ClientError, OSError) as exc:
        blocked = find_blocked(exc)
        if blocked is not None:
            return done(error=f"refused: {blocked.strerror or blocked}")
        return done(error=f"connection failed: {_reason(exc)}")
    except asyncio.CancelledError:
        raise


@functools.lru_cache(maxsize=8)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _reason(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"{type(exc).__name__} ({os_error.strerror})"
    return type(exc).__name__
