"""Provider responses and SDK exceptions become the right Temporal failures."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
import pytest
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.provider_errors import (
    MAX_RETRY_AFTER,
    error_for_status,
    parse_retry_after,
    raise_for_status,
    translate,
)
from tests.conftest import free_port
from tests.platform.conftest import FakeProvider, Reply

PERMANENT = [400, 401, 403, 404, 409, 410, 422]
TRANSIENT = [408, 425, 429, 500, 502, 503, 504]


async def _httpx_failure(provider: FakeProvider, name: str, **kwargs: object) -> ApplicationError:
    async with httpx.AsyncClient(**kwargs) as client:  # type: ignore[arg-type]
        response = await client.post(provider.url_for(name), json={"amount": 100})
    with pytest.raises(ApplicationError) as caught:
        raise_for_status(
            "acme", response.status_code, headers=response.headers, reason=response.text
        )
    return caught.value


async def _aiohttp_failure(provider: FakeProvider, name: str) -> ApplicationError:
    async with aiohttp.ClientSession() as session:
        async with session.post(provider.url_for(name), json={"amount": 100}) as response:
            try:
                response.raise_for_status()
            except aiohttp.ClientResponseError as exc:
                return translate("acme", exc)
    raise AssertionError("the provider answered 2xx")


def _details(failure: ApplicationError) -> dict:
    assert failure.details, "details carry the provider and status"
    return failure.details[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("status", PERMANENT)
async def test_permanent_4xx_is_non_retryable_with_a_relay_code(
    provider: FakeProvider, status: int
) -> None:
    provider.plan(f"p{status}", Reply(status), Reply(status))

    from_httpx = await _httpx_failure(provider, f"p{status}")
    from_aiohttp = await _aiohttp_failure(provider, f"p{status}")

    for failure in (from_httpx, from_aiohttp):
        assert failure.non_retryable is True
        assert failure.type == ErrorCode.PROVIDER_ERROR.value
        assert failure.next_retry_delay is None
        assert _details(failure) == {"provider": "acme", "status": status}
        assert f"acme answered HTTP {status}" in failure.message


async def test_permanent_code_can_be_chosen_by_the_caller(provider: FakeProvider) -> None:
    provider.plan("grant", Reply(400, body={"error": "invalid_grant"}))
    async with httpx.AsyncClient() as client:
        response = await client.post(provider.url_for("grant"))
    failure = error_for_status(
        "github",
        response.status_code,
        reason="invalid_grant",
        permanent_code=ErrorCode.REFRESH_FAILED,
    )
    assert failure.type == "REFRESH_FAILED"
    assert failure.non_retryable is True
    assert failure.message == "github answered HTTP 400: invalid_grant"


@pytest.mark.parametrize("status", TRANSIENT)
async def test_transient_statuses_are_retryable(provider: FakeProvider, status: int) -> None:
    provider.plan(f"t{status}", Reply(status), Reply(status))

    from_httpx = await _httpx_failure(provider, f"t{status}")
    from_aiohttp = await _aiohttp_failure(provider, f"t{status}")

    expected = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.PROVIDER_ERROR
    for failure in (from_httpx, from_aiohttp):
        assert failure.non_retryable is False
        assert failure.type == expected.value
        assert failure.next_retry_delay is None
        assert _details(failure)["status"] == status


async def test_2xx_and_3xx_do_not_raise(provider: FakeProvider) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(provider.url_for("ok"))
    raise_for_status("acme", response.status_code, headers=response.headers)
    raise_for_status("acme", 304)


async def test_retry_after_seconds_become_the_next_retry_delay(provider: FakeProvider) -> None:
    provider.plan("slow-down", Reply(429, {"Retry-After": "42"}), Reply(503, {"Retry-After": "7"}))

    rate_limited = await _httpx_failure(provider, "slow-down")
    unavailable = await _aiohttp_failure(provider, "slow-down")

    assert rate_limited.type == "RATE_LIMITED"
    assert rate_limited.next_retry_delay == timedelta(seconds=42)
    assert unavailable.next_retry_delay == timedelta(seconds=7)


async def test_retry_after_http_date_becomes_the_next_retry_delay(provider: FakeProvider) -> None:
    when = datetime.now(UTC) + timedelta(minutes=10)
    provider.plan(
        "dated", Reply(503, {"Retry-After": email.utils.format_datetime(when, usegmt=True)})
    )

    failure = await _httpx_failure(provider, "dated")

    assert failure.next_retry_delay is not None
    assert timedelta(minutes=9) < failure.next_retry_delay <= timedelta(minutes=10)


async def test_retry_after_is_capped(provider: FakeProvider) -> None:
    provider.plan("forever", Reply(429, {"Retry-After": "86400"}))
    failure = await _aiohttp_failure(provider, "forever")
    assert failure.next_retry_delay == MAX_RETRY_AFTER


def test_parse_retry_after_edge_cases() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("0") == timedelta(0)
    assert parse_retry_after(" 120 ") == timedelta(seconds=120)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == timedelta(seconds=30)
    # A date in the past means "now", not a negative delay.
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == timedelta(0)
    assert parse_retry_after("Fri, 02 Jan 2026 12:00:00 GMT", now=now) == MAX_RETRY_AFTER


async def test_timeouts_are_retryable(provider: FakeProvider) -> None:
    provider.plan("hang", Reply(delay=2), Reply(delay=2))

    async with httpx.AsyncClient(timeout=0.2) as client:
        with pytest.raises(httpx.TimeoutException) as httpx_error:
            await client.post(provider.url_for("hang"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
        with pytest.raises(TimeoutError) as aiohttp_error:
            await session.post(provider.url_for("hang"))

    for exc in (httpx_error.value, aiohttp_error.value):
        failure = translate("acme", exc)
        assert failure.non_retryable is False
        assert failure.type == ErrorCode.PROVIDER_ERROR.value
        assert "timed out" in failure.message
        # The request was sent: the provider may have acted.
        assert _details(failure) == {"provider": "acme"}


async def test_connection_refused_is_retryable_and_says_nothing_was_sent() -> None:
    closed = f"http://127.0.0.1:{free_port()}/charge"

    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as httpx_error:
            await client.post(closed)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as aiohttp_error:
            await session.post(closed)

    for exc in (httpx_error.value, aiohttp_error.value, ConnectionRefusedError()):
        failure = translate("acme", exc)
        assert failure.non_retryable is False
        assert "could not connect" in failure.message
        assert _details(failure) == {"provider": "acme", "connected": False}


async def test_httpx_status_error_is_translated_with_its_headers(provider: FakeProvider) -> None:
    provider.plan("limited", Reply(429, {"Retry-After": "3"}))
    async with httpx.AsyncClient() as client:
        response = await client.post(provider.url_for("limited"))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        response.raise_for_status()
    failure = translate("acme", caught.value)
    assert failure.type == "RATE_LIMITED"
    assert failure.next_retry_delay == timedelta(seconds=3)
    assert "HTTPStatusError" in failure.message


class CardError(Exception):
    """Shaped like stripe.error.CardError: `http_status` and `headers` on the exception."""

    def __init__(self, message: str, http_status: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.headers = headers


class ApiException(Exception):
    """Shaped like SendGrid's / Twilio's errors: `status_code` or `status`."""

    def __init__(self, status_code: int | None = None, status: int | None = None) -> None:
        super().__init__("api failure")
        if status_code is not None:
            self.status_code = status_code
        if status is not None:
            self.status = status


class FirebaseLikeError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__("firebase failure")
        self.http_response = response


class BotoLikeError(Exception):
    """Shaped like botocore's ClientError: the status lives in a dict."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__("An error occurred (SlowDown)")
        self.response = {
            "Error": {"Code": "SlowDown"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        }


@pytest.mark.parametrize(
    ("exc", "retryable", "code", "delay"),
    [
        (
            CardError("card declined 4242", 402, {"Request-Id": "req_1"}),
            False,
            "PROVIDER_ERROR",
            None,
        ),
        (CardError("rate limited", 429, {"Retry-After": "5"}), True, "RATE_LIMITED", 5),
        (ApiException(status_code=401), False, "PROVIDER_ERROR", None),
        (ApiException(status=503), True, "PROVIDER_ERROR", None),
        (FirebaseLikeError(httpx.Response(404)), False, "PROVIDER_ERROR", None),
        (
            FirebaseLikeError(httpx.Response(500, headers={"Retry-After": "9"})),
            True,
            "PROVIDER_ERROR",
            9,
        ),
        (BotoLikeError(403, {}), False, "PROVIDER_ERROR", None),
        (BotoLikeError(503, {"retry-after": "4"}), True, "PROVIDER_ERROR", 4),
    ],
)
def test_sdk_style_exceptions(
    exc: Exception, retryable: bool, code: str, delay: int | None
) -> None:
    failure = translate("sdk", exc)
    assert failure.non_retryable is (not retryable)
    assert failure.type == code
    assert failure.next_retry_delay == (timedelta(seconds=delay) if delay else None)
    # The SDK's message may carry card numbers or tokens: only its class name is kept.
    assert str(exc) not in failure.message
    assert type(exc).__name__ in failure.message


def test_unknown_exceptions_are_retryable_and_application_errors_pass_through() -> None:
    failure = translate("acme", ValueError("secret=hunter2"))
    assert failure.non_retryable is False
    assert "hunter2" not in failure.message
    assert failure.message == "call to acme failed (ValueError)"

    own = ApplicationError("already translated", type="OAUTH_FAILED", non_retryable=True)
    assert translate("acme", own) is own


def test_reason_is_trimmed() -> None:
    failure = error_for_status("acme", 400, reason="x" * 5000)
    assert len(failure.message) < 300
