"""Every platform adapter against the publishing platforms sandbox, run in a thread: the
real request shapes (and google-api-python-client for YouTube), the platforms' asynchronous
processing, deletes, and each refusal classified as the publishing capability will act on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from relay.errors import ErrorCode
from relay.publishing import instagram, tiktok
from relay.publishing.adapters import (
    FailureKind,
    MediaItem,
    PublishAdapter,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
    classify,
)
from relay.publishing.providers import PUBLISHING_PROVIDERS, build_adapters
from relay.sandbox.publishing import (
    SANDBOX_PAGE_ID,
    SANDBOX_TOKENS,
    PublishingSandbox,
    PublishingServer,
)

PROCESSING_SECONDS = 0.5
WAIT_SECONDS = 15.0
MB = 1024 * 1024
# No Facebook Page id: the adapter finds the user's Page (SANDBOX_PAGE_ID for the user of
# SANDBOX_TOKENS["facebook"]) and its Page token at /me/accounts.
ACCOUNT = {
    "author_urn": "urn:li:person:8675309",
    "ig_user_id": "17841400000000001",
    "username": "relaysandbox",
}
PNG = MediaItem("image/png", 2048, data=b"\x89PNG" + b"p" * 2044, filename="a.png")
IMAGE_URL = MediaItem("image/jpeg", 4096, url="https://cdn.example.com/launch.jpg")
VIDEO = MediaItem("video/mp4", 3000, data=b"v" * 3000, filename="launch.mp4")
JPEG_BYTES = MediaItem("image/jpeg", 4, data=b"jpeg")
PNG_URL = MediaItem("image/png", 4096, url="https://cdn.example.com/launch.png")
HUGE_JPEG_URL = MediaItem("image/jpeg", 8 * MB + 1, url="https://cdn.example.com/huge.jpg")
HUGE_PNG = MediaItem("image/png", 5 * MB + 1, data=b"")
VIDEO_URL = MediaItem("video/mp4", 3000, url="https://cdn.example.com/launch.mp4")
# What each platform is given in the tests that are about refusals, not media.
MEDIA_FOR = {
    "twitter": [],
    "linkedin": [],
    "facebook": [],
    "instagram": [IMAGE_URL],
    "youtube": [VIDEO],
    "tiktok": [VIDEO],
}


@pytest.fixture
def server() -> Iterator[PublishingServer]:
    with PublishingSandbox(port=0, processing_seconds=PROCESSING_SECONDS).run_in_thread() as s:
        yield s


@pytest.fixture
async def adapters(server: PublishingServer) -> AsyncIterator[dict[str, PublishAdapter]]:
    async with httpx.AsyncClient(timeout=30) as client:
        built = build_adapters(client, server.sandbox.bases())
        built["instagram"] = instagram.InstagramAdapter(
            client, server.sandbox.bases()["instagram"], poll_seconds=0.1
        )
        yield built


def request(
    provider: str,
    text: str = "Relay ships today",
    media: list[MediaItem] | None = None,
    *,
    link: str | None = None,
    token: str | None = None,
) -> PublishRequest:
    return PublishRequest(
        text=text,
        access_token=token or SANDBOX_TOKENS[provider],
        link=link,
        media=MEDIA_FOR[provider] if media is None else media,
        account=dict(ACCOUNT),
    )


def control(server: PublishingServer, path: str, body: dict[str, Any]) -> None:
    httpx.post(f"{server.api_base}/_sandbox/{path}", json=body).raise_for_status()


def posts(server: PublishingServer, provider: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.api_base}/_sandbox/posts").json()
    listed: list[dict[str, Any]] = answer["data"][provider]
    return listed


def publishes(server: PublishingServer, provider: str) -> int:
    count: int = httpx.get(f"{server.api_base}/_sandbox/posts").json()["publishes"][provider]
    return count


async def settle(adapter: PublishAdapter, result: PublishResult, token: str) -> PublishResult:
    """Polls `status` until the platform is done processing, as the workflow will."""
    deadline = time.monotonic() + WAIT_SECONDS
    while result.state is PublishState.PROCESSING and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        result = await adapter.status(result, token)
    return result


# --- publish, process, delete -----------------------------------------------------------------


async def test_x_posts_text_with_an_image_and_deletes_it(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    x = adapters["twitter"]
    ask = request("twitter", media=[PNG], link="https://relay.dev/launch")
    assert x.check(ask) is None

    result = await x.publish(ask)

    assert result.state is PublishState.PUBLISHED and result.remote_id
    assert result.url == f"https://x.com/relaysandbox/status/{result.remote_id}"
    [post] = posts(server, "twitter")
    assert post["id"] == result.remote_id and len(post["media"]) == 1
    assert post["text"] == "Relay ships today\n\nhttps://relay.dev/launch"
    deleted = await x.delete(result, SANDBOX_TOKENS["twitter"])
    assert deleted.deleted and deleted.reason is None
    assert posts(server, "twitter")[0]["deleted"]
    again = await x.delete(result, SANDBOX_TOKENS["twitter"])
    assert again.deleted and again.reason == "already deleted"


async def test_x_video_is_tweeted_only_once_processing_succeeded(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    result = await adapters["twitter"].publish(request("twitter", media=[VIDEO]))

    assert result.state is PublishState.PUBLISHED
    [post] = posts(server, "twitter")
    assert len(post["media"]) == 1 and publishes(server, "twitter") == 1


async def test_x_video_whose_processing_fails_is_a_permanent_failure(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    control(server, "processing", {"provider": "twitter", "failNext": 1})

    with pytest.raises(PublishError) as failed:
        await adapters["twitter"].publish(request("twitter", media=[VIDEO]))

    assert failed.value.permanent and "Unsupported video format" in failed.value.message
    assert publishes(server, "twitter") == 0


async def test_linkedin_posts_with_the_versioned_headers_and_deletes(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    linkedin = adapters["linkedin"]

    result = await linkedin.publish(request("linkedin", "Launch (v2) #relay"))

    assert result.state is PublishState.PUBLISHED
    assert result.remote_id is not None and result.remote_id.startswith("urn:li:share:")
    assert result.url == f"https://www.linkedin.com/feed/update/{result.remote_id}/"
    [post] = posts(server, "linkedin")
    # Reserved "little text" characters are escaped so LinkedIn shows them as typed.
    assert post["text"] == r"Launch \(v2\) \#relay"
    assert (await linkedin.delete(result, SANDBOX_TOKENS["linkedin"])).deleted
    assert posts(server, "linkedin")[0]["deleted"]
    again = await linkedin.delete(result, SANDBOX_TOKENS["linkedin"])
    assert again.deleted and again.reason == "already deleted"


async def test_facebook_posts_a_link_and_photos_and_deletes_them(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    facebook = adapters["facebook"]
    token = SANDBOX_TOKENS["facebook"]

    linked = await facebook.publish(request("facebook", link="https://relay.dev/launch"))
    by_url = await facebook.publish(request("facebook", media=[IMAGE_URL]))
    uploaded = await facebook.publish(request("facebook", media=[PNG]))

    assert linked.remote_id is not None and linked.remote_id.startswith(SANDBOX_PAGE_ID + "_")
    assert linked.url == f"https://www.facebook.com/{linked.remote_id}"
    assert by_url.state is uploaded.state is PublishState.PUBLISHED
    assert by_url.url is not None and by_url.url.startswith(
        f"https://www.facebook.com/{SANDBOX_PAGE_ID}_"
    )
    media = {p["id"]: p["media"] for p in posts(server, "facebook")}
    assert media[str(by_url.remote_id)] == [IMAGE_URL.url]
    assert media[str(uploaded.remote_id)] == ["source"]
    for result in (linked, by_url, uploaded):
        assert (await facebook.delete(result, token)).deleted
    assert all(p["deleted"] for p in posts(server, "facebook"))
    with pytest.raises(PublishError) as gone:
        await facebook.delete(linked, token)
    assert gone.value.permanent and gone.value.platform_code == "100"


async def test_instagram_container_is_polled_until_finished_then_published(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    ig = adapters["instagram"]

    image = await ig.publish(request("instagram"))
    reel = await ig.publish(request("instagram", media=[VIDEO_URL]))

    assert image.state is reel.state is PublishState.PUBLISHED
    assert image.url is not None and image.url.startswith("https://www.instagram.com/p/")
    published = {p["id"]: p for p in posts(server, "instagram")}
    assert published[str(image.remote_id)]["media"] == [IMAGE_URL.url]
    assert published[str(reel.remote_id)]["text"] == "Relay ships today"
    assert publishes(server, "instagram") == 2
    deleted = await ig.delete(image, SANDBOX_TOKENS["instagram"])
    assert not deleted.deleted and deleted.reason == instagram.CANNOT_DELETE


async def test_instagram_container_that_fails_processing_is_never_published(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    control(server, "processing", {"provider": "instagram", "failNext": 1})

    with pytest.raises(PublishError) as failed:
        await adapters["instagram"].publish(request("instagram", media=[VIDEO_URL]))

    assert failed.value.permanent and "processing failed" in failed.value.message
    assert publishes(server, "instagram") == 0


async def test_youtube_resumable_upload_processes_then_deletes(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    youtube = adapters["youtube"]
    token = SANDBOX_TOKENS["youtube"]
    # Three resumable chunks of 256 KiB and a tail.
    youtube.chunk_bytes = 256 * 1024  # type: ignore[attr-defined]
    video = MediaItem("video/mp4", 800_000, data=bytes(range(250)) * 3200)

    started = await youtube.publish(request("youtube", "Launch day\nAll about it", [video]))

    assert started.state is PublishState.PROCESSING and started.remote_id
    assert started.url == f"https://www.youtube.com/watch?v={started.remote_id}"
    [post] = posts(server, "youtube")
    assert post["text"] == "Launch day"
    done = await settle(youtube, started, token)
    assert done.state is PublishState.PUBLISHED and done.remote_id == started.remote_id
    assert (await youtube.delete(done, token)).deleted
    again = await youtube.delete(done, token)
    assert again.deleted and again.reason == "already deleted"
    gone = await youtube.status(started, token)
    assert gone.state is PublishState.FAILED


async def test_youtube_processing_failure_is_reported(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    control(server, "processing", {"provider": "youtube", "failNext": 1})
    token = SANDBOX_TOKENS["youtube"]

    started = await adapters["youtube"].publish(request("youtube"))
    done = await settle(adapters["youtube"], started, token)

    assert done.state is PublishState.FAILED
    assert done.failure_reason is not None and "failed" in done.failure_reason


async def test_tiktok_uploads_in_chunks_then_publish_completes(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    tt = adapters["tiktok"]
    token = SANDBOX_TOKENS["tiktok"]
    size = 21 * MB  # two 10 MB chunks, the remainder riding on the last
    video = MediaItem("video/mp4", size, data=b"t" * size)

    started = await tt.publish(request("tiktok", media=[video]))

    assert started.state is PublishState.PROCESSING and started.remote_id is None
    assert started.processing_id is not None
    done = await settle(tt, started, token)
    assert done.state is PublishState.PUBLISHED and done.remote_id
    assert done.url == f"https://www.tiktok.com/@relaysandbox/video/{done.remote_id}"
    [post] = posts(server, "tiktok")
    assert post["id"] == done.remote_id and publishes(server, "tiktok") == 1
    deleted = await tt.delete(done, token)
    assert not deleted.deleted and deleted.reason == tiktok.CANNOT_DELETE


async def test_tiktok_pulls_from_a_url_and_reports_failed_processing(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    tt = adapters["tiktok"]
    token = SANDBOX_TOKENS["tiktok"]
    pulled = await settle(tt, await tt.publish(request("tiktok", media=[VIDEO_URL])), token)
    control(server, "processing", {"provider": "tiktok", "failNext": 1})
    failed = await settle(tt, await tt.publish(request("tiktok")), token)

    assert pulled.state is PublishState.PUBLISHED
    assert failed.state is PublishState.FAILED
    assert failed.failure_reason == "file_format_check_failed"


def test_chunk_plan_follows_tiktoks_rules() -> None:
    assert tiktok.chunk_plan(3 * MB) == (3 * MB, 1)
    assert tiktok.chunk_plan(10 * MB) == (10 * MB, 1)
    assert tiktok.chunk_plan(25 * MB) == (10 * MB, 2)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PUBLISHING_PROVIDERS)
async def test_429_surfaces_retry_after(
    server: PublishingServer, adapters: dict[str, PublishAdapter], provider: str
) -> None:
    control(server, "faults", {"provider": provider, "count": 1, "status": 429, "retryAfter": 7})

    with pytest.raises(PublishError) as limited:
        await adapters[provider].publish(request(provider))

    error = limited.value
    assert error.transient and error.status == 429
    assert error.retry_after is not None
    # X sends no Retry-After: its x-rate-limit-reset (epoch seconds, rounded up) is used.
    assert timedelta(seconds=6) <= error.retry_after <= timedelta(seconds=8)
    assert error.as_application_error().next_retry_delay == error.retry_after
    assert error.as_application_error().type == ErrorCode.RATE_LIMITED.value


async def test_xs_own_rate_limit_window_is_honoured(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    control(server, "rate-limits", {"provider": "twitter", "limit": 1, "windowSeconds": 30})

    await adapters["twitter"].publish(request("twitter"))
    with pytest.raises(PublishError) as limited:
        await adapters["twitter"].publish(request("twitter", "again"))

    assert limited.value.transient and limited.value.retry_after is not None
    assert timedelta(seconds=1) <= limited.value.retry_after <= timedelta(seconds=31)


@pytest.mark.parametrize("provider", PUBLISHING_PROVIDERS)
async def test_an_unknown_token_is_a_token_rejection(
    server: PublishingServer, adapters: dict[str, PublishAdapter], provider: str
) -> None:
    with pytest.raises(PublishError) as rejected:
        await adapters[provider].publish(request(provider, token="not-a-token-it-knows"))

    error = rejected.value
    assert error.token_rejected and error.kind is FailureKind.TOKEN_REJECTED
    assert "not-a-token-it-knows" not in str(error)
    failure = error.as_application_error()
    assert failure.non_retryable and failure.details[0]["tokenRejected"] is True
    assert publishes(server, provider) == 0


async def test_a_token_the_oauth_sandbox_issued_works_once_registered(
    server: PublishingServer, adapters: dict[str, PublishAdapter]
) -> None:
    server.sandbox.register_token("twitter", "issued-by-oauth")

    result = await adapters["twitter"].publish(request("twitter", token="issued-by-oauth"))

    assert result.state is PublishState.PUBLISHED


@pytest.mark.parametrize(
    ("provider", "call"),
    [
        ("twitter", "delete"),
        ("linkedin", "delete"),
        ("youtube", "status"),
        ("youtube", "delete"),
        ("tiktok", "status"),
        ("facebook", "delete"),
    ],
)
async def test_a_rejected_token_on_status_or_delete_is_a_token_rejection(
    server: PublishingServer, adapters: dict[str, PublishAdapter], provider: str, call: str
) -> None:
    adapter = adapters[provider]
    published = await adapter.publish(request(provider))

    with pytest.raises(PublishError) as rejected:
        if call == "status":
            await adapter.status(published, "revoked-token")
        else:
            await adapter.delete(published, "revoked-token")

    assert rejected.value.token_rejected


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        # Graph answers an expired token with 400 and code 190, not 401.
        (400, {"error": {"message": "Session has expired", "code": 190}}, "TOKEN_REJECTED"),
        # Graph's rate limits can come as 400/403 with codes 4, 17, 32, 613.
        (403, {"error": {"message": "(#4) Application request limit", "code": 4}}, "TRANSIENT"),
        (400, {"error": {"message": "Media ID is not available", "code": 9007}}, "TRANSIENT"),
        (400, {"error": {"message": "(#100) Invalid parameter", "code": 100}}, "PERMANENT"),
        (200, {"data": {}, "error": {"code": "rate_limit_exceeded", "message": "m"}}, "TRANSIENT"),
        (403, {"data": {}, "error": {"code": "spam_risk_too_many_posts"}}, "PERMANENT"),
        (408, None, "TRANSIENT"),
    ],
)
def test_classify_reads_the_platforms_codes(
    status: int, body: dict[str, Any] | None, kind: str
) -> None:
    assert classify("facebook", status, body, {}).kind is FailureKind(kind)


def test_a_failure_without_a_status_is_permanent_and_says_why() -> None:
    error = PublishError("twitter", FailureKind.PERMANENT, "media processing failed: codec")

    failure = error.as_application_error()

    assert failure.non_retryable and "codec" in str(failure) and "HTTP" not in str(failure)


# Over the limit on purpose, past `check`, so the platform itself refuses it.
TOO_LONG = {
    "twitter": ("x" * 281, "too long"),
    "linkedin": ("l" * 3001, "exceeds the maximum of 3000"),
    "facebook": ("f" * 63207, "at most 63206"),
    "instagram": ("i" * 2201, "at most 2200"),
    "youtube": ("y" * 101, "invalid or empty video title"),
    "tiktok": ("t" * 2201, "longer than 2200"),
}


@pytest.mark.parametrize("provider", PUBLISHING_PROVIDERS)
async def test_a_platform_4xx_is_permanent_with_the_platforms_message(
    server: PublishingServer, adapters: dict[str, PublishAdapter], provider: str
) -> None:
    text, message = TOO_LONG[provider]
    ask = request(provider, text)
    skipped = adapters[provider].check(ask)
    assert skipped is not None and skipped.code == "TEXT_TOO_LONG"

    with pytest.raises(PublishError) as refused:
        await adapters[provider].publish(ask)

    error = refused.value
    assert error.permanent and error.status in (400, 422)
    assert message in error.message
    failure = error.as_application_error()
    assert failure.non_retryable and failure.type == ErrorCode.PROVIDER_ERROR.value
    assert publishes(server, provider) == 0


@pytest.mark.parametrize("provider", PUBLISHING_PROVIDERS)
async def test_a_5xx_is_transient(
    server: PublishingServer, adapters: dict[str, PublishAdapter], provider: str
) -> None:
    control(server, "faults", {"provider": provider, "count": 1, "status": 503})

    with pytest.raises(PublishError) as failed:
        await adapters[provider].publish(request(provider))

    assert failed.value.transient and failed.value.status == 503
    assert not failed.value.as_application_error().non_retryable


async def test_a_platform_that_cannot_be_reached_is_transient_and_never_connected() -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        # A port nothing listens on: bind, read the port, close.
        with PublishingSandbox(port=0).run_in_thread() as gone:
            bases = gone.sandbox.bases()
        adapters = build_adapters(client, bases)
        for provider in ("twitter", "linkedin", "facebook", "tiktok", "youtube"):
            with pytest.raises(PublishError) as failed:
                await adapters[provider].publish(request(provider))
            assert failed.value.transient and not failed.value.connected, provider


# --- skip reasons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "text", "media", "code", "limit"),
    [
        ("twitter", "x" * 281, [], "TEXT_TOO_LONG", 280),
        ("twitter", "ok", [PNG] * 5, "MEDIA_UNSUPPORTED", 4),
        ("twitter", "ok", [VIDEO, PNG], "MEDIA_UNSUPPORTED", 1),
        ("linkedin", "l" * 3001, [], "TEXT_TOO_LONG", 3000),
        ("linkedin", "ok", [PNG], "MEDIA_UNSUPPORTED", None),
        ("facebook", "f" * 63207, [], "TEXT_TOO_LONG", 63206),
        ("facebook", "ok", [VIDEO], "MEDIA_UNSUPPORTED", 1),
        ("instagram", "i" * 2201, [IMAGE_URL], "TEXT_TOO_LONG", 2200),
        ("instagram", "text only", [], "MEDIA_REQUIRED", None),
        ("instagram", "bytes only", [JPEG_BYTES], "MEDIA_UNSUPPORTED", None),
        ("instagram", "a png", [PNG_URL], "MEDIA_UNSUPPORTED", None),
        ("instagram", "huge", [HUGE_JPEG_URL], "MEDIA_UNSUPPORTED", 8 * MB),
        ("twitter", "huge", [HUGE_PNG], "MEDIA_UNSUPPORTED", 5 * MB),
        ("youtube", "text only", [], "MEDIA_REQUIRED", None),
        ("youtube", "y" * 101, [VIDEO], "TEXT_TOO_LONG", 100),
        ("youtube", "an image", [PNG], "MEDIA_REQUIRED", None),
        ("tiktok", "text only", [], "MEDIA_REQUIRED", None),
        # TikTok counts UTF-16 code units: 1101 emoji are 2202 of them.
        ("tiktok", "\U0001f680" * 1101, [VIDEO], "TEXT_TOO_LONG", 2200),
    ],
)
def test_check_names_the_limit(
    provider: str, text: str, media: list[MediaItem], code: str, limit: int | None
) -> None:
    adapter = build_adapters(httpx.AsyncClient())[provider]

    reason = adapter.check(request(provider, text, media))

    assert reason is not None and (reason.code, reason.limit) == (code, limit)
    if limit is not None:
        assert str(limit) in reason.message


@pytest.mark.parametrize("provider", PUBLISHING_PROVIDERS)
def test_check_passes_what_the_platform_takes(provider: str) -> None:
    adapter = build_adapters(httpx.AsyncClient())[provider]

    assert adapter.check(request(provider)) is None
    assert adapter.check(request(provider, "\U0001f680" * 140)) is None or provider == "youtube"


def test_check_needs_the_accounts_ids() -> None:
    adapters = build_adapters(httpx.AsyncClient())
    for provider in ("linkedin", "instagram"):
        bare = request(provider)
        bare.account = {}
        reason = adapters[provider].check(bare)
        assert reason is not None and reason.code == "ACCOUNT_INCOMPLETE", provider
    # Facebook's Page is found at publish (/me/accounts): no id is needed up front.
    bare = request("facebook")
    bare.account = {}
    assert adapters["facebook"].check(bare) is None


def test_the_request_keeps_its_token_out_of_its_repr() -> None:
    assert SANDBOX_TOKENS["twitter"] not in repr(request("twitter"))


def test_real_bases_by_default() -> None:
    adapters = build_adapters(httpx.AsyncClient())
    assert adapters["twitter"].base == "https://api.x.com"  # type: ignore[attr-defined]
    assert adapters["facebook"].base == "https://graph.facebook.com/v21.0"  # type: ignore[attr-defined]
