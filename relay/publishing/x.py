"""X (Twitter) API v2: POST /2/tweets, media through the v2 media upload, DELETE /2/tweets/{id}.

Images go up in one multipart request; videos and GIFs through initialize / append /
finalize, then STATUS until processing succeeds, since a tweet can only carry finished media.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from relay.publishing.adapters import (
    DeleteResult,
    FailureKind,
    MediaItem,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
    SkipReason,
    bearer,
    body_of,
    media_bytes,
    send,
    text_too_long,
    with_link,
)

X_API_BASE = "https://api.x.com"
TEXT_LIMIT = 280
# X wraps every link in a t.co URL that counts as 23 characters whatever its length.
LINK_WEIGHT = 23
MAX_IMAGES = 4
CHUNK_BYTES = 4 * 1024 * 1024
# X's media limits: images 5 MB, GIFs 15 MB, videos 512 MB.
SIZE_LIMITS = {"image": 5 * 1024 * 1024, "GIF": 15 * 1024 * 1024, "video": 512 * 1024 * 1024}
PROCESSING_TIMEOUT_SECONDS = 300.0
DEFAULT_CHECK_AFTER_SECONDS = 1.0


class XAdapter:
    provider = "twitter"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = X_API_BASE,
        *,
        processing_timeout: float = PROCESSING_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.processing_timeout = processing_timeout

    def check(self, request: PublishRequest) -> SkipReason | None:
        length = len(request.text) + (LINK_WEIGHT + 2 if request.link else 0)
        too_long = text_too_long("X", "post", length, TEXT_LIMIT)
        if too_long is not None:
            return too_long
        moving = [m for m in request.media if not m.is_image or m.content_type == "image/gif"]
        if any(not (m.is_image or m.is_video) for m in request.media):
            return SkipReason("MEDIA_UNSUPPORTED", "X takes images, GIFs and videos only")
        if moving and len(request.media) > 1:
            return SkipReason("MEDIA_UNSUPPORTED", "X takes 1 video or GIF per post", 1)
        if len(request.media) > MAX_IMAGES:
            return SkipReason(
                "MEDIA_UNSUPPORTED", f"X takes at most {MAX_IMAGES} images", MAX_IMAGES
            )
        for item in request.media:
            kind = "GIF" if item.content_type == "image/gif" else item.content_type.split("/")[0]
            limit = SIZE_LIMITS.get(kind, 0)
            if item.size > limit:
                return SkipReason(
                    "MEDIA_UNSUPPORTED", f"X takes a {kind} of at most {limit} bytes", limit
                )
        if not request.text and not request.link and not request.media:
            return SkipReason("MEDIA_REQUIRED", "X needs text or media")
        return None

    async def publish(self, request: PublishRequest) -> PublishResult:
        token = request.access_token
        media_ids = [await self._upload(item, token) for item in request.media]
        body: dict[str, object] = {"text": with_link(request.text, request.link)}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        response = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/2/tweets",
            json=body,
            headers=bearer(token),
        )
        tweet_id = str(body_of(response).get("data", {}).get("id", ""))
        if not tweet_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no tweet id in the answer")
        username = request.account.get("username")
        url = (
            f"https://x.com/{username}/status/{tweet_id}"
            if username
            else f"https://x.com/i/web/status/{tweet_id}"
        )
        return PublishResult(self.provider, PublishState.PUBLISHED, tweet_id, url)

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        return remote  # a tweet exists once created: nothing is processed after it

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        try:
            await send(
                self.client,
                self.provider,
                "DELETE",
                f"{self.base}/2/tweets/{remote.remote_id}",
                headers=bearer(access_token),
            )
        except PublishError as exc:
            if exc.status == 404:
                return DeleteResult(self.provider, remote.remote_id, True, "already deleted")
            raise
        return DeleteResult(self.provider, remote.remote_id, True)

    async def _upload(self, item: MediaItem, token: str) -> str:
        data = await media_bytes(self.client, self.provider, item)
        headers = bearer(token)
        if item.is_image and item.content_type != "image/gif":
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/2/media/upload",
                data={"media_category": "tweet_image", "media_type": item.content_type},
                files={"media": (item.filename, data, item.content_type)},
                headers=headers,
            )
            return self._media_id(body_of(response))
        category = "tweet_gif" if item.content_type == "image/gif" else "tweet_video"
        started = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/2/media/upload/initialize",
            json={
                "media_type": item.content_type,
                "total_bytes": len(data),
                "media_category": category,
            },
            headers=headers,
        )
        media_id = self._media_id(body_of(started))
        for index, offset in enumerate(range(0, len(data), CHUNK_BYTES)):
            await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/2/media/upload/{media_id}/append",
                data={"segment_index": str(index)},
                files={"media": (item.filename, data[offset : offset + CHUNK_BYTES])},
                headers=headers,
            )
        finalized = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/2/media/upload/{media_id}/finalize",
            headers=headers,
        )
        await self._wait_processed(media_id, body_of(finalized), headers)
        return media_id

    async def _wait_processed(
        self, media_id: str, answer: dict[str, object], headers: dict[str, str]
    ) -> None:
        deadline = time.monotonic() + self.processing_timeout
        while True:
            data = answer.get("data")
            info = data.get("processing_info") if isinstance(data, dict) else None
            state = info.get("state") if isinstance(info, dict) else "succeeded"
            if state == "succeeded":
                return
            if state == "failed":
                error = info.get("error") if isinstance(info, dict) else None
                reason = error.get("message") if isinstance(error, dict) else None
                raise PublishError(
                    self.provider,
                    FailureKind.PERMANENT,
                    f"media processing failed: {reason or 'no reason given'}",
                )
            if time.monotonic() > deadline:
                raise PublishError(self.provider, FailureKind.TRANSIENT, "media still processing")
            wait = info.get("check_after_secs") if isinstance(info, dict) else None
            await asyncio.sleep(
                float(wait) if isinstance(wait, int | float) else DEFAULT_CHECK_AFTER_SECONDS
            )
            response = await send(
                self.client,
                self.provider,
                "GET",
                f"{self.base}/2/media/upload",
                params={"command": "STATUS", "media_id": media_id},
                headers=headers,
            )
            answer = body_of(response)

    def _media_id(self, answer: dict[str, object]) -> str:
        data = answer.get("data")
        media_id = data.get("id") if isinstance(data, dict) else None
        if not media_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no media id in the answer")
        return str(media_id)
