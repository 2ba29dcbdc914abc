"""The one interface every platform adapter implements, and what its calls return.

A publish reaches a platform through its `PublishAdapter`:

    check(request)                 → SkipReason | None   no I/O: text over the platform's
                                                         limit, media it cannot take
    await publish(request)         → PublishResult       PUBLISHED, or PROCESSING where the
                                                         post exists and the platform is still
                                                         processing it (YouTube, TikTok)
    await status(remote, token)    → PublishResult       PROCESSING → PUBLISHED | FAILED;
                                                         reads only, never publishes
    await delete(remote, token)    → DeleteResult        deleted, or not supported with the
                                                         platform's reason (Instagram, TikTok)

Processing that must finish BEFORE the post can exist (X video, an Instagram container) is
waited for inside `publish`, so the one call that creates the post is its last request and
a caller can wrap `publish` in the provider-call ledger as one call.

Failures raise `PublishError`, classified the way relay.provider_errors classifies HTTP
answers:

    PublishError
      kind TOKEN_REJECTED  the platform refused the access token (401, Graph's code 190):
                           refresh through the connection's workflow, then NEEDS_REAUTH
      kind TRANSIENT       408/425/429/5xx, a timeout, a refused connection, Graph's rate
                           limit codes, a container not ready: retry, after `retry_after`
      kind PERMANENT       any other 4xx: the platform's `message` is the target's failure;
                           with `platform_code` ACCOUNT_INCOMPLETE (Facebook: which Page?)
                           the target's error code is ACCOUNT_INCOMPLETE

Messages carry the platform's own short reason: never a token, a header or a body sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

import httpx
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.provider_errors import (
    MAX_RETRY_AFTER,
    error_for_status,
    is_transient_status,
    parse_retry_after,
)

_MESSAGE_LIMIT = 200
# A target's error code (and SkipReason code): the connection does not identify the account.
ACCOUNT_INCOMPLETE = "ACCOUNT_INCOMPLETE"
# Graph API error codes that mean "slow down" though the HTTP status is 400 or 403:
# 4 app, 17 user, 32 page, 613 custom rate limits (developers.facebook.com, Graph errors).
GRAPH_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
GRAPH_INVALID_TOKEN_CODE = 190
# Instagram's "media not ready" (9007): the container is still processing.
GRAPH_NOT_READY_CODE = 9007
TIKTOK_TOKEN_CODES = frozenset({"access_token_invalid", "token_not_authorized"})
TIKTOK_RATE_LIMIT_CODE = "rate_limit_exceeded"


class PublishState(StrEnum):
    PUBLISHED = "PUBLISHED"
    # The post exists at the platform, which is still processing it: ask `status` later.
    PROCESSING = "PROCESSING"
    # The platform's processing failed after the publish was accepted.
    FAILED = "FAILED"


class FailureKind(StrEnum):
    TOKEN_REJECTED = "TOKEN_REJECTED"  # noqa: S105 (a failure kind, not a secret)
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"


@dataclass
class MediaItem:
    """One stored file to post: its bytes in `data`, or a URL the platform (Instagram,
    Facebook, TikTok) or the adapter (X, YouTube) fetches."""

    content_type: str
    size: int
    url: str | None = None
    data: bytes | None = None
    filename: str = "media"

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    @property
    def is_video(self) -> bool:
        return self.content_type.startswith("video/")


@dataclass
class PublishRequest:
    """One target's post. `account` is what the connection says of the account
    (relay.publishing.repository.account_of): `page_id` (Facebook, optional: which of the
    user's Pages), `ig_user_id` (Instagram), `author_urn` (LinkedIn), `username` (X, TikTok:
    their post URLs name it). `title` is YouTube's; its default is the text's first line."""

    text: str
    access_token: str
    link: str | None = None
    media: list[MediaItem] = field(default_factory=list)
    account: dict[str, str] = field(default_factory=dict)
    title: str | None = None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"PublishRequest(text={len(self.text)} chars, media={len(self.media)})"


@dataclass
class PublishResult:
    """What the platform answered. `remote_id` is the post's id (None while TikTok has not
    given one yet); `processing_id` is what `status` polls (YouTube's video id, TikTok's
    publish_id); `handle` the account name a post URL needs (TikTok)."""

    provider: str
    state: PublishState
    remote_id: str | None = None
    url: str | None = None
    processing_id: str | None = None
    failure_reason: str | None = None
    handle: str | None = None


@dataclass
class DeleteResult:
    provider: str
    remote_id: str | None
    deleted: bool
    # Why not (the platform cannot delete), or "already deleted".
    reason: str | None = None


@dataclass
class SkipReason:
    """Why a target is SKIPPED rather than attempted: `code` is one of TEXT_TOO_LONG,
    MEDIA_REQUIRED, MEDIA_UNSUPPORTED, ACCOUNT_INCOMPLETE; `limit` the limit named."""

    code: str
    message: str
    limit: int | None = None


class PublishError(Exception):
    """A platform refused or could not be reached; see the module docstring."""

    def __init__(
        self,
        provider: str,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: timedelta | None = None,
        platform_code: str | None = None,
        connected: bool = True,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message[:_MESSAGE_LIMIT]
        self.status = status
        self.retry_after = retry_after
        self.platform_code = platform_code
        # False when nothing reached the platform, so it cannot have acted (relay.ledger).
        self.connected = connected

    @property
    def token_rejected(self) -> bool:
        return self.kind is FailureKind.TOKEN_REJECTED

    @property
    def permanent(self) -> bool:
        return self.kind is FailureKind.PERMANENT

    @property
    def transient(self) -> bool:
        return self.kind is FailureKind.TRANSIENT

    def as_application_error(self) -> ApplicationError:
        """The Temporal failure, as relay.provider_errors shapes it."""
        if self.kind is FailureKind.TOKEN_REJECTED:
            return ApplicationError(
                f"{self.provider} rejected the access token",
                {"provider": self.provider, "status": self.status, "tokenRejected": True},
                type=ErrorCode.TOKEN_EXPIRED.value,
                non_retryable=True,
            )
        if self.kind is FailureKind.TRANSIENT:
            code = ErrorCode.RATE_LIMITED if self.status == 429 else ErrorCode.PROVIDER_ERROR
            details: dict[str, object] = {"provider": self.provider}
            # `status` only when the platform answered: the provider-call ledger reads its
            # presence as "it answered, so it did not act", which a timeout cannot say.
            if self.status is not None:
                details["status"] = self.status
            if not self.connected:
                details["connected"] = False
            return ApplicationError(
                f"{self.provider}: {self.message}",
                details,
                type=code.value,
                next_retry_delay=self.retry_after,
            )
        if self.platform_code == ACCOUNT_INCOMPLETE:
            # The connection does not say which account to act as (Facebook's Pages).
            return ApplicationError(
                f"{self.provider}: {self.message}",
                {"provider": self.provider},
                type=ACCOUNT_INCOMPLETE,
                non_retryable=True,
            )
        if self.status is None:  # refused without an HTTP refusal: media processing failed
            return ApplicationError(
                f"{self.provider}: {self.message}",
                {"provider": self.provider},
                type=ErrorCode.PROVIDER_ERROR.value,
                non_retryable=True,
            )
        return error_for_status(self.provider, self.status, reason=self.message)


class PublishAdapter(Protocol):
    """One platform. Adapters hold their client and base URL; every call gets the token."""

    provider: str

    def check(self, request: PublishRequest) -> SkipReason | None: ...

    async def publish(self, request: PublishRequest) -> PublishResult: ...

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult: ...

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult: ...


# --- shared helpers ---------------------------------------------------------------------------


def text_too_long(provider_name: str, what: str, length: int, limit: int) -> SkipReason | None:
    if length <= limit:
        return None
    return SkipReason(
        "TEXT_TOO_LONG", f"{provider_name} allows at most {limit} characters in the {what}", limit
    )


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def with_link(text: str, link: str | None) -> str:
    if not link:
        return text
    return f"{text}\n\n{link}" if text else link


def platform_message(body: object) -> tuple[str, str | None, int | None]:
    """(message, platform code, Graph subcode) from any of the six platforms' error shapes:
    Graph and Google {error: {message, code}}, TikTok {error: {code, message}}, X's problem
    JSON {detail | errors[0].message, type}, LinkedIn {message, code}."""
    if not isinstance(body, Mapping):
        return "", None, None
    error = body.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        subcode = error.get("error_subcode")
        return (
            str(error.get("message") or ""),
            None if code is None else str(code),
            subcode if isinstance(subcode, int) else None,
        )
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        first = errors[0]
        message = first.get("message") or first.get("detail") or body.get("detail")
        return str(message or ""), str(first.get("type") or body.get("type") or "") or None, None
    message = body.get("detail") or body.get("message") or body.get("title") or ""
    code = body.get("code") or body.get("type")
    return str(message), None if code is None else str(code), None


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def x_rate_limit_reset(headers: Mapping[str, str], now: float | None = None) -> timedelta | None:
    """X sends no Retry-After: its 429 names the window's end in epoch seconds."""
    reset = headers.get("x-rate-limit-reset")
    if reset is None or not reset.isdigit():
        return None
    delay = timedelta(seconds=max(0.0, int(reset) - (now if now is not None else time.time())))
    return min(delay, MAX_RETRY_AFTER)


def classify(
    provider: str,
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    message: str | None = None,
) -> PublishError:
    """The PublishError for a refusal from `provider`."""
    text, code, _ = platform_message(body)
    text = message or text or f"HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after")) or (
        x_rate_limit_reset(headers) if status == 429 else None
    )
    graph_code = int(code) if code is not None and code.isdigit() else None
    if status == 401 or graph_code == GRAPH_INVALID_TOKEN_CODE or code in TIKTOK_TOKEN_CODES:
        kind = FailureKind.TOKEN_REJECTED
    elif (
        is_transient_status(status)
        or graph_code in GRAPH_RATE_LIMIT_CODES
        or graph_code == GRAPH_NOT_READY_CODE
        or code == TIKTOK_RATE_LIMIT_CODE
    ):
        kind = FailureKind.TRANSIENT
    else:
        kind = FailureKind.PERMANENT
    return PublishError(
        provider, kind, text, status=status, retry_after=retry_after, platform_code=code
    )


def transport_failure(provider: str, exc: Exception) -> PublishError:
    """A request that got no answer: transient; `connected` False when it never left."""
    never_left = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    return PublishError(
        provider,
        FailureKind.TRANSIENT,
        f"call failed ({kind})",
        connected=not never_left,
    )


async def send(
    client: httpx.AsyncClient, provider: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request; a non-2xx answer raises the classified PublishError."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise transport_failure(provider, exc) from None
    if response.status_code >= 400:
        raise classify(provider, response.status_code, _json(response), response.headers)
    return response


def body_of(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    return dict(body) if isinstance(body, Mapping) else {}


async def media_bytes(client: httpx.AsyncClient, provider: str, item: MediaItem) -> bytes:
    """The file's bytes, fetched from its URL when the request carries none."""
    if item.data is not None:
        return item.data
    if item.url is None:
        raise PublishError(provider, FailureKind.PERMANENT, "the media has neither bytes nor URL")
    try:
        response = await client.get(item.url)
    except httpx.TransportError as exc:
        raise transport_failure(provider, exc) from None
    if response.status_code >= 400:
        kind = (
            FailureKind.TRANSIENT
            if is_transient_status(response.status_code)
            else FailureKind.PERMANENT
        )
        raise PublishError(
            provider, kind, f"the media could not be fetched (HTTP {response.status_code})"
        )
    return response.content


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
