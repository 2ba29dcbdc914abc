"""LinkedIn Posts API: POST /rest/posts with the versioned headers; the post's URN comes
back in the `x-restli-id` header (the body is empty); DELETE /rest/posts/{urn}."""

from __future__ import annotations

import re
from urllib.parse import quote

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
    send,
    text_too_long,
    with_link,
)

LINKEDIN_API_BASE = "https://api.linkedin.com"
# LinkedIn's versioned APIs answer 426 for a version it has retired (about a year after).
LINKEDIN_VERSION = "202507"
TEXT_LIMIT = 3000
# `commentary` is "little text": these characters are markup unless escaped with a backslash.
_LITTLE_TEXT_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")


def little_text(text: str) -> str:
    return _LITTLE_TEXT_RESERVED.sub(r"\\\1", text)


class LinkedInAdapter:
    provider = "linkedin"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = LINKEDIN_API_BASE,
        *,
        version: str = LINKEDIN_VERSION,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.version = version

    def _headers(self, token: str) -> dict[str, str]:
        return bearer(token) | {
            "LinkedIn-Version": self.version,
            "X-Restli-Protocol-Version": "2.0.0",
        }

    def check(self, request: PublishRequest) -> SkipReason | None:
        if not request.account.get("author_urn"):
            return SkipReason("ACCOUNT_INCOMPLETE", "the LinkedIn connection has no author URN")
        commentary = little_text(with_link(request.text, request.link))
        too_long = text_too_long("LinkedIn", "commentary", len(commentary), TEXT_LIMIT)
        if too_long is not None:
            return too_long
        if request.media:
            # LinkedIn's image and video uploads (the Images / Videos APIs) are not built yet.
            return SkipReason("MEDIA_UNSUPPORTED", "media posts to LinkedIn are not supported")
        if not commentary:
            return SkipReason("MEDIA_REQUIRED", "LinkedIn needs text")
        return None

    async def publish(self, request: PublishRequest) -> PublishResult:
        body = {
            "author": request.account["author_urn"],
            "commentary": little_text(with_link(request.text, request.link)),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        response = await send(
            self.client,
            self.provider,
            "POST",
            f"{self.base}/rest/posts",
            json=body,
            headers=self._headers(request.access_token),
        )
        urn = response.headers.get("x-restli-id")
        if not urn:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no x-restli-id in the answer")
        url = f"https://www.linkedin.com/feed/update/{urn}/"
        return PublishResult(self.provider, PublishState.PUBLISHED, urn, url)

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        return remote

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        urn = quote(remote.remote_id or "", safe="")
        try:
            await send(
                self.client,
                self.provider,
                "DELETE",
                f"{self.base}/rest/posts/{urn}",
                headers=self._headers(access_token),
            )
        except PublishError as exc:
            if exc.status == 404:
                return DeleteResult(self.provider, remote.remote_id, True, "already deleted")
            raise
        return DeleteResult(self.provider, remote.remote_id, True)
