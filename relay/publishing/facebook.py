"""Facebook Pages (Graph API): POST /{page-id}/feed for text and links, /{page-id}/photos
for an image (by URL or uploaded), DELETE /{object-id}.

Graph takes Page posts only with the Page's own access token. The connection holds the
user's long-lived token, so `publish` and `delete` first read the Pages the user manages
with it, `GET /me/accounts?fields=id,name,access_token` (following `paging.next` a few
pages at most), and pick one: the Page the connection's metadata names (`pageId`), else
the user's only Page. No Page, several and no choice, or a named Page the user does not
manage is a PERMANENT `PublishError` whose `platform_code` is ACCOUNT_INCOMPLETE (the
target's error code) and whose message says which. The Page token is read for each call
and never kept: one from a long-lived user token does not expire, but reading it each
time follows the user's current Page roles, and when the user token expires the
connection is NEEDS_REAUTH (docs/oauth.md). It never leaves this module: not in results,
messages or logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from relay.publishing.adapters import (
    ACCOUNT_INCOMPLETE,
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
# /me/accounts: Pages per answer, and answers followed (`paging.next`) before giving up.
ACCOUNTS_PAGE_SIZE = 100
ACCOUNTS_MAX_READS = 5


@dataclass(frozen=True)
class Page:
    """A Page the user manages, with its token (kept out of reprs)."""

    id: str
    name: str
    access_token: str

    def __repr__(self) -> str:
        return f"Page(id={self.id!r})"


class FacebookAdapter:
    provider = "facebook"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = FACEBOOK_API_BASE,
        *,
        accounts_page_size: int = ACCOUNTS_PAGE_SIZE,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.accounts_page_size = accounts_page_size

    def check(self, request: PublishRequest) -> SkipReason | None:
        too_long = text_too_long("Facebook", "message", len(request.text), TEXT_LIMIT)
        if too_long is not None:
            return too_long
        if len(request.media) > 1 or any(not m.is_image for m in request.media):
            # Page videos (/videos) and multi-photo posts are not built yet.
            return SkipReason("MEDIA_UNSUPPORTED", "Facebook Pages take 1 image here", 1)
        if not request.text and not request.link and not request.media:
            return SkipReason("MEDIA_REQUIRED", "Facebook needs a message, a link or an image")
        return None

    # --- the Page and its token ----------------------------------------------------------

    async def _pages(self, user_token: str) -> list[Page]:
        """The Pages the user manages (GET /me/accounts, a few answers at most)."""
        pages: list[Page] = []
        url: str | None = f"{self.base}/me/accounts"
        params: dict[str, Any] | None = {
            "fields": "id,name,access_token",
            "limit": str(self.accounts_page_size),
        }
        for _ in range(ACCOUNTS_MAX_READS):
            if url is None:
                break
            try:
                response = await send(
                    self.client,
                    self.provider,
                    "GET",
                    url,
                    params=params,
                    headers=bearer(user_token),
                )
            except PublishError as error:
                if error.status is None:
                    # A read that got no answer posted nothing: the ledger may call again.
                    error.connected = False
                raise
            answer = body_of(response)
            for item in answer.get("data") or []:
                if isinstance(item, dict) and item.get("id") and item.get("access_token"):
                    page_id, token = str(item["id"]), str(item["access_token"])
                    pages.append(Page(page_id, str(item.get("name") or ""), token))
            paging = answer.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            url, params = self._next(following)
        return pages

    def _next(self, following: object) -> tuple[str | None, dict[str, Any] | None]:
        """Graph's `paging.next` repeats the query, the user's token included: the token
        goes in the header instead (a URL may be logged), and only to Graph's own host."""
        if not isinstance(following, str) or not following:
            return None, None
        parts, base = urlsplit(following), urlsplit(self.base)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            return None, None
        query = {k: v for k, v in parse_qsl(parts.query) if k != "access_token"}
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), query

    async def page(self, user_token: str, page_id: str | None) -> Page:
        """The Page to act on: `page_id` (the connection's metadata) or the user's only one."""
        pages = await self._pages(user_token)
        if page_id:
            for found in pages:
                if found.id == page_id:
                    return found
            raise self._incomplete(
                f"the Facebook user does not manage the Page {page_id} named in the "
                "connection's metadata (pageId)"
            )
        if len(pages) == 1:
            return pages[0]
        if not pages:
            raise self._incomplete("the Facebook user manages no Page")
        raise self._incomplete(
            f"the Facebook user manages {len(pages)} Pages: set pageId in the connection's metadata"
        )

    def _incomplete(self, message: str) -> PublishError:
        return PublishError(
            self.provider, FailureKind.PERMANENT, message, platform_code=ACCOUNT_INCOMPLETE
        )

    # --- posts ------------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> PublishResult:
        page = await self.page(request.access_token, request.account.get("page_id"))
        headers = bearer(page.access_token)
        # The one request that creates the post comes last (adapters.py).
        if not request.media:
            form = {"message": request.text} | ({"link": request.link} if request.link else {})
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/{page.id}/feed",
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
                f"{self.base}/{page.id}/photos",
                data={"url": image.url, "message": message},
                headers=headers,
            )
        else:
            response = await send(
                self.client,
                self.provider,
                "POST",
                f"{self.base}/{page.id}/photos",
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
        """Deletes with the token of the Page the post is on: a feed post's id is
        `{page-id}_{post}`; a photo's id is bare, so its Page is the one in its URL
        (`…/{page-id}_{post}`), else the connection's Page."""
        page_id = _page_of(remote)
        page = await self.page(access_token, page_id)
        # Graph answers a missing object and a missing permission alike (code 100,
        # subcode 33), so neither is taken for "already deleted".
        await send(
            self.client,
            self.provider,
            "DELETE",
            f"{self.base}/{remote.remote_id}",
            headers=bearer(page.access_token),
        )
        return DeleteResult(self.provider, remote.remote_id, True)


def _page_of(remote: PublishResult) -> str | None:
    for candidate in (remote.remote_id or "", (remote.url or "").rsplit("/", 1)[-1]):
        page_id, sep, post = candidate.partition("_")
        if sep and page_id.isdigit() and post:
            return page_id
    return None
