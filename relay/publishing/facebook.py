"""Facebook Pages (Graph API): POST /{page-id}/feed for text and links, /{page-id}/photos
for an image (by URL or uploaded), DELETE /{object-id}. The token is the Page's."""

from __future__ import annotations

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
)

FACEBOOK_API_BASE = "https://graph.facebook.com/v21.0"
TEXT_LIMIT = 63206


class FacebookAdapter:
    provider = "facebook"

    def __init__(self, client: httpx.AsyncClient, base_url: str = FACEBOOK_API_BASE) -> None:
        self.client = client
        self.base = base_url.rstrip("/")

    def check(self, request: PublishRequest) -> SkipReason | None:
        if not request.account.get("page_id"):
            return SkipReason("ACCOUNT_INCOMPLETE", "the Facebook connection has no Page id")
        too_long = text_too_long("Facebook", "message", len(request.text), TEXT_LIMIT)
        if too_long is not None:
            return too_long
        if len(request.media) > 1 or any(not m.is_image for m in request.media):
            # Page videos (/videos) and multi-photo posts are not built yet.
            return SkipReason("MEDIA_UNSUPPORTED", "Facebook Pages take 1 image here", 1)
        if not request.text and not request.link and not request.media:
            return SkipReason("MEDIA_REQUIRED", "Facebook needs a message, a link or an image")
        return None

    async def publish(self, request: PublishRequest) -> PublishResult:
        page_id = request.account["page_id"]
        headers = bearer(request.access_token)
        if not request.media:
            form = {"message": request.text} | ({"link": request.link} if request.link else {})
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/{page_id}/feed",
                data=form,
                headers=headers,
            )
            post_id = str(body_of(response).get("id", ""))
            return self._published(post_id, post_id)
        image = request.media[0]
        # A photo has no link field: the link goes in its caption.
        message = f"{request.text}\n\n{request.link}".strip() if request.link else request.text
        if image.url is not None and image.data is None:
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/{page_id}/photos",
                data={"url": image.url, "message": message},
                headers=headers,
            )
        else:
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/{page_id}/photos",
                data={"message": message},
                files={"source": (image.filename, image.data or b"", image.content_type)},
                headers=headers,
            )
        answer = body_of(response)
        # The photo's id is what DELETE takes; its post_id is what the Page shows.
        return self._published(str(answer.get("id", "")), str(answer.get("post_id", "")))

    def _published(self, object_id: str, post_id: str) -> PublishResult:
        if not object_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no id in the answer")
        url = f"https://www.facebook.com/{post_id or object_id}"
        return PublishResult(self.provider, PublishState.PUBLISHED, object_id, url)

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        return remote

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        # Graph answers a missing object and a missing permission alike (code 100,
        # subcode 33), so neither is taken for "already deleted".
        await send(
            self.client,
            self.provider,
            "DELETE",
            f"{self.base}/{remote.remote_id}",
            headers=bearer(access_token),
        )
        return DeleteResult(self.provider, remote.remote_id, True)
