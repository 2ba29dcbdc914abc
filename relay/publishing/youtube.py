"""YouTube Data API v3 through google-api-python-client: videos.insert as a resumable
upload, videos.list for processing status, videos.delete. The library is synchronous, so
each call runs in a thread with its own HTTP connection (httplib2 is not thread-safe).

The base URL is the discovery document's rootUrl (and baseUrl), set in the bundled
document: `client_options={"api_endpoint": …}` would keep https for the upload URL (see
relay/sandbox/publishing.py), and this is the same code path in production.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httplib2
import httpx
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import Resource, build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload, build_http

from relay.publishing.adapters import (
    DeleteResult,
    FailureKind,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
    SkipReason,
    classify,
    media_bytes,
    text_too_long,
    with_link,
)

YOUTUBE_API_BASE = "https://youtube.googleapis.com/"
TITLE_LIMIT = 100
DESCRIPTION_LIMIT_BYTES = 5000
# Resumable chunks must be multiples of 256 KiB.
CHUNK_BYTES = 32 * 256 * 1024
HTTP_TIMEOUT_SECONDS = 120.0
_FAILED_UPLOADS = ("failed", "rejected", "deleted")


def youtube_title(request: PublishRequest) -> str:
    if request.title is not None:
        return request.title.strip()
    return request.text.strip().split("\n", 1)[0].strip()


class YouTubeAdapter:
    provider = "youtube"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = YOUTUBE_API_BASE,
        *,
        privacy_status: str = "public",
        chunk_bytes: int = CHUNK_BYTES,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client  # fetches media given by URL
        root = base_url if base_url.endswith("/") else f"{base_url}/"
        document = json.loads(get_static_doc("youtube", "v3") or "{}")
        self._document = document | {"rootUrl": root, "baseUrl": root}
        self.privacy_status = privacy_status
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout

    def _service(self, token: str) -> Resource:
        # No refresh here: a 401 must reach the caller, which refreshes through the
        # connection's workflow (a token-only Credentials would raise RefreshError instead).
        # build_http: an httplib2.Http that does not follow the resumable upload's 308.
        transport = build_http()
        transport.timeout = self.timeout
        http = AuthorizedHttp(Credentials(token=token), http=transport, refresh_status_codes=())
        return build_from_document(self._document, http=http)

    def check(self, request: PublishRequest) -> SkipReason | None:
        title = youtube_title(request)
        if not title:
            return SkipReason("MEDIA_REQUIRED", "YouTube needs a title")
        too_long = text_too_long("YouTube", "title", len(title), TITLE_LIMIT)
        if too_long is not None:
            return too_long
        description = with_link(request.text, request.link)
        if len(description.encode()) > DESCRIPTION_LIMIT_BYTES:
            return SkipReason(
                "TEXT_TOO_LONG",
                f"YouTube allows at most {DESCRIPTION_LIMIT_BYTES} bytes in the description",
                DESCRIPTION_LIMIT_BYTES,
            )
        if len(request.media) != 1 or not request.media[0].is_video:
            return SkipReason("MEDIA_REQUIRED", "YouTube needs exactly one video")
        return None

    async def _run(self, call: Any) -> Any:
        try:
            return await asyncio.to_thread(call)
        except HttpError as exc:
            try:
                body = json.loads(exc.content)
            except ValueError:
                body = None
            raise classify(self.provider, exc.status_code, body, dict(exc.resp)) from None
        except (httplib2.HttpLib2Error, OSError) as exc:
            connected = not isinstance(exc, ConnectionRefusedError | httplib2.ServerNotFoundError)
            raise PublishError(
                self.provider,
                FailureKind.TRANSIENT,
                f"call failed ({type(exc).__name__})",
                connected=connected,
            ) from None

    async def publish(self, request: PublishRequest) -> PublishResult:
        video = request.media[0]
        content = await media_bytes(self.client, self.provider, video)
        body = {
            "snippet": {
                "title": youtube_title(request),
                "description": with_link(request.text, request.link),
            },
            "status": {"privacyStatus": self.privacy_status},
        }
        token = request.access_token

        def upload() -> dict[str, Any]:
            media = MediaIoBaseUpload(
                io.BytesIO(content),
                mimetype=video.content_type,
                chunksize=self.chunk_bytes,
                resumable=True,
            )
            insert = (
                self._service(token)
                .videos()
                .insert(part="snippet,status", body=body, media_body=media)
            )
            response = None
            while response is None:
                _, response = insert.next_chunk()
            return dict(response)

        resource = await self._run(upload)
        video_id = str(resource.get("id", ""))
        if not video_id:
            raise PublishError(self.provider, FailureKind.TRANSIENT, "no video id in the answer")
        processed = resource.get("status", {}).get("uploadStatus") == "processed"
        return PublishResult(
            self.provider,
            PublishState.PUBLISHED if processed else PublishState.PROCESSING,
            video_id,
            f"https://www.youtube.com/watch?v={video_id}",
            processing_id=video_id,
        )

    async def status(self, remote: PublishResult, access_token: str) -> PublishResult:
        video_id = remote.processing_id or remote.remote_id or ""

        def lookup() -> dict[str, Any]:
            listed = (
                self._service(access_token)
                .videos()
                .list(part="status,processingDetails", id=video_id)
                .execute()
            )
            return dict(listed)

        items = (await self._run(lookup)).get("items") or []
        if not items:
            return self._failed(remote, "the video is gone (deleted or removed by YouTube)")
        status = items[0].get("status", {})
        upload_status = status.get("uploadStatus")
        if upload_status == "processed":
            return PublishResult(
                self.provider, PublishState.PUBLISHED, remote.remote_id, remote.url, video_id
            )
        if upload_status in _FAILED_UPLOADS:
            reason = status.get("failureReason") or status.get("rejectionReason")
            return self._failed(remote, f"upload {upload_status}: {reason or 'no reason given'}")
        return remote

    def _failed(self, remote: PublishResult, reason: str) -> PublishResult:
        return PublishResult(
            self.provider,
            PublishState.FAILED,
            remote.remote_id,
            remote.url,
            remote.processing_id,
            failure_reason=reason,
        )

    async def delete(self, remote: PublishResult, access_token: str) -> DeleteResult:
        video_id = remote.remote_id or ""

        def delete() -> None:
            self._service(access_token).videos().delete(id=video_id).execute()

        try:
            await self._run(delete)
        except PublishError as exc:
            if exc.status == 404:
                return DeleteResult(self.provider, video_id, True, "already deleted")
            raise
        return DeleteResult(self.provider, video_id, True)
