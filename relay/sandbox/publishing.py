"""The publishing platforms sandbox: ONE HTTP server playing the publish, status and delete
APIs of the six platforms the publishing capability posts to (X, LinkedIn, Facebook Pages,
Instagram, YouTube, TikTok), since none can be reached from here without credentials.

The tests run it in a thread (`PublishingSandbox(port=0).run_in_thread()`); `relay dev`
runs it (`plan`) in development with SANDBOX=auto for each platform the OAuth providers
sandbox stands in for (no `<KEY>_CLIENT_ID`/`_SECRET` of its own, no PROVIDERS_FILE), as that
sandbox's token sink, and hands the worker and the API `<PROVIDER>_API_BASE` =
`http://host:port` (scheme, host and port only, like every `*_API_BASE`: `environment()`).
Each platform keeps the path its real API uses, so the base shaped as the real one, version
prefix included, is the real one with the scheme, host and port swapped (`bases()`):

    provider   real base                              sandbox base
    twitter    https://api.x.com                      http://host:port
    linkedin   https://api.linkedin.com               http://host:port
    facebook   https://graph.facebook.com/v21.0       http://host:port/v21.0
    instagram  https://graph.instagram.com/v21.0      http://host:port/v21.0
    youtube    https://youtube.googleapis.com/        http://host:port/
    tiktok     https://open.tiktokapis.com            http://host:port

(The Graph version is the catalog's, v21.0; any `vN.M` is served.) Facebook and Instagram
share the Graph paths here: the token tells them apart, as the two hosts do in reality.

YouTube through google-api-python-client: `api_endpoint` does NOT work for uploads against
an http base, because the library builds the media URL from the discovery document's
rootUrl and then swaps only its netloc (`_fix_up_media_path_base_url`), keeping `https`.
So the base is the discovery document's rootUrl, replaced in the bundled document, which is
the same code path in production (rootUrl `https://youtube.googleapis.com/`):

    doc = json.loads(googleapiclient.discovery_cache.get_static_doc("youtube", "v3"))
    youtube = build_from_document(doc | {"rootUrl": YOUTUBE_API_BASE, "baseUrl":
                                         YOUTUBE_API_BASE}, credentials=credentials)

Routes (the platforms' paths and shapes):

  X (API v2; the media upload is X's current v2 one: the dedicated initialize / append /
  finalize endpoints, the one-shot multipart form for images, and STATUS by GET; the
  older `command=INIT|APPEND|FINALIZE` form of POST /2/media/upload is answered too)
    POST   /2/tweets                         {text, media?: {media_ids}} → 201 {data: {id,
                                             text, edit_history_tweet_ids}}
    DELETE /2/tweets/{id}                    → {data: {deleted: true}}
    POST   /2/media/upload                   multipart {media, media_category} → {data:
                                             {id, media_key, size, expires_after_secs}}
    POST   /2/media/upload/initialize        {media_type, total_bytes, media_category}
    POST   /2/media/upload/{id}/append       multipart {media, segment_index}
    POST   /2/media/upload/{id}/finalize     video/GIF: processing_info {state: pending}
    GET    /2/media/upload?command=STATUS&media_id=   processing_info in_progress →
                                             succeeded (or failed)
  LinkedIn (needs `LinkedIn-Version: YYYYMM` and `X-Restli-Protocol-Version: 2.0.0`)
    POST   /rest/posts                       {author, commentary, visibility,
                                             distribution, lifecycleState, content?} → 201,
                                             empty body, `x-restli-id: urn:li:share:…`
    GET    /rest/posts/{urn}                 the post
    DELETE /rest/posts/{urn}                 → 204
  Facebook Pages (Graph; token as `access_token` parameter or Bearer header)
    GET    /{v}/me/accounts                  with a user token: the Pages the user manages,
           ?fields=&limit=&after=            {data: [{id, name, access_token (the Page
                                             token), category, category_list, tasks}],
                                             paging: {cursors: {before, after}, next?}}
                                             (`limit` 25, at most 100; `next` repeats the
                                             query as given)
    POST   /{v}/{page-id}/feed               {message?, link?} → {id: "{page}_{post}"}
    POST   /{v}/{page-id}/photos             {url | source (multipart), message?} →
                                             {id, post_id}
    GET    /{v}/{object-id}                  the post or photo
    DELETE /{v}/{object-id}                  → {success: true}
  /feed, /photos and DELETE take only the Page's own token: a user token or another Page's
  is 403 {error: {message: "(#200) … requires a Page access token …", type: OAuthException,
  code: 200}}. Each Facebook user manages one Page unless the control says otherwise; the
  user of SANDBOX_TOKENS["facebook"] manages the Page SANDBOX_PAGE_ID (104857600123456),
  other users a Page whose id follows from the user (`page_id_for`: the OAuth sandbox's
  subject, or for a token given without one, the token). Page tokens are minted here, one
  per Page, and do not expire (as those from a long-lived user token do not).
  Instagram (Graph, Instagram Login)
    POST   /{v}/{ig-user-id}/media           {image_url | video_url + media_type (REELS |
                                             VIDEO | STORIES), caption?} → {id: container}
    GET    /{v}/{container-id}?fields=status_code,status   IN_PROGRESS → FINISHED (or ERROR)
    POST   /{v}/{ig-user-id}/media_publish   {creation_id} → {id: media}; 400 code 9007
                                             while the container is not FINISHED
    DELETE /{v}/{media-id}                   400 "Unsupported delete request" as Instagram
                                             answers: its API cannot delete media
  YouTube Data API v3 (videos.insert as a resumable upload, as MediaFileUpload(resumable=
  True) drives it)
    POST   /upload/youtube/v3/videos?uploadType=resumable&part=…   JSON metadata,
           X-Upload-Content-Length/-Type → 200 with `Location` (the session URI)
    PUT    <session URI>                     Content-Range `bytes a-b/total` → 308 with
           `Range: bytes=0-b` until the last byte, then 200 with the video resource;
           `bytes */total` asks where the upload stands
    GET    /youtube/v3/videos?part=…&id=…    status.uploadStatus uploaded → processed,
                                             processingDetails.processingStatus
                                             processing → succeeded (or failed)
    DELETE /youtube/v3/videos?id=…           → 204
  TikTok (Content Posting API)
    POST   /v2/post/publish/video/init/      {post_info {title, privacy_level, …},
           source_info {source: FILE_UPLOAD, video_size, chunk_size, total_chunk_count} |
           {source: PULL_FROM_URL, video_url}} → {data: {publish_id, upload_url?}, error}
    PUT    /video/?upload_id=…&upload_token=…   (the upload_url; no bearer token) chunks
           with Content-Range → 206, the last 201
    POST   /v2/post/publish/status/fetch/    {publish_id} → PROCESSING_UPLOAD (or
           PROCESSING_DOWNLOAD) → PUBLISH_COMPLETE (or FAILED), with
           publicaly_available_post_id (TikTok's spelling)
    TikTok's API has no delete: the publishing capability reports it.

Access tokens: a request's token must be one this sandbox was told about FOR THAT PROVIDER:
SANDBOX_TOKENS (one per provider), the `tokens` it was started with, and those the OAuth
providers sandbox issues once `token_sink` is registered with it
(`OAuthProvidersSandbox.register_token_sink(publishing.token_sink)`); anything else is 401
in the platform's own error shape (X's problem JSON, LinkedIn's {status, serviceErrorCode,
code, message}, Graph's {error: {message, type: OAuthException, code: 190, fbtrace_id}},
Google's {error: {code, message, errors, status}}, TikTok's {data, error: {code:
access_token_invalid, message, log_id}}).

Text limits, each refused in the platform's shape: X 280 (code points; X's weighting of
URLs and CJK is not modelled), LinkedIn 3000, Facebook 63206, Instagram caption 2200,
YouTube title 100, TikTok title 2200 (UTF-16 code units).

Rate limits: a fixed window per provider and token (RATE_LIMITS, set per sandbox or through
the control); over it an API call answers 429 in the platform's shape, with X's
`x-rate-limit-limit/-remaining/-reset` (reset in epoch seconds, no Retry-After; X sends them
on every answer, and so does the sandbox) and
`Retry-After` (seconds) on the others.

Asynchronous processing (X video, Instagram containers, YouTube, TikTok) finishes
`processing_seconds` after the upload completes; it is computed when asked, no thread waits.

Controls for tests and `/sandbox` (not the platforms'; JSON, camelCase):

    GET  /_sandbox/posts          {data: {provider: [posts, deleted ones flagged]},
                                  requests: {provider: API requests seen}, publishes:
                                  {provider: publish calls accepted}}. A publish call is
                                  POST /2/tweets, POST /rest/posts, /feed, /photos,
                                  /media_publish, a completed YouTube upload, and TikTok's
                                  init (listed from then on under the id PUBLISH_COMPLETE
                                  will give)
    POST /_sandbox/tokens         {provider, token, expiresAt?, subject?} direct, or the
                                  OAuth sandbox's token-sink notices as they are ({event:
                                  issued | revoked, provider, accessToken, expiresAt,
                                  subject}); tokens of other providers are ignored
                                  ({accepted: false}). A Facebook token is `subject`'s user
                                  token
    POST /_sandbox/facebook-pages {user | token, count}: the Facebook user (a subject, or the
                                  user of a user token) manages `count` Pages from now on
                                  (0: none; the first ones keep their ids and tokens) →
                                  {user, pages: [{id, name}]}
    POST /_sandbox/faults         {provider, count, status? (503), retryAfter? (1)}: the next
                                  `count` API calls to `provider` answer `status`
    GET|POST /_sandbox/rate-limits   show / set {provider, limit, windowSeconds}
    POST /_sandbox/reset-limits   forget every rate-limit window
    POST /_sandbox/processing     {seconds?, provider?, failNext?}: the processing delay;
                                  the next `failNext` media of `provider` fail processing
    POST /_sandbox/processing/finish  {provider, id, outcome?: succeeded (default) | failed}:
                                  the processing of a media, or of a post's (YouTube video,
                                  TikTok publish), ends now so; 404 for no such media, 409
                                  while its upload is incomplete or once it has ended

In /_sandbox/posts each post also has `status` (published, processing or failed: its media's
processing, for YouTube and TikTok), `processingId`, `account` (the Page a Facebook post is
on, a LinkedIn post's author, the Instagram user in the publish path) and, for Facebook,
`tokenSha256` (the SHA-256 of the token it was made with: its Page's); `processing` lists every media that
is processed (X video and GIF, Instagram containers, YouTube videos, TikTok publishes),
newest first, with `status` uploading, processing, succeeded or failed.

Not modelled: X's duplicate-content refusal and weighted text length, LinkedIn image and
video uploads, Facebook scheduled/unpublished posts, Page roles beyond "manages" and Page
tokens' dependence on the user token (they outlive its revocation here), Instagram
carousels and its 25-posts-a-day limit, YouTube's quota units, TikTok's direct-post audit
and creator info. State lives in memory; uploaded bytes are counted, not kept. No token is
logged, and none is echoed but the Page tokens /me/accounts hands out (and one a
/me/accounts query carried, repeated in its `next` as Graph does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import secrets
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import quote, unquote, urlencode, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.sandbox.google_calendar import GoogleError
from relay.sandbox.oauth_providers import sandboxed_providers
from relay.sandbox.server import AppServer, free_port, port_open, wait_for_port
from relay.settings import Settings

logger = logging.getLogger(__name__)

PROVIDERS = ("twitter", "linkedin", "facebook", "instagram", "youtube", "tiktok")
# The token each provider accepts unless told otherwise; they open nothing but this sandbox.
SANDBOX_TOKENS = {p: f"relay-sandbox-{p}-token" for p in PROVIDERS}
TEXT_LIMITS = {
    "twitter": 280,
    "linkedin": 3000,
    "facebook": 63206,
    "instagram": 2200,
    "youtube": 100,
    "tiktok": 2200,
}
GRAPH_VERSION = "v21.0"  # the catalog's
# The Facebook user of SANDBOX_TOKENS["facebook"] (and of tokens given without a subject
# the user is derived from the token), and that user's one Page.
SANDBOX_USER = "sandbox-user"
SANDBOX_PAGE_ID = "104857600123456"
PAGES_LIMIT = 20
# /me/accounts: Pages per answer unless `limit` says (Graph's default), and at most.
ACCOUNTS_DEFAULT_LIMIT = 25
ACCOUNTS_MAX_LIMIT = 100
YOUTUBE_ROOT = "/"
# (requests, window seconds) per provider and token, loosely after the platforms' documented
# user limits, kept wide enough that a development session's polling does not trip them.
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "twitter": (300, 900.0),
    "linkedin": (500, 86400.0),
    "facebook": (200, 3600.0),
    "instagram": (200, 3600.0),
    "youtube": (600, 60.0),
    "tiktok": (600, 60.0),
}
PROCESSING_SECONDS = 2.0
DEFAULT_RETRY_AFTER_SECONDS = 1
READY_SECONDS = 30
X_MEDIA_EXPIRES_SECONDS = 86400
X_CHECK_AFTER_SECONDS = 1
LINKEDIN_VERSION = re.compile(r"20\d{4}(\.\d{2})?")
LINKEDIN_VISIBILITY = ("PUBLIC", "CONNECTIONS", "LOGGED_IN", "CONTAINER")
IG_MEDIA_TYPES = ("IMAGE", "VIDEO", "REELS", "STORIES")
TIKTOK_PRIVACY = (
    "PUBLIC_TO_EVERYONE",
    "MUTUAL_FOLLOW_FRIENDS",
    "FOLLOWER_OF_CREATOR",
    "SELF_ONLY",
)
TIKTOK_MIN_CHUNK = 5 * 1024 * 1024
TIKTOK_MAX_CHUNK = 64 * 1024 * 1024
_GRAPH_VERSION = re.compile(r"v\d+\.\d+")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_CONTENT_RANGE_QUERY = re.compile(r"bytes \*/(\d+|\*)")
_YOUTUBE_ID = string.ascii_letters + string.digits + "-_"
# Media no platform processes: an X image is ready once its bytes are in.
_UNPROCESSED = frozenset({"image"})
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


# --- errors in each platform's shape --------------------------------------------------------


class PlatformError(Exception):
    """A refusal already shaped as the platform answers it."""

    def __init__(
        self, status: int, body: dict[str, Any] | None, headers: Mapping[str, str]
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers)

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, self.status, headers=self.headers)


def _log_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


def refusal(
    provider: str,
    status: int,
    message: str,
    *,
    field_name: str | None = None,
    code: str | int | None = None,
    subcode: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> PlatformError:
    """`status` with `message` in `provider`'s error shape; `code` is the platform's own
    (LinkedIn's code string, Graph's numeric code, Google's reason, TikTok's code)."""
    headers = dict(headers or {})
    reason = _REASONS.get(status, "Error")
    if provider == "twitter":
        if status == 400 and field_name is not None:
            body: dict[str, Any] = {
                "errors": [{"parameters": {field_name: []}, "message": message}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            }
        else:
            kind = str(code) if code is not None else "about:blank"
            body = {"title": reason, "detail": message, "type": kind, "status": status}
        return PlatformError(status, body, headers)
    if provider == "linkedin":
        body = {"status": status, "message": message}
        if code is not None:
            body["code"] = code
        if subcode is not None:
            body["serviceErrorCode"] = subcode
        if field_name is not None:
            body["errorDetails"] = {
                "inputErrors": [
                    {
                        "description": message,
                        "input": {"inputPath": {"fieldPath": field_name}},
                        "code": code or "INVALID_VALUE",
                    }
                ]
            }
        return PlatformError(status, body, headers)
    if provider in ("facebook", "instagram"):
        error: dict[str, Any] = {
            "message": message,
            "type": "OAuthException" if status in (400, 401, 429) else "GraphMethodException",
            "code": code if code is not None else 100,
            "fbtrace_id": secrets.token_urlsafe(16),
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        return PlatformError(status, {"error": error}, headers)
    if provider == "youtube":
        google = GoogleError(
            status,
            message,
            str(code) if code is not None else None,
            headers=headers,
            location=field_name,
        )
        return PlatformError(status, json.loads(bytes(google.response().body)), headers)
    body = {
        "data": {},
        "error": {"code": code or "invalid_params", "message": message, "log_id": _log_id()},
    }
    return PlatformError(status, body, headers)


def _unauthorized(provider: str) -> PlatformError:
    if provider == "twitter":
        return refusal("twitter", 401, "Unauthorized")
    if provider == "linkedin":
        return refusal(
            "linkedin", 401, "Invalid access token", code="INVALID_ACCESS_TOKEN", subcode=65600
        )
    if provider in ("facebook", "instagram"):
        return refusal(
            provider, 401, "Invalid OAuth access token - Cannot parse access token", code=190
        )
    if provider == "youtube":
        return refusal(
            "youtube",
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
            code="authError",
            field_name="Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )
    return refusal(
        "tiktok",
        401,
        "The access token is invalid or not found in the request.",
        code="access_token_invalid",
    )


def _rate_limited(provider: str, limit: int, reset_at: float, now: float) -> PlatformError:
    wait = max(1, math.ceil(reset_at - now))
    if provider == "twitter":
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(math.ceil(reset_at)),
        }
        return refusal("twitter", 429, "Too Many Requests", headers=headers)
    headers = {"Retry-After": str(wait)}
    if provider == "linkedin":
        return refusal(
            "linkedin",
            429,
            "Resource level throttle limit for calls to this resource is reached.",
            code="TOO_MANY_REQUESTS",
            subcode=101,
            headers=headers,
        )
    if provider in ("facebook", "instagram"):
        return refusal(provider, 429, "(#32) Page request limit reached", code=32, headers=headers)
    if provider == "youtube":
        return refusal(
            "youtube", 429, "Rate Limit Exceeded", code="rateLimitExceeded", headers=headers
        )
    return refusal(
        "tiktok",
        429,
        "The API rate limit was exceeded.",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _fault(provider: str, status: int, retry_after: int, now: float) -> PlatformError:
    if status == 429:
        return _rate_limited(provider, 0, now + retry_after, now)
    message = "The sandbox was told to fail this request"
    if provider in ("facebook", "instagram"):
        return refusal(provider, status, message, code=2)  # Graph's "service temporarily down"
    if provider == "tiktok":
        return refusal(provider, status, message, code="internal_error")
    if provider == "linkedin":
        return refusal(provider, status, message, code="INTERNAL_SERVER_ERROR")
    return refusal(provider, status, message)


def _too_long(provider: str, field_name: str, limit: int) -> PlatformError:
    if provider == "twitter":
        return refusal(
            "twitter",
            400,
            f"Your Tweet text is too long (over {limit} characters).",
            field_name=field_name,
        )
    if provider == "linkedin":
        return refusal(
            "linkedin",
            422,
            f"{field_name} length exceeds the maximum of {limit}",
            field_name=field_name,
            code="MAX_LENGTH_EXCEEDED",
        )
    if provider in ("facebook", "instagram"):
        return refusal(
            provider,
            400,
            f"(#100) Param {field_name} must be at most {limit} characters long.",
            code=100,
        )
    if provider == "youtube":
        return refusal(
            "youtube",
            400,
            "The request metadata specifies an invalid or empty video title.",
            code="invalidTitle",
        )
    return refusal(
        "tiktok", 400, f"{field_name} is longer than {limit} characters.", code="invalid_params"
    )


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def text_length(provider: str, text: str) -> int:
    """The length `provider` holds against its limit."""
    return _utf16_length(text) if provider == "tiktok" else len(text)


def _check_length(provider: str, field_name: str, text: str) -> None:
    if text_length(provider, text) > TEXT_LIMITS[provider]:
        raise _too_long(provider, field_name, TEXT_LIMITS[provider])


# --- ids -------------------------------------------------------------------------------------


def _snowflake() -> str:
    """An X-style 19-digit id (also LinkedIn's share ids and TikTok's post ids)."""
    return str(1_800_000_000_000_000_000 + secrets.randbelow(10**17))


def _digits(count: int, first: str = "1") -> str:
    return first + "".join(secrets.choice(string.digits) for _ in range(count - 1))


def _youtube_id() -> str:
    return "".join(secrets.choice(_YOUTUBE_ID) for _ in range(11))


def _digest(token: str) -> bytes:
    # Tokens are kept as their SHA-256: neither the store nor its timing holds them.
    return hashlib.sha256(token.encode("utf-8")).digest()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _graph_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# --- state -----------------------------------------------------------------------------------


@dataclass
class Post:
    """Anything published: a tweet, a LinkedIn share, a Page post or photo, an Instagram
    media, a YouTube video, a TikTok post."""

    provider: str
    id: str
    text: str
    created: float
    url: str
    media: list[str] = field(default_factory=list)
    deleted: bool = False
    resource: dict[str, Any] = field(default_factory=dict)
    # The media whose processing the post waits for (YouTube's video, TikTok's publish_id).
    processing: str | None = None
    # Who posted: the Page (Facebook), the author URN (LinkedIn), the IG user (Instagram).
    account: str | None = None
    # The SHA-256 of the token it was posted with (Facebook: its Page's token).
    token_sha256: str | None = None

    def public(self) -> dict[str, Any]:
        shown = {
            "provider": self.provider,
            "id": self.id,
            "text": self.text,
            "url": self.url,
            "media": list(self.media),
            "createdAt": _iso(self.created),
            "deleted": self.deleted,
            "account": self.account,
        }
        if self.token_sha256 is not None:
            shown["tokenSha256"] = self.token_sha256
        return shown


@dataclass
class FacebookPage:
    """A Page a Facebook user manages, and the Page token /me/accounts hands out for it."""

    id: str
    name: str
    token: str = field(repr=False)

    def account(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The Page as /me/accounts lists it."""
        entry = {
            "id": self.id,
            "name": self.name,
            "access_token": self.token,
            "category": "Software",
            "category_list": [{"id": "2211", "name": "Software"}],
            "tasks": ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING", "MODERATE", "MANAGE"],
        }
        if fields is None:
            return entry
        return {"id": self.id} | {f: entry[f] for f in fields if f in entry}


def page_id_for(user: str, index: int) -> str:
    """The `index`th Page of `user`: the same id for the same user in every sandbox."""
    if user == SANDBOX_USER and index == 0:
        return SANDBOX_PAGE_ID
    digest = hashlib.sha256(f"{user}:page:{index}".encode()).hexdigest()
    return "10" + str(int(digest, 16) % 10**13).zfill(13)


def token_sha256(token: str) -> str:
    """What /_sandbox/posts shows of the token a post was made with."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Processing:
    """Media a platform processes after it has all of it: done `ready` (epoch seconds) after
    the upload completes, failed if the control said so."""

    provider: str
    id: str
    kind: str
    total: int = 0
    received: int = 0
    ready: float | None = None
    fails: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    published: str | None = None

    def finished(self, now: float) -> bool:
        return self.ready is not None and now >= self.ready

    def status(self, now: float) -> str:
        """uploading (bytes still missing), processing, succeeded or failed."""
        if self.ready is None:
            return "uploading"
        if not self.finished(now):
            return "processing"
        return "failed" if self.fails else "succeeded"


@dataclass
class _Window:
    start: float
    count: int = 0


class PublishingState:
    """Every token, post, upload and counter the sandbox knows, behind one lock."""

    def __init__(
        self,
        *,
        tokens: Iterable[tuple[str, str]] = (),
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        processing_seconds: float = PROCESSING_SECONDS,
        latency_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        # Added to every platform request (not the controls): loopback answers in a
        # millisecond, a real platform in a few hundred (bench/publishing.py --latency).
        self.latency_seconds = latency_seconds
        self.clock = clock
        # SHA-256 of the token → (its provider, expiry in epoch seconds or None).
        self._tokens: dict[bytes, tuple[str, float | None]] = {}
        # Facebook: a user token's user; each user's Pages; a Page token's (Page, user).
        self._users: dict[bytes, str] = {}
        self._pages: dict[str, list[FacebookPage]] = {}
        self._page_tokens: dict[bytes, tuple[str, str]] = {}
        self._posts: dict[str, dict[str, Post]] = {p: {} for p in PROVIDERS}
        self._media: dict[str, Processing] = {}
        self.requests: Counter[str] = Counter()
        self.publishes: Counter[str] = Counter()
        self._limits = dict(RATE_LIMITS) | dict(rate_limits or {})
        self._windows: dict[tuple[str, bytes], _Window] = {}
        self._faults: dict[str, tuple[int, int, int]] = {}
        self._failing: Counter[str] = Counter()
        self.processing_seconds = processing_seconds
        for provider, token in SANDBOX_TOKENS.items():
            self.add_token(provider, token, subject=SANDBOX_USER)
        for provider, token in tokens:
            self.add_token(provider, token)

    def close(self) -> None:
        """Nothing to stop: the sandbox sends no callbacks."""

    # -- controls ---------------------------------------------------------------------------

    def add_token(
        self,
        provider: str,
        token: str,
        expires_at: float | None = None,
        subject: str | None = None,
    ) -> None:
        """`token` works for `provider` (until `expires_at`); a Facebook token is the user
        token of `subject` (the OAuth sandbox's), else of a user derived from the token."""
        with self._lock:
            digest = _digest(token)
            self._tokens[digest] = (provider, expires_at)
            if provider == "facebook":
                self._users[digest] = subject or f"user-{digest.hex()[:12]}"

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(_digest(token), None)

    # -- Facebook users and their Pages ---------------------------------------------------------

    def facebook_user(self, token: str | None) -> str | None:
        """The user whose (live) user token `token` is; None for a Page token or unknown."""
        if self.token_provider(token) != "facebook":
            return None
        with self._lock:
            return self._users.get(_digest(token or ""))

    def facebook_pages(self, user: str) -> list[FacebookPage]:
        """The Pages `user` manages: one unless set_facebook_pages said otherwise."""
        with self._lock:
            if user not in self._pages:
                self._set_pages_locked(user, 1)
            return list(self._pages[user])

    def set_facebook_pages(self, user: str, count: int) -> list[FacebookPage]:
        """`user` manages `count` Pages from now on (the first ones kept, with their ids and
        tokens; the Page tokens of the others stop working)."""
        with self._lock:
            self._set_pages_locked(user, count)
            return list(self._pages[user])

    def _set_pages_locked(self, user: str, count: int) -> None:
        pages = self._pages.get(user, [])
        for dropped in pages[count:]:
            self._tokens.pop(_digest(dropped.token), None)
            self._page_tokens.pop(_digest(dropped.token), None)
        kept = pages[:count]
        for index in range(len(kept), count):
            page = FacebookPage(
                page_id_for(user, index),
                "Sandbox Page" if index == 0 else f"Sandbox Page {index + 1}",
                f"EAAsbxpage{secrets.token_urlsafe(32)}",
            )
            self._tokens[_digest(page.token)] = ("facebook", None)
            self._page_tokens[_digest(page.token)] = (page.id, user)
            kept.append(page)
        self._pages[user] = kept

    def page_of_token(self, token: str | None) -> str | None:
        """The Page whose (live) Page token `token` is."""
        if self.token_provider(token) != "facebook":
            return None
        with self._lock:
            found = self._page_tokens.get(_digest(token or ""))
        return found[0] if found is not None else None

    def fail_next(self, provider: str, count: int, status: int, retry_after: int) -> None:
        with self._lock:
            self._faults[provider] = (count, status, retry_after)

    def set_rate_limit(self, provider: str, limit: int, window: float) -> None:
        with self._lock:
            self._limits[provider] = (limit, window)
            self._windows = {k: w for k, w in self._windows.items() if k[0] != provider}

    def rate_limits(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {p: {"limit": n, "windowSeconds": w} for p, (n, w) in self._limits.items()}

    def reset_limits(self) -> None:
        with self._lock:
            self._windows.clear()

    def set_processing(
        self, seconds: float | None, provider: str | None, fail_next: int | None
    ) -> None:
        with self._lock:
            if seconds is not None:
                self.processing_seconds = seconds
            if provider is not None and fail_next is not None:
                self._failing[provider] = fail_next

    def posts(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            return {
                "data": {
                    p: [self._shown(post, now) for post in self._posts[p].values()]
                    for p in PROVIDERS
                },
                "requests": {p: self.requests[p] for p in PROVIDERS},
                "publishes": {p: self.publishes[p] for p in PROVIDERS},
                "processing": [
                    self._shown_media(media, now)
                    for media in reversed(self._media.values())
                    if media.kind not in _UNPROCESSED
                ],
            }

    def _shown(self, post: Post, now: float) -> dict[str, Any]:
        """A post as the controls list it: `status` is published, processing or failed
        (the platform's processing of its media), `deleted` apart from it."""
        media = self._media.get(post.processing) if post.processing else None
        status = "published"
        if media is not None:
            status = {"succeeded": "published", "failed": "failed"}.get(
                media.status(now), "processing"
            )
        return post.public() | {"status": status, "processingId": post.processing}

    @staticmethod
    def _shown_media(media: Processing, now: float) -> dict[str, Any]:
        return {
            "provider": media.provider,
            "id": media.id,
            "kind": media.kind,
            "status": media.status(now),
            "published": media.published,
        }

    def finish_processing(self, provider: str, object_id: str, *, failed: bool) -> Processing:
        """End the processing of a media (or of a post's media) now, as it succeeds or fails.
        KeyError: no such media; ValueError: its upload is incomplete or it is done."""
        with self._lock:
            post = self._posts[provider].get(object_id)
            media_id = post.processing if post is not None and post.processing else object_id
            media = self._media.get(media_id)
            if media is None or media.provider != provider or media.kind in _UNPROCESSED:
                raise KeyError(object_id)
            if media.ready is None:
                raise ValueError("its upload is not complete yet")
            now = self.clock()
            if media.finished(now):
                raise ValueError(f"its processing already {media.status(now)}")
            media.ready = now
            media.fails = failed
            return media

    # -- what every API call goes through -----------------------------------------------------

    def token_provider(self, token: str | None) -> str | None:
        """The provider `token` was issued for, if it is known and alive."""
        if not token:
            return None
        with self._lock:
            provider, expires = self._tokens.get(_digest(token), (None, None))
        if provider is None or (expires is not None and expires <= self.clock()):
            return None
        return provider

    def enter(self, provider: str, token: str | None) -> tuple[int, int, float]:
        """Counts the request; then 401 for a token not `provider`'s, a pending fault, or
        429 over the token's window. Else (limit, remaining, reset in epoch seconds)."""
        with self._lock:
            self.requests[provider] += 1
            if self.token_provider(token) != provider:
                raise _unauthorized(provider)
            count, status, retry_after = self._faults.get(provider, (0, 0, 0))
            if count > 0:
                self._faults[provider] = (count - 1, status, retry_after)
                raise _fault(provider, status, retry_after, self.clock())
            limit, window = self._limits[provider]
            now = self.clock()
            key = (provider, _digest(token or ""))
            current = self._windows.get(key)
            if current is None or now - current.start >= window:
                current = self._windows[key] = _Window(now)
            current.count += 1
            if current.count > limit:
                raise _rate_limited(provider, limit, current.start + window, now)
            return limit, limit - current.count, current.start + window

    def count_request(self, provider: str) -> None:
        with self._lock:
            self.requests[provider] += 1

    # -- posts and media ------------------------------------------------------------------------

    def add_post(self, post: Post) -> Post:
        with self._lock:
            self._posts[post.provider][post.id] = post
            self.publishes[post.provider] += 1
        return post

    def post(self, provider: str, post_id: str) -> Post | None:
        with self._lock:
            return self._posts[provider].get(post_id)

    def new_media(self, provider: str, media_id: str, kind: str, total: int = 0) -> Processing:
        with self._lock:
            media = Processing(provider, media_id, kind, total=total)
            self._media[media_id] = media
            return media

    def media(self, media_id: str, provider: str) -> Processing | None:
        with self._lock:
            media = self._media.get(media_id)
        return media if media is not None and media.provider == provider else None

    def complete(self, media: Processing, *, processed: bool = True) -> None:
        """All bytes are in: processing starts now (or is done at once)."""
        with self._lock:
            if media.ready is not None:
                return
            media.ready = self.clock() + (self.processing_seconds if processed else 0.0)
            if processed and self._failing[media.provider] > 0:
                self._failing[media.provider] -= 1
                media.fails = True

    def upload(self, provider: str, upload_id: str | None) -> Processing | None:
        """The media whose upload session (YouTube's session URI, TikTok's upload_url) is
        `upload_id`."""
        if not upload_id:
            return None
        with self._lock:
            for media in self._media.values():
                if media.provider == provider and media.detail.get("upload_id") == upload_id:
                    return media
        return None

    def receive(self, media: Processing, first: int, data_length: int) -> None:
        with self._lock:
            media.received = max(media.received, first + data_length)


# --- HTTP plumbing ---------------------------------------------------------------------------

_Handler = Callable[[PublishingState, Request], Awaitable[Response]]


def _state(request: Request) -> PublishingState:
    state: PublishingState = request.app.state.publishing
    return state


def _route(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        if state.latency_seconds > 0 and not request.url.path.startswith("/_sandbox/"):
            await asyncio.sleep(state.latency_seconds)
        try:
            response = await handler(state, request)
        except PlatformError as exc:
            response = exc.response()
        response.headers.update(getattr(request.state, "rate_headers", {}))
        return response

    return endpoint


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _json_object(request: Request, provider: str) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if provider == "youtube":
            raise refusal("youtube", 400, "Parse Error", code="parseError")
        raise refusal(provider, 400, "The request body is not a JSON object", field_name="body")
    return body


async def _params(request: Request, provider: str) -> dict[str, Any]:
    """Graph's and X media's parameters: the query, then a form or JSON body over it."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        params.update({k: v for k, v in form.multi_items()})
    elif content_type.startswith("application/json"):
        params.update(await _json_object(request, provider))
    return params


async def _upload_size(value: Any) -> int:
    if isinstance(value, UploadFile):
        return len(await value.read())
    if isinstance(value, str | bytes):
        return len(value)
    return 0


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# --- X ---------------------------------------------------------------------------------------


def _x_enter(state: PublishingState, request: Request) -> None:
    """X's admission, with the x-rate-limit-* headers X puts on every answer."""
    limit, remaining, reset = state.enter("twitter", _bearer(request))
    request.state.rate_headers = {
        "x-rate-limit-limit": str(limit),
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(math.ceil(reset)),
    }


def _x_media_key(kind: str, media_id: str) -> str:
    prefix = {"video": "7", "gif": "16"}.get(kind, "3")
    return f"{prefix}_{media_id}"


def _x_kind(media_type: str, category: str) -> str:
    if media_type == "image/gif" or category == "tweet_gif":
        return "gif"
    if media_type.startswith("video/") or category in ("tweet_video", "amplify_video"):
        return "video"
    return "image"


def _x_processing(state: PublishingState, media: Processing) -> dict[str, Any] | None:
    if media.kind == "image":
        return None
    if not media.finished(state.clock()):
        left = (media.ready or 0) - state.clock()
        spent = 1 - left / state.processing_seconds if state.processing_seconds else 0
        return {
            "state": "in_progress",
            "check_after_secs": X_CHECK_AFTER_SECONDS,
            "progress_percent": max(0, min(99, int(100 * spent))),
        }
    if media.fails:
        return {
            "state": "failed",
            "progress_percent": 100,
            "error": {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"},
        }
    return {"state": "succeeded", "progress_percent": 100}


def _x_media_answer(state: PublishingState, media: Processing, *, pending: bool) -> Response:
    data: dict[str, Any] = {
        "id": media.id,
        "media_key": _x_media_key(media.kind, media.id),
        "size": media.received,
        "expires_after_secs": X_MEDIA_EXPIRES_SECONDS,
    }
    info = _x_processing(state, media)
    if info is not None:
        data["processing_info"] = (
            {"state": "pending", "check_after_secs": X_CHECK_AFTER_SECONDS} if pending else info
        )
    return JSONResponse({"data": data})


def _x_init(state: PublishingState, params: Mapping[str, Any]) -> Response:
    media_type = params.get("media_type")
    total = params.get("total_bytes")
    if isinstance(total, str) and total.isdigit():
        total = int(total)
    if not isinstance(media_type, str) or "/" not in media_type:
        raise refusal("twitter", 400, "media_type is required", field_name="media_type")
    if not _whole(total) or total == 0:
        raise refusal(
            "twitter", 400, "total_bytes must be a positive integer", field_name="total_bytes"
        )
    kind = _x_kind(media_type, str(params.get("media_category", "")))
    media = state.new_media("twitter", _snowflake(), kind, total)
    data = {
        "id": media.id,
        "media_key": _x_media_key(kind, media.id),
        "expires_after_secs": X_MEDIA_EXPIRES_SECONDS,
    }
    return JSONResponse({"data": data})


def _x_upload(state: PublishingState, media_id: object) -> Processing:
    media = state.media(str(media_id), "twitter") if media_id is not None else None
    if media is None:
        raise refusal("twitter", 400, "The media_id is not valid", field_name="media_id")
    return media


async def _x_append(state: PublishingState, media_id: object, params: Mapping[str, Any]) -> None:
    media = _x_upload(state, media_id)
    if media.ready is not None:
        raise refusal("twitter", 400, "The upload was already finalized", field_name="media_id")
    segment = params.get("segment_index")
    if not (isinstance(segment, str) and segment.isdigit()) and not _whole(segment):
        raise refusal("twitter", 400, "segment_index is required", field_name="segment_index")
    if "media" not in params and "media_data" not in params:
        raise refusal("twitter", 400, "media is required", field_name="media")
    size = await _upload_size(params.get("media", params.get("media_data")))
    state.receive(media, media.received, size)


def _x_finalize(state: PublishingState, media_id: object) -> Response:
    media = _x_upload(state, media_id)
    if media.received != media.total:
        raise refusal(
            "twitter",
            400,
            f"Segments do not add up to the provided total file "
            f"size ({media.received} of {media.total})",
            field_name="media_id",
        )
    state.complete(media, processed=media.kind != "image")
    return _x_media_answer(state, media, pending=True)


async def _x_media_upload(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    params = await _params(request, "twitter")
    command = str(params.get("command", "")).upper()
    if command == "INIT":
        return _x_init(state, params)
    if command == "APPEND":
        await _x_append(state, params.get("media_id"), params)
        return Response(status_code=204)
    if command == "FINALIZE":
        return _x_finalize(state, params.get("media_id"))
    if command:
        raise refusal(
            "twitter", 400, "command must be INIT, APPEND or FINALIZE", field_name="command"
        )
    # The one-shot form: the whole file in `media`, done at once for images.
    if "media" not in params:
        raise refusal("twitter", 400, "media is required", field_name="media")
    size = await _upload_size(params["media"])
    upload = params["media"]
    media_type = str(params.get("media_type") or getattr(upload, "content_type", "") or "")
    kind = _x_kind(media_type, str(params.get("media_category", "tweet_image")))
    media = state.new_media("twitter", _snowflake(), kind, size)
    state.receive(media, 0, size)
    state.complete(media, processed=kind != "image")
    return _x_media_answer(state, media, pending=True)


async def _x_media_status(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    query = request.query_params
    if query.get("command", "STATUS").upper() != "STATUS":
        raise refusal("twitter", 400, "command must be STATUS", field_name="command")
    media = _x_upload(state, query.get("media_id"))
    return _x_media_answer(state, media, pending=False)


async def _x_initialize(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    return _x_init(state, await _params(request, "twitter"))


async def _x_append_route(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    params = await _params(request, "twitter")
    await _x_append(state, request.path_params["media_id"], params)
    return JSONResponse({"data": {"expires_at": int(state.clock()) + X_MEDIA_EXPIRES_SECONDS}})


async def _x_finalize_route(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    return _x_finalize(state, request.path_params["media_id"])


async def _x_tweet(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    body = await _json_object(request, "twitter")
    text = body.get("text", "")
    media = body.get("media") or {}
    media_ids = media.get("media_ids", []) if isinstance(media, dict) else None
    if not isinstance(text, str):
        raise refusal("twitter", 400, "text must be a string", field_name="text")
    if not isinstance(media_ids, list) or not all(isinstance(m, str) for m in media_ids):
        raise refusal(
            "twitter", 400, "media.media_ids must be strings", field_name="media.media_ids"
        )
    if not text and not media_ids:
        raise refusal(
            "twitter",
            400,
            "A Tweet needs text or media.",
            field_name="text",
        )
    if len(media_ids) > 4:
        raise refusal("twitter", 400, "Up to 4 media are allowed", field_name="media.media_ids")
    _check_length("twitter", "text", text)
    for media_id in media_ids:
        upload = state.media(media_id, "twitter")
        info = _x_processing(state, upload) if upload is not None else None
        if upload is None or upload.ready is None or (info and info["state"] != "succeeded"):
            raise refusal(
                "twitter", 400, "Your media IDs are invalid.", field_name="media.media_ids"
            )
    tweet_id = _snowflake()
    state.add_post(
        Post(
            "twitter",
            tweet_id,
            text,
            state.clock(),
            f"https://x.com/i/web/status/{tweet_id}",
            media_ids,
        )
    )
    data = {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}
    return JSONResponse({"data": data}, 201)


async def _x_delete(state: PublishingState, request: Request) -> Response:
    _x_enter(state, request)
    tweet_id = request.path_params["tweet_id"]
    post = state.post("twitter", tweet_id)
    if post is None or post.deleted:
        return JSONResponse(
            {
                "errors": [
                    {
                        "value": tweet_id,
                        "detail": f"Could not find tweet with id: [{tweet_id}].",
                        "title": "Not Found Error",
                        "resource_type": "tweet",
                        "parameter": "id",
                        "resource_id": tweet_id,
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            },
            404,
        )
    post.deleted = True
    return JSONResponse({"data": {"deleted": True}})


# --- LinkedIn --------------------------------------------------------------------------------


def _linkedin_enter(state: PublishingState, request: Request) -> None:
    state.enter("linkedin", _bearer(request))
    version = request.headers.get("linkedin-version")
    if version is None:
        raise refusal(
            "linkedin",
            400,
            "A version must be present. Please specify a version by "
            "adding the LinkedIn-Version header.",
            code="VERSION_MISSING",
        )
    if not LINKEDIN_VERSION.fullmatch(version):
        raise refusal(
            "linkedin",
            426,
            f"Requested version {version} is not active",
            code="NONEXISTENT_VERSION",
        )
    if request.headers.get("x-restli-protocol-version") != "2.0.0":
        raise refusal(
            "linkedin",
            400,
            "X-Restli-Protocol-Version must be 2.0.0",
            code="INVALID_PROTOCOL_VERSION",
        )


def _required(body: Mapping[str, Any], name: str) -> Any:
    if name not in body:
        raise refusal(
            "linkedin",
            422,
            f"/{name} :: field is required but not found",
            field_name=name,
            code="FIELD_REQUIRED",
        )
    return body[name]


async def _linkedin_create(state: PublishingState, request: Request) -> Response:
    _linkedin_enter(state, request)
    body = await _json_object(request, "linkedin")
    author = _required(body, "author")
    if not (
        isinstance(author, str) and author.startswith(("urn:li:person:", "urn:li:organization:"))
    ):
        raise refusal(
            "linkedin",
            422,
            "author must be a person or organization URN",
            field_name="author",
            code="INVALID_VALUE",
        )
    commentary = body.get("commentary", "")
    if not isinstance(commentary, str):
        raise refusal("linkedin", 422, "commentary must be a string", field_name="commentary")
    _check_length("linkedin", "commentary", commentary)
    if _required(body, "visibility") not in LINKEDIN_VISIBILITY:
        raise refusal("linkedin", 422, "visibility is not valid", field_name="visibility")
    if not isinstance(_required(body, "distribution"), dict):
        raise refusal("linkedin", 422, "distribution must be an object", field_name="distribution")
    if _required(body, "lifecycleState") not in ("PUBLISHED", "DRAFT"):
        raise refusal("linkedin", 422, "lifecycleState is not valid", field_name="lifecycleState")
    urn = f"urn:li:share:{_snowflake()}"
    media = (
        body.get("content", {}).get("media", {}) if isinstance(body.get("content"), dict) else {}
    )
    media_ids = [str(media["id"])] if isinstance(media, dict) and "id" in media else []
    resource = dict(body) | {"id": urn, "createdAt": int(state.clock() * 1000)}
    state.add_post(
        Post(
            "linkedin",
            urn,
            commentary,
            state.clock(),
            f"https://www.linkedin.com/feed/update/{urn}/",
            media_ids,
            resource=resource,
            account=author,
        )
    )
    return Response(status_code=201, headers={"x-restli-id": urn})


def _linkedin_post(state: PublishingState, request: Request) -> Post:
    urn = unquote(request.path_params["urn"])
    post = state.post("linkedin", urn)
    if post is None or post.deleted:
        raise refusal("linkedin", 404, f"Not Found: {urn}", code="NOT_FOUND")
    return post


async def _linkedin_get(state: PublishingState, request: Request) -> Response:
    _linkedin_enter(state, request)
    return JSONResponse(_linkedin_post(state, request).resource)


async def _linkedin_delete(state: PublishingState, request: Request) -> Response:
    _linkedin_enter(state, request)
    _linkedin_post(state, request).deleted = True
    return Response(status_code=204)


# --- Facebook and Instagram (Graph) ----------------------------------------------------------


async def _graph_enter(
    state: PublishingState, request: Request, provider: str | None
) -> tuple[str, dict[str, Any]]:
    """The provider (given by the edge, or else by the token) and the request's parameters."""
    if not _GRAPH_VERSION.fullmatch(request.path_params["version"]):
        raise refusal("facebook", 400, "Unknown path components", code=2500)
    params = await _params(request, provider or "facebook")
    token = _bearer(request) or params.pop("access_token", None)
    params.pop("access_token", None)
    chosen = provider or state.token_provider(token)
    if chosen not in ("facebook", "instagram"):
        state.count_request("facebook")
        raise _unauthorized("facebook")
    state.enter(chosen, token)
    request.state.graph_token = token
    return chosen, params


def _page_token_required(page_id: str) -> PlatformError:
    """Graph's answer to a Page edge called without that Page's token (a user token, or
    another Page's)."""
    refused = refusal(
        "facebook",
        403,
        f"(#200) Publishing to or deleting from the Page {page_id} requires a Page access "
        "token of that Page",
        code=200,
    )
    assert refused.body is not None
    refused.body["error"]["type"] = "OAuthException"
    return refused


def _as_page(state: PublishingState, request: Request, page_id: str) -> str:
    """The request's token, which must be `page_id`'s Page token."""
    token: str | None = request.state.graph_token
    if token is None or state.page_of_token(token) != page_id:
        raise _page_token_required(page_id)
    return token


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode().rstrip("=")


def _index(cursor: object) -> int | None:
    if not isinstance(cursor, str) or not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    return int(text) if text.isdigit() else None


def _count(value: object, default: int, most: int) -> int:
    if isinstance(value, str) and value.isdigit():
        return max(1, min(most, int(value)))
    return default


async def _facebook_accounts(state: PublishingState, request: Request) -> Response:
    """GET /{v}/me/accounts: the Pages the token's user manages, each with its Page token;
    `limit` a page (25, at most 100), `after` the cursor of the last one seen."""
    _, params = await _graph_enter(state, request, "facebook")
    token: str | None = request.state.graph_token
    node = request.path_params["node_id"]
    if state.page_of_token(token) is not None:
        raise refusal(
            "facebook",
            400,
            "(#100) Tried accessing nonexisting field (accounts) on node type (Page)",
            code=100,
        )
    user = state.facebook_user(token)
    if user is None:
        raise _unauthorized("facebook")
    if node not in ("me", user):
        raise _unsupported("facebook", node, "get")
    pages = state.facebook_pages(user)
    limit = _count(params.get("limit"), ACCOUNTS_DEFAULT_LIMIT, ACCOUNTS_MAX_LIMIT)
    after = _index(params.get("after"))
    start = 0 if after is None else after + 1
    chunk = pages[start : start + limit]
    wanted = [f for f in str(params.get("fields", "")).split(",") if f] or None
    body: dict[str, Any] = {"data": [page.account(wanted) for page in chunk]}
    if chunk:
        last = start + len(chunk) - 1
        paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(last)}}
        if last + 1 < len(pages):
            # Graph repeats the query as it was given (a token in it included).
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
            query.append(("after", _cursor(last)))
            paging["next"] = f"{_origin(request)}{request.url.path}?{urlencode(query)}"
        body["paging"] = paging
    return JSONResponse(body)


def _unsupported(provider: str, object_id: str, verb: str) -> PlatformError:
    return refusal(
        provider,
        400,
        f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation.",
        code=100,
        subcode=33,
    )


def _string_param(provider: str, params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise refusal(provider, 400, f"(#100) Param {name} must be a string", code=100)
    return value


async def _facebook_feed(state: PublishingState, request: Request) -> Response:
    _, params = await _graph_enter(state, request, "facebook")
    page_id = request.path_params["node_id"]
    token = _as_page(state, request, page_id)
    message = _string_param("facebook", params, "message") or ""
    link = _string_param("facebook", params, "link")
    if not message and not link:
        raise refusal("facebook", 400, "(#100) Missing message or attachment", code=100)
    _check_length("facebook", "message", message)
    post_id = f"{page_id}_{_digits(16)}"
    resource = {"id": post_id, "message": message, "created_time": _graph_time(state.clock())}
    if link:
        resource["link"] = link
    state.add_post(
        Post(
            "facebook",
            post_id,
            message,
            state.clock(),
            f"https://www.facebook.com/{post_id}",
            resource=resource,
            account=page_id,
            token_sha256=token_sha256(token),
        )
    )
    return JSONResponse({"id": post_id})


async def _facebook_photos(state: PublishingState, request: Request) -> Response:
    _, params = await _graph_enter(state, request, "facebook")
    page_id = request.path_params["node_id"]
    token = _as_page(state, request, page_id)
    message = _string_param("facebook", params, "message") or ""
    url = params.get("url")
    if not isinstance(url, str) and not isinstance(params.get("source"), UploadFile):
        raise refusal("facebook", 400, "(#324) Requires upload file", code=324)
    _check_length("facebook", "message", message)
    photo_id = _digits(16)
    post_id = f"{page_id}_{_digits(16)}"
    resource = {
        "id": photo_id,
        "post_id": post_id,
        "name": message,
        "created_time": _graph_time(state.clock()),
    }
    state.add_post(
        Post(
            "facebook",
            photo_id,
            message,
            state.clock(),
            f"https://www.facebook.com/photo.php?fbid={photo_id}",
            [url if isinstance(url, str) else "source"],
            resource=resource,
            account=page_id,
            token_sha256=token_sha256(token),
        )
    )
    return JSONResponse({"id": photo_id, "post_id": post_id})


def _ig_status(state: PublishingState, container: Processing) -> tuple[str, str]:
    if not container.finished(state.clock()):
        return "IN_PROGRESS", "In Progress: Media is still being processed."
    if container.fails:
        return "ERROR", "Error: 2207076 The video could not be processed."
    if container.published is not None:
        return "PUBLISHED", "Published"
    return "FINISHED", "Finished: Media has been uploaded and it is ready to be published."


async def _instagram_media(state: PublishingState, request: Request) -> Response:
    _, params = await _graph_enter(state, request, "instagram")
    caption = _string_param("instagram", params, "caption") or ""
    image_url = _string_param("instagram", params, "image_url")
    video_url = _string_param("instagram", params, "video_url")
    media_type = params.get("media_type", "VIDEO" if video_url else "IMAGE")
    if media_type not in IG_MEDIA_TYPES:
        raise refusal("instagram", 400, "(#100) Param media_type is not valid", code=100)
    if media_type == "IMAGE" and not image_url:
        raise refusal("instagram", 400, "(#100) The parameter image_url is required.", code=100)
    if media_type != "IMAGE" and not (video_url or image_url):
        raise refusal("instagram", 400, "(#100) The parameter video_url is required.", code=100)
    _check_length("instagram", "caption", caption)
    container = state.new_media("instagram", _digits(17, "1"), str(media_type))
    container.detail = {
        "caption": caption,
        "url": video_url or image_url,
        "owner": request.path_params["node_id"],
    }
    state.complete(container)
    return JSONResponse({"id": container.id})


async def _instagram_publish(state: PublishingState, request: Request) -> Response:
    _, params = await _graph_enter(state, request, "instagram")
    creation_id = params.get("creation_id")
    container = state.media(str(creation_id), "instagram") if creation_id else None
    if container is None:
        raise refusal(
            "instagram", 400, "(#100) Param creation_id is not a valid container", code=100
        )
    status, _ = _ig_status(state, container)
    if status == "IN_PROGRESS":
        raise refusal("instagram", 400, "Media ID is not available", code=9007, subcode=2207027)
    if status == "ERROR":
        raise refusal(
            "instagram",
            400,
            "The media could not be published: processing failed",
            code=9007,
            subcode=2207032,
        )
    if status == "PUBLISHED":
        raise refusal(
            "instagram",
            400,
            "The media container was already published",
            code=9007,
            subcode=2207008,
        )
    media_id = _digits(17, "1")
    container.published = media_id
    shortcode = "".join(secrets.choice(_YOUTUBE_ID) for _ in range(11))
    permalink = f"https://www.instagram.com/p/{shortcode}/"
    resource = {
        "id": media_id,
        "caption": container.detail["caption"],
        "media_type": "VIDEO" if container.kind in ("VIDEO", "REELS") else container.kind,
        "media_product_type": "REELS" if container.kind == "REELS" else "FEED",
        "permalink": permalink,
        "timestamp": _graph_time(state.clock()),
    }
    state.add_post(
        Post(
            "instagram",
            media_id,
            container.detail["caption"],
            state.clock(),
            permalink,
            [str(container.detail["url"])],
            resource=resource,
            account=str(container.detail["owner"]),
        )
    )
    return JSONResponse({"id": media_id})


def _graph_fields(resource: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    wanted = [f for f in str(params.get("fields", "")).split(",") if f]
    if not wanted:
        return dict(resource)
    return {"id": resource["id"]} | {f: resource[f] for f in wanted if f in resource}


async def _graph_object(state: PublishingState, request: Request) -> Response:
    provider, params = await _graph_enter(state, request, None)
    object_id = request.path_params["node_id"]
    if request.method == "DELETE":
        post = state.post(provider, object_id)
        if provider == "instagram" or post is None or post.deleted:
            # Instagram's API cannot delete media; the platform answers as for no object.
            raise _unsupported(provider, object_id, "delete")
        if post.account is not None:
            _as_page(state, request, post.account)
        post.deleted = True
        return JSONResponse({"success": True})
    container = state.media(object_id, "instagram") if provider == "instagram" else None
    if container is not None:
        status_code, status = _ig_status(state, container)
        resource = {"id": container.id, "status_code": status_code, "status": status}
        return JSONResponse(
            _graph_fields(resource, params | {"fields": params.get("fields") or "status_code"})
        )
    post = state.post(provider, object_id)
    if post is None or post.deleted:
        raise _unsupported(provider, object_id, "get")
    return JSONResponse(_graph_fields(post.resource, params))


# --- YouTube ---------------------------------------------------------------------------------


def _youtube_processing(state: PublishingState, video: Processing) -> tuple[str, dict[str, Any]]:
    """(status.uploadStatus, processingDetails) of an uploaded video now."""
    if not video.finished(state.clock()):
        return "uploaded", {"processingStatus": "processing"}
    if video.fails:
        return "failed", {
            "processingStatus": "failed",
            "processingFailureReason": "transcodeFailed",
        }
    return "processed", {"processingStatus": "succeeded"}


def _youtube_resource(state: PublishingState, video: Processing, parts: set[str]) -> dict[str, Any]:
    upload_status, processing = _youtube_processing(state, video)
    resource: dict[str, Any] = {
        "kind": "youtube#video",
        "etag": hashlib.sha256(f"{video.id}{upload_status}".encode()).hexdigest()[:27],
        "id": video.id,
    }
    if "snippet" in parts:
        resource["snippet"] = dict(video.detail["snippet"])
    if "status" in parts:
        status = dict(video.detail["status"]) | {"uploadStatus": upload_status}
        if upload_status == "failed":
            status["failureReason"] = "codec"
        resource["status"] = status
    if "processingDetails" in parts:
        resource["processingDetails"] = processing
    return resource


def _parts(value: str | None) -> set[str]:
    parts = {p.strip() for p in (value or "").split(",") if p.strip()}
    if not parts:
        raise refusal(
            "youtube",
            400,
            "No filter selected. Expected one of: id, chart, myRating",
            code="required",
            field_name="part",
        )
    return parts


async def _youtube_start(state: PublishingState, request: Request) -> Response:
    state.enter("youtube", _bearer(request))
    query = request.query_params
    if query.get("uploadType") != "resumable":
        raise refusal(
            "youtube",
            400,
            "Only uploadType=resumable is served by this sandbox",
            code="invalid",
            field_name="uploadType",
        )
    parts = _parts(query.get("part"))
    body = await _json_object(request, "youtube")
    snippet = body.get("snippet") or {}
    title = snippet.get("title") if isinstance(snippet, dict) else None
    if not isinstance(title, str) or not title.strip():
        raise refusal(
            "youtube",
            400,
            "The request metadata specifies an invalid or empty video title.",
            code="invalidTitle",
        )
    _check_length("youtube", "title", title)
    description = snippet.get("description", "")
    if not isinstance(description, str) or len(description.encode()) > 5000:
        raise refusal(
            "youtube",
            400,
            "The request metadata specifies an invalid video description.",
            code="invalidDescription",
        )
    status = body.get("status") or {}
    privacy = status.get("privacyStatus", "public") if isinstance(status, dict) else None
    if privacy not in ("public", "private", "unlisted"):
        raise refusal("youtube", 400, "Invalid privacy status.", code="invalidVideoMetadata")
    length = request.headers.get("x-upload-content-length")
    total = int(length) if length is not None and length.isdigit() else -1
    video = state.new_media("youtube", _youtube_id(), "video", total)
    video.detail = {
        "parts": sorted(parts),
        "snippet": {
            "publishedAt": _iso(state.clock()),
            "channelId": "UC" + "".join(secrets.choice(_YOUTUBE_ID) for _ in range(22)),
            "title": title,
            "description": description,
            "tags": snippet.get("tags", []),
            "categoryId": str(snippet.get("categoryId", "22")),
        },
        "status": {
            "privacyStatus": privacy,
            "license": "youtube",
            "embeddable": True,
            "publicStatsViewable": True,
        },
        "upload_id": secrets.token_urlsafe(24),
    }
    location = (
        f"{_origin(request)}/upload/youtube/v3/videos?uploadType=resumable"
        f"&part={quote(','.join(sorted(parts)))}&upload_id={video.detail['upload_id']}"
    )
    return Response(
        status_code=200,
        headers={"Location": location, "X-GUploader-UploadID": video.detail["upload_id"]},
    )


def _youtube_session(state: PublishingState, upload_id: str | None) -> Processing:
    video = state.upload("youtube", upload_id)
    if video is None:
        raise refusal("youtube", 404, "The upload session was not found.", code="notFound")
    return video


def _youtube_finish(state: PublishingState, video: Processing) -> Response:
    if video.ready is None:
        state.complete(video)
        state.add_post(
            Post(
                "youtube",
                video.id,
                video.detail["snippet"]["title"],
                state.clock(),
                f"https://www.youtube.com/watch?v={video.id}",
                processing=video.id,
            )
        )
    return JSONResponse(_youtube_resource(state, video, set(video.detail["parts"])))


def _resume_incomplete(received: int) -> Response:
    headers = {"Range": f"bytes=0-{received - 1}"} if received > 0 else {}
    return Response(status_code=308, headers=headers)


async def _youtube_chunk(state: PublishingState, request: Request) -> Response:
    # The session URI is the credential of a resumable upload; no bearer token is needed.
    state.count_request("youtube")
    video = _youtube_session(state, request.query_params.get("upload_id"))
    data = await request.body()
    content_range = request.headers.get("content-range", "")
    asked = _CONTENT_RANGE_QUERY.fullmatch(content_range)
    if asked is not None:
        if asked.group(1) != "*" and video.total < 0:
            video.total = int(asked.group(1))
        if video.ready is not None or (video.total >= 0 and video.received == video.total > 0):
            return _youtube_finish(state, video)
        return _resume_incomplete(video.received)
    match = _CONTENT_RANGE.fullmatch(content_range)
    if match is None and not content_range:
        first, last, total = 0, len(data) - 1, len(data)  # the whole file in one request
    elif match is not None:
        first, last, total = (int(g) for g in match.groups())
    else:
        raise refusal("youtube", 400, "Invalid Content-Range header.", code="badContent")
    if first != video.received or last - first + 1 != len(data):
        raise refusal(
            "youtube",
            400,
            f"Invalid Content-Range: expected bytes from {video.received}",
            code="badContent",
        )
    if video.total >= 0 and total != video.total:
        raise refusal(
            "youtube",
            400,
            "The upload's size does not match X-Upload-Content-Length.",
            code="badContent",
        )
    video.total = total
    state.receive(video, first, len(data))
    if video.received < total:
        return _resume_incomplete(video.received)
    return _youtube_finish(state, video)


async def _youtube_videos(state: PublishingState, request: Request) -> Response:
    state.enter("youtube", _bearer(request))
    query = request.query_params
    if request.method == "DELETE":
        video_id = query.get("id", "")
        post = state.post("youtube", video_id)
        if post is None or post.deleted:
            raise refusal(
                "youtube",
                404,
                "The video that you are trying to delete cannot be found.",
                code="videoNotFound",
                field_name="id",
            )
        post.deleted = True
        return Response(status_code=204)
    parts = _parts(query.get("part"))
    items = []
    for video_id in [i for i in query.get("id", "").split(",") if i]:
        post = state.post("youtube", video_id)
        video = state.media(video_id, "youtube")
        if post is not None and not post.deleted and video is not None:
            items.append(_youtube_resource(state, video, parts))
    return JSONResponse(
        {
            "kind": "youtube#videoListResponse",
            "etag": secrets.token_hex(13),
            "items": items,
            "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)},
        }
    )


# --- TikTok ----------------------------------------------------------------------------------


def _tiktok_answer(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"data": data, "error": {"code": "ok", "message": "", "log_id": _log_id()}})


def _tiktok_bad(message: str) -> PlatformError:
    return refusal("tiktok", 400, message, code="invalid_params")


def _tiktok_publish(
    state: PublishingState, publish_id: str, source: str, title: str, size: int = 0
) -> Processing:
    """The init is TikTok's publish call, so the post is listed (and counted) from it, under
    the id PUBLISH_COMPLETE will give."""
    media = state.new_media("tiktok", publish_id, source, size)
    media.published = _snowflake()
    url = f"https://www.tiktok.com/@sandbox/video/{media.published}"
    state.add_post(
        Post(
            "tiktok",
            media.published,
            title,
            state.clock(),
            url,
            [publish_id],
            processing=publish_id,
        )
    )
    return media


async def _tiktok_init(state: PublishingState, request: Request) -> Response:
    state.enter("tiktok", _bearer(request))
    body = await _json_object(request, "tiktok")
    post_info = body.get("post_info")
    source_info = body.get("source_info")
    if not isinstance(post_info, dict):
        raise _tiktok_bad("post_info is required")
    if not isinstance(source_info, dict):
        raise _tiktok_bad("source_info is required")
    title = post_info.get("title", "")
    if not isinstance(title, str):
        raise _tiktok_bad("post_info.title must be a string")
    _check_length("tiktok", "post_info.title", title)
    if post_info.get("privacy_level") not in TIKTOK_PRIVACY:
        raise _tiktok_bad("post_info.privacy_level is not valid")
    source = source_info.get("source")
    publish_id = f"v_pub_file~v2-1.{_digits(19, '7')}"
    if source == "FILE_UPLOAD":
        size = source_info.get("video_size")
        chunk = source_info.get("chunk_size")
        count = source_info.get("total_chunk_count")
        if not (_whole(size) and _whole(chunk) and _whole(count)) or 0 in (size, chunk, count):
            raise _tiktok_bad("video_size, chunk_size and total_chunk_count are required")
        whole = size < TIKTOK_MIN_CHUNK and chunk == size
        if not whole and not TIKTOK_MIN_CHUNK <= chunk <= TIKTOK_MAX_CHUNK:
            raise _tiktok_bad("chunk_size must be between 5 MB and 64 MB, or the video's size")
        if count != max(1, size // chunk):
            raise _tiktok_bad("total_chunk_count does not match video_size and chunk_size")
        media = _tiktok_publish(state, publish_id, "FILE_UPLOAD", title, size)
        upload_id = secrets.token_hex(16)
        media.detail = {
            "title": title,
            "chunk": chunk,
            "count": count,
            "upload_id": upload_id,
            "upload_token": secrets.token_urlsafe(24),
        }
        upload_url = (
            f"{_origin(request)}/video/?upload_id={upload_id}"
            f"&upload_token={media.detail['upload_token']}"
        )
        return _tiktok_answer({"publish_id": publish_id, "upload_url": upload_url})
    if source == "PULL_FROM_URL":
        video_url = source_info.get("video_url")
        if not (isinstance(video_url, str) and video_url.startswith(("http://", "https://"))):
            raise _tiktok_bad("source_info.video_url must be an http(s) URL")
        media = _tiktok_publish(state, publish_id, "PULL_FROM_URL", title)
        media.detail = {"title": title, "video_url": video_url}
        state.complete(media)
        return _tiktok_answer({"publish_id": publish_id})
    raise _tiktok_bad("source_info.source must be FILE_UPLOAD or PULL_FROM_URL")


def _tiktok_upload(state: PublishingState, upload_id: str | None, token: str | None) -> Processing:
    media = state.upload("tiktok", upload_id)
    if media is None or token != media.detail.get("upload_token"):
        raise refusal("tiktok", 404, "The upload was not found.", code="invalid_upload")
    return media


async def _tiktok_put(state: PublishingState, request: Request) -> Response:
    state.count_request("tiktok")
    query = request.query_params
    media = _tiktok_upload(state, query.get("upload_id"), query.get("upload_token"))
    data = await request.body()
    match = _CONTENT_RANGE.fullmatch(request.headers.get("content-range", ""))
    if match is None:
        raise _tiktok_bad("Content-Range is required")
    first, last, total = (int(g) for g in match.groups())
    chunk, count = int(media.detail["chunk"]), int(media.detail["count"])
    index = first // chunk
    expected_last = total - 1 if index == count - 1 else first + chunk - 1
    if (
        total != media.total
        or first % chunk
        or index >= count
        or last != expected_last
        or len(data) != last - first + 1
    ):
        raise _tiktok_bad("Content-Range does not match a chunk of this upload")
    media.detail.setdefault("chunks", set()).add(index)
    state.receive(media, first, len(data))
    if len(media.detail["chunks"]) < count:
        return Response(status_code=206)
    state.complete(media)
    return Response(status_code=201)


async def _tiktok_status(state: PublishingState, request: Request) -> Response:
    state.enter("tiktok", _bearer(request))
    body = await _json_object(request, "tiktok")
    publish_id = body.get("publish_id")
    media = state.media(str(publish_id), "tiktok") if isinstance(publish_id, str) else None
    if media is None:
        raise _tiktok_bad("publish_id is invalid")
    data: dict[str, Any] = {}
    if media.kind == "FILE_UPLOAD":
        data["uploaded_bytes"] = media.received
    if not media.finished(state.clock()):
        data["status"] = (
            "PROCESSING_UPLOAD" if media.kind == "FILE_UPLOAD" else ("PROCESSING_DOWNLOAD")
        )
        return _tiktok_answer(data)
    if media.fails:
        reason = "file_format_check_failed"
        return _tiktok_answer(data | {"status": "FAILED", "fail_reason": reason})
    return _tiktok_answer(
        data
        | {"status": "PUBLISH_COMPLETE", "publicaly_available_post_id": [int(str(media.published))]}
    )


# --- controls --------------------------------------------------------------------------------


def _control_error(message: str) -> PlatformError:
    return PlatformError(400, {"error": message}, {})


async def _control_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _control_error("the body must be a JSON object")
    return body


def _provider(body: Mapping[str, Any]) -> str:
    provider = body.get("provider")
    if provider not in PROVIDERS:
        raise _control_error(f"provider must be one of {', '.join(PROVIDERS)}")
    return str(provider)


async def _control_posts(state: PublishingState, request: Request) -> Response:
    return JSONResponse(state.posts())


async def _control_tokens(state: PublishingState, request: Request) -> Response:
    body = await _control_json(request)
    # {provider, token, expiresAt?} or the OAuth sandbox's token-sink notice, {event,
    # provider, accessToken, expiresAt, subject}; other providers' tokens are not taken.
    token = body.get("token", body.get("accessToken"))
    if not isinstance(token, str) or not token:
        raise _control_error("token must be a non-empty string")
    if body.get("provider") not in PROVIDERS:
        return JSONResponse({"accepted": False})
    provider = _provider(body)
    if body.get("event") == "revoked":
        state.revoke_token(token)
        return JSONResponse({"accepted": True})
    raw_expiry = body.get("expiresAt")
    try:
        expires = None if raw_expiry is None else datetime.fromisoformat(str(raw_expiry))
    except ValueError:
        raise _control_error("expiresAt must be an ISO 8601 time") from None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    subject = body.get("subject")
    state.add_token(
        provider,
        token,
        None if expires is None else expires.timestamp(),
        subject=subject if isinstance(subject, str) and subject else None,
    )
    return JSONResponse({"accepted": True, "provider": provider}, 201)


async def _control_facebook_pages(state: PublishingState, request: Request) -> Response:
    """{user | token, count}: the Facebook user (the OAuth sandbox's subject, or the user of
    a user token) manages `count` Pages from now on (0 for none, 2 for a second one)."""
    body = await _control_json(request)
    user, token, count = body.get("user"), body.get("token"), body.get("count")
    if isinstance(token, str) and token:
        user = state.facebook_user(token)
        if user is None:
            raise _control_error("token is not a live Facebook user token")
    if not isinstance(user, str) or not user:
        raise _control_error("user (a Facebook user) or token (a user token) is required")
    if not (_whole(count) and count <= PAGES_LIMIT):
        raise _control_error(f"count must be a whole number up to {PAGES_LIMIT}")
    pages = state.set_facebook_pages(user, count)
    return JSONResponse({"user": user, "pages": [{"id": p.id, "name": p.name} for p in pages]})


async def _control_faults(state: PublishingState, request: Request) -> Response:
    body = await _control_json(request)
    provider = _provider(body)
    count = body.get("count")
    status = body.get("status", 503)
    retry_after = body.get("retryAfter", DEFAULT_RETRY_AFTER_SECONDS)
    if not _whole(count):
        raise _control_error("count must be a whole number")
    if not (_whole(status) and 400 <= status <= 599):
        raise _control_error("status must be an HTTP error status")
    if not _whole(retry_after):
        raise _control_error("retryAfter must be a whole number of seconds")
    state.fail_next(provider, count, status, retry_after)
    return JSONResponse(
        {"provider": provider, "count": count, "status": status, "retryAfter": retry_after}
    )


async def _control_rate_limits(state: PublishingState, request: Request) -> Response:
    if request.method == "POST":
        body = await _control_json(request)
        provider = _provider(body)
        limit, window = body.get("limit"), body.get("windowSeconds")
        if not _whole(limit):
            raise _control_error("limit must be a whole number")
        if not (isinstance(window, int | float) and not isinstance(window, bool) and window > 0):
            raise _control_error("windowSeconds must be a positive number")
        state.set_rate_limit(provider, limit, float(window))
    return JSONResponse({"data": state.rate_limits()})


async def _control_reset_limits(state: PublishingState, request: Request) -> Response:
    state.reset_limits()
    return JSONResponse({"reset": True})


async def _control_processing(state: PublishingState, request: Request) -> Response:
    body = await _control_json(request)
    seconds = body.get("seconds")
    fail_next = body.get("failNext")
    if seconds is not None and not (
        isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0
    ):
        raise _control_error("seconds must be a non-negative number")
    if fail_next is not None and not _whole(fail_next):
        raise _control_error("failNext must be a whole number")
    provider = _provider(body) if fail_next is not None else None
    state.set_processing(None if seconds is None else float(seconds), provider, fail_next)
    return JSONResponse({"seconds": state.processing_seconds})


async def _control_latency(state: PublishingState, request: Request) -> Response:
    """{seconds}: added to every platform request from now on (0: none)."""
    seconds = (await _control_json(request)).get("seconds")
    if not (isinstance(seconds, int | float) and not isinstance(seconds, bool)) or not (
        0 <= seconds <= 30
    ):
        raise _control_error("seconds must be a number from 0 to 30")
    state.latency_seconds = float(seconds)
    return JSONResponse({"seconds": state.latency_seconds})


async def _control_finish(state: PublishingState, request: Request) -> Response:
    body = await _control_json(request)
    provider = _provider(body)
    object_id = body.get("id")
    outcome = body.get("outcome", "succeeded")
    if not isinstance(object_id, str) or not object_id:
        raise _control_error("id must be a post's or a media's id")
    if outcome not in ("succeeded", "failed"):
        raise _control_error("outcome must be succeeded or failed")
    try:
        media = state.finish_processing(provider, object_id, failed=outcome == "failed")
    except KeyError:
        raise PlatformError(
            404, {"error": f"no {provider} post or media {object_id} is processed"}, {}
        ) from None
    except ValueError as exc:
        raise PlatformError(409, {"error": f"{provider} {object_id}: {exc}"}, {}) from None
    return JSONResponse(
        {"provider": provider, "id": object_id, "media": media.id, "status": outcome}
    )


def create_app(state: PublishingState) -> Starlette:
    """The ASGI app serving `state`."""
    graph = "/{version}/{node_id}"
    routes = [
        # X
        Route("/2/tweets", _route(_x_tweet), methods=["POST"]),
        Route("/2/tweets/{tweet_id}", _route(_x_delete), methods=["DELETE"]),
        Route("/2/media/upload", _route(_x_media_upload), methods=["POST"]),
        Route("/2/media/upload", _route(_x_media_status), methods=["GET"]),
        Route("/2/media/upload/initialize", _route(_x_initialize), methods=["POST"]),
        Route("/2/media/upload/{media_id}/append", _route(_x_append_route), methods=["POST"]),
        Route("/2/media/upload/{media_id}/finalize", _route(_x_finalize_route), methods=["POST"]),
        # LinkedIn
        Route("/rest/posts", _route(_linkedin_create), methods=["POST"]),
        Route("/rest/posts/{urn:path}", _route(_linkedin_get), methods=["GET"]),
        Route("/rest/posts/{urn:path}", _route(_linkedin_delete), methods=["DELETE"]),
        # YouTube
        Route("/upload/youtube/v3/videos", _route(_youtube_start), methods=["POST"]),
        Route("/upload/youtube/v3/videos", _route(_youtube_chunk), methods=["PUT"]),
        Route("/youtube/v3/videos", _route(_youtube_videos), methods=["GET", "DELETE"]),
        # TikTok
        Route("/v2/post/publish/video/init/", _route(_tiktok_init), methods=["POST"]),
        Route("/v2/post/publish/status/fetch/", _route(_tiktok_status), methods=["POST"]),
        Route("/video/", _route(_tiktok_put), methods=["PUT"]),
        # Controls, before the Graph's catch-all paths
        Route("/_sandbox/posts", _route(_control_posts), methods=["GET"]),
        Route("/_sandbox/tokens", _route(_control_tokens), methods=["POST"]),
        Route("/_sandbox/faults", _route(_control_faults), methods=["POST"]),
        Route("/_sandbox/facebook-pages", _route(_control_facebook_pages), methods=["POST"]),
        Route("/_sandbox/rate-limits", _route(_control_rate_limits), methods=["GET", "POST"]),
        Route("/_sandbox/reset-limits", _route(_control_reset_limits), methods=["POST"]),
        Route("/_sandbox/processing", _route(_control_processing), methods=["POST"]),
        Route("/_sandbox/processing/finish", _route(_control_finish), methods=["POST"]),
        Route("/_sandbox/latency", _route(_control_latency), methods=["POST"]),
        # Facebook and Instagram (Graph)
        Route(f"{graph}/accounts", _route(_facebook_accounts), methods=["GET"]),
        Route(f"{graph}/feed", _route(_facebook_feed), methods=["POST"]),
        Route(f"{graph}/photos", _route(_facebook_photos), methods=["POST"]),
        Route(f"{graph}/media", _route(_instagram_media), methods=["POST"]),
        Route(f"{graph}/media_publish", _route(_instagram_publish), methods=["POST"]),
        Route(graph, _route(_graph_object), methods=["GET", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.publishing = state
    return app


# --- running it ------------------------------------------------------------------------------


# The hosts of the platforms' real APIs: a `<PROVIDER>_API_BASE` naming one of them is the
# default spelled out, not a server of the developer's.
REAL_HOSTS: dict[str, frozenset[str]] = {
    "twitter": frozenset({"api.x.com", "api.twitter.com", "upload.twitter.com"}),
    "linkedin": frozenset({"api.linkedin.com"}),
    "facebook": frozenset({"graph.facebook.com"}),
    "instagram": frozenset({"graph.instagram.com"}),
    "youtube": frozenset({"youtube.googleapis.com", "www.googleapis.com"}),
    "tiktok": frozenset({"open.tiktokapis.com"}),
}
NAMES = {
    "twitter": "X",
    "linkedin": "LinkedIn",
    "facebook": "Facebook",
    "instagram": "Instagram",
    "youtube": "YouTube",
    "tiktok": "TikTok",
}


def env_name(provider: str) -> str:
    """The setting that points the publishing code at `provider`'s API (TWITTER_API_BASE)."""
    return f"{provider.upper()}_API_BASE"


def configured_base(settings: Settings, provider: str) -> str | None:
    """`<PROVIDER>_API_BASE` as these settings hold it (None when unset, or when the settings
    have no such field yet)."""
    value = getattr(settings, f"{provider}_api_base", None)
    return value if isinstance(value, str) and value.strip() else None


def _own_server(settings: Settings, provider: str) -> bool:
    base = configured_base(settings, provider)
    return base is not None and urlsplit(base).hostname not in REAL_HOSTS[provider]


def sandboxed_platforms(settings: Settings) -> frozenset[str]:
    """The platforms `relay dev` points at the sandbox: in development with SANDBOX=auto,
    each one the OAuth providers sandbox stands in for (no `<KEY>_CLIENT_ID`/`_SECRET`, no
    PROVIDERS_FILE) and whose `<PROVIDER>_API_BASE` names no server of the developer's. The
    sandbox accepts only the OAuth sandbox's tokens, so a platform with real credentials
    stays real, as Google Calendar does."""
    if settings.sandbox != "auto" or settings.relay_env != "development":
        return frozenset()
    played = sandboxed_providers(settings)
    return frozenset(p for p in PROVIDERS if p in played and not _own_server(settings, p))


def wanted(settings: Settings) -> bool:
    """Some platform is sandboxed (`sandboxed_platforms`)."""
    return bool(sandboxed_platforms(settings))


@dataclass
class PublishingSandbox:
    """One publishing platforms sandbox server: its command, the settings that point Relay
    at it, and a way to run it in this process (tests). `port=0` with `run_in_thread` binds
    a free port."""

    port: int = field(default_factory=free_port)
    tokens: tuple[tuple[str, str], ...] = ()
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    processing_seconds: float = PROCESSING_SECONDS
    latency_seconds: float = 0.0
    host: str = "127.0.0.1"
    # The platforms Relay is pointed here for (None: all six); the others keep their APIs.
    providers: frozenset[str] | None = None

    @property
    def api_base(self) -> str:
        """Scheme, host and port: where the controls hang off."""
        return f"http://{self.host}:{self.port}"

    def stands_in_for(self) -> list[str]:
        """The platforms this sandbox plays for Relay, in PROVIDERS' order."""
        return [p for p in PROVIDERS if self.providers is None or p in self.providers]

    def bases(self) -> dict[str, str]:
        """Each provider's API base on this sandbox shaped as its real one, version
        prefix included (what an adapter built by hand takes)."""
        return {
            "twitter": self.api_base,
            "linkedin": self.api_base,
            "facebook": f"{self.api_base}/{GRAPH_VERSION}",
            "instagram": f"{self.api_base}/{GRAPH_VERSION}",
            "youtube": f"{self.api_base}{YOUTUBE_ROOT}",
            "tiktok": self.api_base,
        }

    def command(self) -> list[str]:
        """The command line; extra tokens are registered through the control, not put on it."""
        command = [sys.executable, "-m", "relay.sandbox.publishing", "--port", str(self.port)]
        command += ["--host", self.host, "--processing-seconds", str(self.processing_seconds)]
        if self.latency_seconds > 0:
            command += ["--latency-seconds", str(self.latency_seconds)]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point the publishing code here:
        `<PROVIDER>_API_BASE` per platform played, scheme, host and port only like every
        `*_API_BASE` (the publishing code appends the Graph version and the paths)."""
        return {env_name(p): self.api_base for p in self.stands_in_for()}

    def state(self) -> PublishingState:
        return PublishingState(
            tokens=self.tokens,
            rate_limits=self.rate_limits,
            processing_seconds=self.processing_seconds,
            latency_seconds=self.latency_seconds,
        )

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the publishing sandbox", timeout)

    @property
    def token_sink(self) -> str:
        """The URL to hand `OAuthProvidersSandbox.register_token_sink` so the tokens it
        issues for the six platforms work here."""
        return f"{self.api_base}/_sandbox/tokens"

    def register_token(self, provider: str, token: str) -> None:
        """Have the running sandbox accept `token` for `provider`."""
        response = httpx.post(self.token_sink, json={"provider": provider, "token": token})
        response.raise_for_status()

    def run_in_thread(self) -> PublishingServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return PublishingServer(self).start()


class PublishingServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: PublishingSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "publishing", self.state.close
        )
        sandbox.port = self._server.port

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> PublishingServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> PublishingServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> PublishingSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (every platform real)."""
    platforms = sandboxed_platforms(settings)
    return PublishingSandbox(providers=platforms) if platforms else None


def describe(settings: Settings, sandbox: PublishingSandbox | None) -> str:
    """The banner's line for the publishing platforms."""
    if sandbox is not None:
        played = sandbox.stands_in_for()
        real = [NAMES[p] for p in PROVIDERS if p not in played]
        line = f"sandboxed (local {', '.join(NAMES[p] for p in played)} at {sandbox.api_base}"
        return line + (f"; real: {', '.join(real)})" if real else ")")
    if settings.providers_file is not None:
        return f"real (connections through PROVIDERS_FILE {settings.providers_file})"
    real = [NAMES[p] for p in PROVIDERS if p in settings.oauth_clients]
    if not real:
        return (
            "not configured (set <PROVIDER>_CLIENT_ID and <PROVIDER>_CLIENT_SECRET per "
            "platform, or SANDBOX=auto in development)"
        )
    return f"real ({', '.join(real)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.publishing",
        description="Relay's local publishing platforms sandbox.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--processing-seconds", type=float, default=PROCESSING_SECONDS)
    parser.add_argument(
        "--latency-seconds", type=float, default=0.0, help="added to every platform request"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="publishing-sandbox: %(message)s")
    sandbox = PublishingSandbox(
        port=args.port,
        host=args.host,
        processing_seconds=args.processing_seconds,
        latency_seconds=args.latency_seconds,
    )
    uvicorn.run(create_app(sandbox.state()), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
