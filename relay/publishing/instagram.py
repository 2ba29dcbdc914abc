"""Instagram (Graph API, Instagram Login): the two-step publish. POST /{ig-user-id}/media
makes a container from a public media URL, GET /{container}?fields=status_code is polled
until FINISHED, then POST /{ig-user-id}/media_publish creates the post. The API cannot
delete media."""

from __future__ import annotations

import asyncio
import time

import httpx

from relay.publishing.adapters import (
    DeleteResult,
    FailureKind,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
    SkipReason,
    bearer,
    body_of,
    send,
    text_too_long,
    with_link,
)

INSTAGRAM_API_BASE = "https://graph.instagram.com/v21.0"
CAPTION_LIMIT = 2200
IMAGE_SIZE_LIMIT = 8 * 1024 * 1024
# Meta asks for container status no more than once a minute for up to five minutes; images
# finish in seconds, so the first polls come sooner.
POLL_SECONDS = 5.0
PROCESSING_TIMEOUT_SECONDS = 300.0
CANNOT_DELETE = "Instagram's API cannot delete published media: remove it in the Instagram app"


class InstagramAdapter:
    provider = "instagram"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = INSTAGRAM_API_BASE,
        *,
        poll_seconds: float = POLL_SECONDS,
        processing_timeout: float = PROCESSING_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.poll_seconds = poll_seconds
        self.processing_timeout = processing_timeout

    def check(self, request: PublishRequest) -> SkipReason | None:
        if not request.account.get("ig_user_id"):
            return SkipReason("ACCOUNT_INCOMPLETE", "the Instagram connection has no user id")
        caption = with_link(request.text, request.link)
        too_long = text_too_long("Instagram", "caption", len(caption), CAPTION_LIMIT)
        if too_long is not None:
            return too_long
        if not request.media:
            return SkipReason("MEDIA_REQUIRED", "Instagram needs an image or a video")
        if len(request.media) > 1:
            # Carousels (up to 10 children) are not built yet.
            return SkipReason("MEDIA_UNSUPPORTED", "Instagram takes 1 image or video here", 1)
        item = request.media[0]
        if not (item.is_image or item.is_video):
            return SkipReason("MEDIA_UNSUPPORTED", "Instagram takes images and videos only")
        if item.is_image and item.content_type not in ("image/jpeg", "image/jpg"):
            return SkipReason("MEDIA_UNSUPPORTED", "Instagram takes JPEG images only")
        if item.is_image and item.size > IMAGE_SIZE_LIMIT:
            return SkipReason(
                "MEDIA_UNSUPPORTED",
                f"Instagram takes images of at most {IMAGE_SIZE_LIMIT} bytes",
                IMAGE_SIZE_LIMIT,
            )
        if item.url is None and item.data is not None:
            # Bytes alone cannot be posted; an item with neither is a stored file described
            # before its URL is made (the API's check at POST), which will have one.
            return SkipReason("MEDIA_UNSUPPORTED", "Instagram fetches media from a public URL")
        return None

    async def publish(self, request: PublishRequest) -> PublishResult:
        user_id = request.account["ig_user_id"]
        headers = bearer(request.access_token)
        item = request.media[0]
        form = {"caption": with_link(request.text, request.link)}
        if item.is_video:
            form |= {"media_type": "REELS", "video_url": item.url or ""}
        else:
            form |= {"image_url": item.url or ""}
        created = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/{user_id}/media",
            data=form,
            headers=headers,
        )
        container = str(body_of(created).get("id", ""))
        if not container:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no container id")
        await self._wait_finished(container, headers)
        # The one request that creates the post; what comes before can be repeated safely
        # (an unpublished container expires after 24 hours).
        published = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/{user_id}/media_publish",
            data={"creation_id": container},
            headers=headers,
        )
        media_id = str(body_of(published).get("id", ""))
        if not media_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no media id")
        return PublishResult(
            self.provider,
            PublishState.PUBLISHED,
            media_id,
            await self._permalink(media_id, headers),
        )

    async def _wait_finished(self, container: str, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + self.processing_timeout
        while True:
            answer = await send(
                self.client,
                self.provider,
                "GET",
                f"{self.base}/{container}",
                params={"fields": "status_code,status"},
                headers=headers,
            )
            body = body_of(answer)
            status_code = body.get("status_code")
            if status_code in ("FINISHED", "PUBLISHED"):
                return
            if status_code in ("ERROR", "EXPIRED"):
                reason = body.get("status") or status_code
                raise PublishError(
                    self.provider, FailureKind.PERMANENT, f"media processing failed: {reason}"
                )
            if time.monotonic() > deadline:
                raise PublishError(self.provider, FailureKind.TRANSIENT, "media still processing")
            await asyncio.sleep(self.poll_seconds)

    async def _permalink(self, media_id: str, headers: dict[str, str]) -> str | None:
        # The post exists: a failure to read its link must not fail the publish.
        try:
            answer = await send(
                self.client,
                self.provider,
                "GET",
                f"{self.base}/{media_id}",
                params={"fields": "permalink"},
                headers=headers,
            )
        except PublishError:
            return None
        permalink = body_of(answer).get("permalink")
        return str(permalink) if permalink else None

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        return remote

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        return DeleteResult(self.provider, remote.remote_id, False, CANNOT_DELETE)
