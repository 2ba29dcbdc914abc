"""TikTok Content Posting API (direct post): POST /v2/post/publish/video/init/, the video
PUT to the returned upload_url in chunks (or PULL_FROM_URL from a verified domain), then
POST /v2/post/publish/status/fetch/ until PUBLISH_COMPLETE. The API has no delete."""

from __future__ import annotations

from typing import Any

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
    classify,
    media_bytes,
    send,
    text_too_long,
    utf16_length,
    with_link,
)

TIKTOK_API_BASE = "https://open.tiktokapis.com"
TITLE_LIMIT = 2200  # UTF-16 code units
# Chunks are 5 to 64 MB (the last may hold up to 128 MB); a smaller video goes up whole.
CHUNK_BYTES = 10 * 1024 * 1024
# Unaudited clients may only post privately; an audited one passes PUBLIC_TO_EVERYONE.
DEFAULT_PRIVACY = "SELF_ONLY"
CANNOT_DELETE = "TikTok's API cannot delete posts: remove it in the TikTok app"
_PROCESSING = ("PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD", "SEND_TO_USER_INBOX")


def chunk_plan(size: int) -> tuple[int, int]:
    """(chunk_size, total_chunk_count) as TikTok counts them: the remainder rides on the
    last chunk."""
    chunk = size if size <= CHUNK_BYTES else CHUNK_BYTES
    return chunk, max(1, size // chunk)


class TikTokAdapter:
    provider = "tiktok"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = TIKTOK_API_BASE,
        *,
        privacy_level: str = DEFAULT_PRIVACY,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.privacy_level = privacy_level

    def check(self, request: PublishRequest) -> SkipReason | None:
        title = with_link(request.text, request.link)
        too_long = text_too_long("TikTok", "title", utf16_length(title), TITLE_LIMIT)
        if too_long is not None:
            return too_long
        if len(request.media) != 1 or not request.media[0].is_video:
            return SkipReason("MEDIA_REQUIRED", "TikTok needs exactly one video")
        return None

    async def _call(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}{path}",
            json=body,
            headers=bearer(token),
        )
        answer = body_of(response)
        error = answer.get("error")
        if isinstance(error, dict) and error.get("code") not in (None, "ok"):
            raise classify(self.provider, response.status_code, answer, response.headers)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    async def publish(self, request: PublishRequest) -> PublishResult:
        video = request.media[0]
        post_info = {
            "title": with_link(request.text, request.link),
            "privacy_level": self.privacy_level,
        }
        if video.data is None and video.url is not None:
            source: dict[str, Any] = {"source": "PULL_FROM_URL", "video_url": video.url}
            content = b""
        else:
            content = await media_bytes(self.client, self.provider, video)
            chunk, count = chunk_plan(len(content))
            source = {
                "source": "FILE_UPLOAD",
                "video_size": len(content),
                "chunk_size": chunk,
                "total_chunk_count": count,
            }
        data = await self._call(
            "/v2/post/publish/video/init/",
            request.access_token,
            {"post_info": post_info, "source_info": source},
        )
        publish_id = data.get("publish_id")
        if not publish_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no publish_id in the answer")
        upload_url = data.get("upload_url")
        if source["source"] == "FILE_UPLOAD":
            if not upload_url:
                raise PublishError(self.provider, FailureKind.TRANSIENT, "no upload_url")
            await self._upload(str(upload_url), content, video.content_type)
        return PublishResult(
            self.provider,
            PublishState.PROCESSING,
            processing_id=str(publish_id),
            handle=request.account.get("username"),
        )

    async def _upload(self, upload_url: str, content: bytes, content_type: str) -> None:
        chunk, count = chunk_plan(len(content))
        total = len(content)
        for index in range(count):
            first = index * chunk
            last = total - 1 if index == count - 1 else first + chunk - 1
            # The upload_url carries its own credential: no bearer token goes with it.
            await send(
                self.client,
                self.provider,
                "PUT",
                upload_url,
                content=content[first : last + 1],
                headers={
                    "Content-Type": content_type,
                    "Content-Range": f"bytes {first}-{last}/{total}",
                },
            )

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        data = await self._call(
            "/v2/post/publish/status/fetch/", access_token, {"publish_id": remote.processing_id}
        )
        state = data.get("status")
        if state in _PROCESSING:
            return remote
        if state == "FAILED":
            reason = str(data.get("fail_reason") or "processing failed")
            return PublishResult(
                self.provider,
                PublishState.FAILED,
                processing_id=remote.processing_id,
                failure_reason=reason,
                handle=remote.handle,
            )
        if state != "PUBLISH_COMPLETE":
            raise PublishError(self.provider, FailureKind.TRANSIENT, f"unknown status {state}")
        # TikTok's own spelling; empty for a post only its author can see.
        ids = data.get("publicaly_available_post_id") or []
        post_id = str(ids[0]) if ids else None
        url = (
            f"https://www.tiktok.com/@{remote.handle}/video/{post_id}"
            if post_id and remote.handle
            else None
        )
        return PublishResult(
            self.provider,
            PublishState.PUBLISHED,
            post_id,
            url,
            processing_id=remote.processing_id,
            handle=remote.handle,
        )

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        return DeleteResult(self.provider, remote.remote_id, False, CANNOT_DELETE)
