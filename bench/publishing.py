"""Publishing benchmark: one publication to six platforms against the same provider requests
made directly, and a burst of 500 publications bounded by the configured rate limits.

Starts, as processes of their own: the Temporal dev server, `relay worker` and `relay api`
(bench/webhooks.py's Stack, a temporary DATA_DIR with SQLite), the S3 sandbox (moto), the
publishing platforms sandbox (`python -m relay.sandbox.publishing`) and the OAuth providers
sandbox (`python -m relay.sandbox.oauth_providers`, the platforms sandbox registered as its
token sink). The sandboxes are processes so that this process, which drives the load and
makes the direct requests, is never what is measured. Every connection is made through
Relay's OAuth flow (initiate → the sandbox's approval page → Relay's callback) and every
video stored as tests/publishing stores one (the object in the S3 sandbox, the files
capability's read model READY: `Relay.stored_video` says why not through POST /v1/files),
concurrently: that is setup, not measured.

1. Single publication, two shapes, each to the same user's six connections (a fresh user
   per run, so each connection's first publish: no limit applies):
     video   one short MP4: X (v2 chunked upload, STATUS, tweet), Instagram (REELS
             container, its status, media_publish, permalink), YouTube (resumable
             videos.insert, then videos.list until processed), TikTok (init with
             PULL_FROM_URL, then status/fetch); LinkedIn and Facebook SKIPPED (the adapters
             post no video to them yet: MEDIA_UNSUPPORTED)
     text    X (tweet), LinkedIn (/rest/posts), Facebook (/feed); Instagram, YouTube and
             TikTok SKIPPED (MEDIA_REQUIRED)
   Relay: from the start of POST /v1/publications to the publication's final write (its
   `updatedAt`, same machine clock; GET polled every 100 ms only to learn it is done). Direct:
   the adapters' requests with one aiohttp client, per platform in the same order and with
   the same waits (X's check_after_secs, Instagram's 5 s container poll, PUBLISH_POLL_INTERVAL
   before each YouTube/TikTok status read), the platforms concurrently as Relay runs them;
   the media fetched from S3 by each platform that uploads bytes, as the adapters do.
   Medians of --runs runs after one warm-up. Target: Relay ≤ 1.5 × direct.
2. Burst: 100 users × 6 connections; 500 publications (5 per user: video, text, video,
   text, video) POSTed at once. PUBLISH_RATE_LIMITS is `burst_limits(--window)`: the platforms'
   per-account limits with their windows scaled down to seconds (the think-time is scaled,
   not the size) so that each connection must wait out 1–2 windows. Reports per platform
   the publishes, when the last one landed against the earliest the limits allow (the
   "floor"), publishes per window, and the throughput against the configured aggregate
   limit; the time until every publication settled, the slowest publication, and each
   process's CPU seconds (the worker's share of the machine: /proc).

Run with `make bench-publishing` (never part of the test suite). Every process it starts is
stopped at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
from sqlalchemy.engine import Engine
from temporalio.client import Client

from bench.billing import register_search_attributes
from bench.webhooks import Stack
from relay.db import make_engine
from relay.files import repository as files
from relay.files.contracts import FileKind, FileStatus, FileView
from relay.publishing import instagram, linkedin, x
from relay.publishing.limits import parse_limits
from relay.publishing.providers import PUBLISHING_PROVIDERS
from relay.sandbox.oauth_providers import OAuthProvidersSandbox
from relay.sandbox.publishing import GRAPH_VERSION, SANDBOX_TOKENS, PublishingSandbox
from relay.sandbox.s3 import S3Sandbox

RESULTS = Path(__file__).resolve().parent / "results"
DEADLINE_SECONDS = 240
APP_REDIRECT = "http://localhost:3000/integrations/done"
# The direct client's LinkedIn author and Instagram user (the sandbox's standing tokens'
# accounts). Relay's connections carry no metadata: it finds the URN, the Instagram user and
# the Facebook Page from what the provider tells (docs/publishing.md, "Which account posts").
DIRECT_ACCOUNT = {
    "authorUrn": "urn:li:person:8675309",
    "igUserId": "17841400000000001",
}
SETUP_USERS_AT_ONCE = 12
SETTLED = {"PUBLISHED", "PARTIAL", "FAILED", "CANCELED", "UNPUBLISHED"}
VIDEO_BYTES = 1024 * 1024
POLL_INTERVAL = 0.2  # PUBLISH_POLL_INTERVAL, and the direct client's wait before a status read
SHAPES = {
    "video": ("twitter", "instagram", "youtube", "tiktok"),
    "text": ("twitter", "linkedin", "facebook"),
}
# Per connection: the platforms' documented counts, windows scaled to seconds.
BURST_WINDOW = 20


def burst_limits(window: int) -> str:
    return (
        f"twitter=2/{window}s,linkedin=1/{window}s,facebook=1/{window}s,"
        f"instagram=1/{window}s,youtube=1/{window}s,tiktok=1/{window}s"
    )


BURST_SHAPES = ("video", "text", "video", "text", "video")
# The sandbox's own per-token limits, out of the way: Relay's limits are what is measured.
SANDBOX_LIMIT = (1_000_000, 1.0)


def video(seed: int) -> bytes:
    """An MP4-looking file (ftyp box first), distinct per seed."""
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    return head + seed.to_bytes(4, "big") + b"v" * (VIDEO_BYTES - len(head) - 4)


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class _Forms(HTMLParser):
    """The forms of the OAuth sandbox's approval page, with their fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "data": {}})
        elif tag in ("input", "button") and self.forms and "name" in values:
            self.forms[-1]["data"][values["name"]] = values.get("value", "")


class Relay:
    """Relay's HTTP API as an application uses it."""

    def __init__(
        self, base_url: str, key: str, s3: S3Sandbox | None = None, engine: Engine | None = None
    ) -> None:
        self.s3 = s3
        self.engine = engine
        self.connect_retries: Counter[str] = Counter()
        self.api = aiohttp.ClientSession(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            connector=aiohttp.TCPConnector(limit=100),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        # The browser (and S3): no API key, redirects not followed.
        self.browser = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=120)
        )

    async def close(self) -> None:
        await self.api.close()
        await self.browser.close()

    async def connect(self, provider: str, user_id: str) -> str:
        """Connect through Relay's OAuth flow, once more if a connection fails (as a user
        would); the integration id. Under this load Instagram's long-lived exchange can be
        retried by Temporal after it went through and then be refused ("already
        long-lived"): counted in `connect_retries`."""
        for attempt in range(3):
            try:
                return await self._connect(provider, user_id)
            except RuntimeError:
                if attempt == 2:
                    raise
                self.connect_retries[provider] += 1
        raise AssertionError("unreachable")

    async def _connect(self, provider: str, user_id: str) -> str:
        body = {
            "userId": user_id,
            "provider": provider,
            "redirectUri": APP_REDIRECT,
        }
        async with self.api.post("/v1/integrations/oauth/initiate", json=body) as started:
            if started.status != 201:
                raise RuntimeError(f"initiate {provider}: {started.status} {await started.text()}")
            data = (await started.json())["data"]
        url = data["authorizationUrl"]
        async with self.browser.get(url) as page:
            parser = _Forms()
            parser.feed(await page.text())
        (form,) = [f for f in parser.forms if f["data"].get("decision") == "approve"]
        async with self.browser.post(
            urljoin(url, form["action"]), data=form["data"], allow_redirects=False
        ) as decided:
            back = decided.headers["Location"]
        async with self.browser.get(back, allow_redirects=False) as landed:
            where = landed.headers.get("Location", "")
            if landed.status != 302 or "status=success" not in where:
                raise RuntimeError(f"callback {provider}: {landed.status} {where}")
        return str(data["integrationId"])

    def stored_video(self, user_id: str, seed: int) -> tuple[str, str]:
        """A READY video of the files capability, stored the way tests/publishing stores one
        (its object put in the S3 sandbox, its read model written READY, with the files
        API's `file_…` id), without the files workflow's processing, which is not what
        this bench measures. Its id and a signed URL to it (for the direct requests)."""
        assert self.s3 is not None and self.engine is not None
        data = video(seed)
        file_id = f"file_{uuid.uuid4().hex[:24]}"  # the files API's id shape
        key = f"files/{file_id}/clip-{seed}.mp4"
        client = self.s3.client()
        client.put_object(Bucket=self.s3.bucket, Key=key, Body=data, ContentType="video/mp4")
        files.save_view(
            self.engine,
            FileView(
                id=file_id,
                kind=FileKind.ATTACHMENT,
                filename=f"clip-{seed}.mp4",
                content_type="video/mp4",
                declared_size=len(data),
                user_id=user_id,
                status=FileStatus.READY,
                upload_key=f"uploads/{file_id}/clip-{seed}.mp4",
                object_key=key,
                size=len(data),
                detected_type="video/mp4",
            ),
        )
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": self.s3.bucket, "Key": key}, ExpiresIn=3600
        )
        return file_id, str(url)

    async def publish(self, user_id: str, shape: str, file_id: str, seq: int) -> str:
        body: dict[str, Any] = {
            "contentId": f"content-{user_id}-{seq}",
            "userId": user_id,
            "text": f"Bench post {seq} from {user_id}",
        }
        if shape == "video":
            body["mediaFileIds"] = [file_id]
        async with self.api.post("/v1/publications", json=body) as created:
            if created.status != 201:
                raise RuntimeError(f"publish: {created.status} {await created.text()}")
            return str((await created.json())["data"]["id"])

    async def publication(self, publication_id: str) -> dict[str, Any]:
        async with self.api.get(f"/v1/publications/{publication_id}") as answer:
            data: dict[str, Any] = (await answer.json())["data"]
            return data

    async def settled(self, publication_id: str, interval: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            data = await self.publication(publication_id)
            if data["status"] in SETTLED:
                return data
            await asyncio.sleep(interval)
        raise RuntimeError(f"publication {publication_id} did not settle: {data}")

    async def count(self, status: str) -> int:
        """Whether any publication has `status` (1) or none (0): one cheap page."""
        async with self.api.get("/v1/publications", params={"status": status, "limit": 1}) as r:
            return len((await r.json())["data"])

    async def every_publication(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
            async with self.api.get("/v1/publications", params=params) as answer:
                page = await answer.json()
            found += page["data"]
            cursor = (page.get("pagination") or {}).get("nextCursor") or page.get("nextCursor")
            if not cursor:
                return found


class Direct:
    """The adapters' requests made directly with one aiohttp client (the sandbox's default
    per-platform tokens), each platform's in the adapter's order and with its waits."""

    def __init__(self, api_base: str, poll_interval: float) -> None:
        self.base = api_base
        self.graph = f"{api_base}/{GRAPH_VERSION}"
        self.poll = poll_interval
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=120)
        )

    async def close(self) -> None:
        await self.http.close()

    @staticmethod
    def _auth(provider: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {SANDBOX_TOKENS[provider]}"}

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self.http.request(method, url, **kwargs) as response:
            if response.status >= 400:
                raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
            answer: dict[str, Any] = await response.json(content_type=None)
            return answer

    async def _media(self, url: str) -> bytes:
        async with self.http.get(url) as response:
            response.raise_for_status()
            return await response.read()

    async def twitter(self, text: str, media_url: str | None) -> None:
        auth = self._auth("twitter")
        body: dict[str, Any] = {"text": text}
        if media_url is not None:
            data = await self._media(media_url)
            started = await self._json(
                "POST",
                f"{self.base}/2/media/upload/initialize",
                json={
                    "media_type": "video/mp4",
                    "total_bytes": len(data),
                    "media_category": "tweet_video",
                },
                headers=auth,
            )
            media_id = started["data"]["id"]
            for index, offset in enumerate(range(0, len(data), x.CHUNK_BYTES)):
                form = aiohttp.FormData({"segment_index": str(index)})
                form.add_field("media", data[offset : offset + x.CHUNK_BYTES], filename="clip.mp4")
                await self._json(
                    "POST", f"{self.base}/2/media/upload/{media_id}/append", data=form, headers=auth
                )
            answer = await self._json(
                "POST", f"{self.base}/2/media/upload/{media_id}/finalize", headers=auth
            )
            while (info := answer["data"].get("processing_info")) and info["state"] != "succeeded":
                if info["state"] == "failed":
                    raise RuntimeError("X media processing failed")
                await asyncio.sleep(float(info.get("check_after_secs", 1)))
                answer = await self._json(
                    "GET",
                    f"{self.base}/2/media/upload",
                    params={"command": "STATUS", "media_id": media_id},
                    headers=auth,
                )
            body["media"] = {"media_ids": [media_id]}
        await self._json("POST", f"{self.base}/2/tweets", json=body, headers=auth)

    async def linkedin(self, text: str) -> None:
        body = {
            "author": DIRECT_ACCOUNT["authorUrn"],
            "commentary": text,
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        headers = self._auth("linkedin") | {
            "LinkedIn-Version": linkedin.LINKEDIN_VERSION,
            "X-Restli-Protocol-Version": "2.0.0",
        }
        async with self.http.post(f"{self.base}/rest/posts", json=body, headers=headers) as r:
            if r.status != 201 or not r.headers.get("x-restli-id"):
                raise RuntimeError(f"LinkedIn: {r.status} {await r.text()}")

    async def facebook(self, text: str) -> None:
        # The Page and its token from the user token, as the adapter does on every post.
        pages = await self._json(
            "GET",
            f"{self.graph}/me/accounts",
            params={"fields": "id,name,access_token", "limit": "100"},
            headers=self._auth("facebook"),
        )
        page = pages["data"][0]
        await self._json(
            "POST",
            f"{self.graph}/{page['id']}/feed",
            data={"message": text},
            headers={"Authorization": f"Bearer {page['access_token']}"},
        )

    async def instagram(self, text: str, media_url: str) -> None:
        auth = self._auth("instagram")
        user = DIRECT_ACCOUNT["igUserId"]
        form = {"caption": text, "media_type": "REELS", "video_url": media_url}
        container = (
            await self._json("POST", f"{self.graph}/{user}/media", data=form, headers=auth)
        )["id"]
        while True:
            status = await self._json(
                "GET",
                f"{self.graph}/{container}",
                params={"fields": "status_code,status"},
                headers=auth,
            )
            if status.get("status_code") in ("FINISHED", "PUBLISHED"):
                break
            await asyncio.sleep(instagram.POLL_SECONDS)
        published = await self._json(
            "POST",
            f"{self.graph}/{user}/media_publish",
            data={"creation_id": container},
            headers=auth,
        )
        await self._json(
            "GET", f"{self.graph}/{published['id']}", params={"fields": "permalink"}, headers=auth
        )

    async def youtube(self, text: str, media_url: str) -> None:
        auth = self._auth("youtube")
        data = await self._media(media_url)
        metadata = {
            "snippet": {"title": text, "description": text},
            "status": {"privacyStatus": "public"},
        }
        async with self.http.post(
            f"{self.base}/upload/youtube/v3/videos",
            params={"uploadType": "resumable", "part": "snippet,status", "alt": "json"},
            json=metadata,
            headers=auth
            | {"X-Upload-Content-Length": str(len(data)), "X-Upload-Content-Type": "video/mp4"},
        ) as started:
            started.raise_for_status()
            session = started.headers["Location"]
        resource = await self._json(
            "PUT",
            session,
            data=data,
            headers=auth
            | {
                "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}",
                "Content-Type": "video/mp4",
            },
        )
        state = resource.get("status", {}).get("uploadStatus")
        while state != "processed":
            await asyncio.sleep(self.poll)
            listed = await self._json(
                "GET",
                f"{self.base}/youtube/v3/videos",
                params={"part": "status,processingDetails", "id": resource["id"], "alt": "json"},
                headers=auth,
            )
            state = listed["items"][0]["status"]["uploadStatus"]

    async def tiktok(self, text: str, media_url: str) -> None:
        auth = self._auth("tiktok")
        body = {
            "post_info": {"title": text, "privacy_level": "SELF_ONLY"},
            "source_info": {"source": "PULL_FROM_URL", "video_url": media_url},
        }
        started = await self._json(
            "POST", f"{self.base}/v2/post/publish/video/init/", json=body, headers=auth
        )
        publish_id = started["data"]["publish_id"]
        while True:
            await asyncio.sleep(self.poll)
            answer = await self._json(
                "POST",
                f"{self.base}/v2/post/publish/status/fetch/",
                json={"publish_id": publish_id},
                headers=auth,
            )
            if answer["data"]["status"] == "PUBLISH_COMPLETE":
                return

    async def run(self, shape: str, text: str, media_url: str) -> float:
        """Seconds until every platform of `shape` has answered its last request."""
        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "video": lambda: self._all(
                self.twitter(text, media_url),
                self.instagram(text, media_url),
                self.youtube(text, media_url),
                self.tiktok(text, media_url),
            ),
            "text": lambda: self._all(
                self.twitter(text, None), self.linkedin(text), self.facebook(text)
            ),
        }
        started = time.monotonic()
        await calls[shape]()
        return time.monotonic() - started

    @staticmethod
    async def _all(*calls: Awaitable[None]) -> None:
        await asyncio.gather(*calls)


# --- processes -------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / ticks


def _name(args: list[str]) -> str:
    if "relay.cli" in args:
        return f"relay {args[-1]}"
    if "-m" in args:
        return args[args.index("-m") + 1].rsplit(".", 1)[-1] + " sandbox"
    return Path(args[0]).name


class Sandboxes:
    """The S3, publishing platforms and OAuth providers sandboxes as processes."""

    def __init__(self, directory: Path, processing_seconds: float) -> None:
        self.s3 = S3Sandbox()
        self.platforms = PublishingSandbox(processing_seconds=processing_seconds)
        self.oauth = OAuthProvidersSandbox(
            providers_file=directory / "oauth-providers.yaml",
            token_sinks=(self.platforms.token_sink,),
        )
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = (directory / "sandboxes.log").open("ab")

    def start(self) -> dict[str, str]:
        """Start all three; the settings that point Relay at them."""
        for command in (self.s3.command(), self.platforms.command(), self.oauth.command()):
            self.processes.append(
                subprocess.Popen(command, stdout=self.log, stderr=self.log)  # noqa: S603
            )
        self.s3.wait_ready()
        self.platforms.wait_ready()
        self.oauth.wait_ready()
        return self.s3.environment() | self.platforms.environment() | self.oauth.environment()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


async def control(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as answer:
        answer.raise_for_status()


# --- the measurements ------------------------------------------------------------------------


async def setup_user(relay: Relay, user_id: str, seed: int) -> tuple[str, str]:
    """Six connections and one stored video for `user_id`: (file id, its URL)."""
    stored, *_ = await asyncio.gather(
        asyncio.to_thread(relay.stored_video, user_id, seed),
        *(relay.connect(provider, user_id) for provider in PUBLISHING_PROVIDERS),
    )
    assert isinstance(stored, tuple)
    return stored


async def single(
    relay: Relay, direct: Direct, users: list[tuple[str, str, str]], runs: int
) -> dict[str, Any]:
    """Each run on its own user: video then text through Relay, each followed by the same
    requests made directly."""
    figures: dict[str, dict[str, list[float]]] = {s: {"relay": [], "direct": []} for s in SHAPES}
    targets: dict[str, list[dict[str, Any]]] = {}
    for index, (user_id, file_id, url) in enumerate(users):
        for shape in SHAPES:
            started = time.time()
            publication_id = await relay.publish(user_id, shape, file_id, index)
            done = await relay.settled(publication_id)
            if done["status"] != "PUBLISHED":
                raise RuntimeError(f"{shape}: {done['status']} {done['targets']}")
            relay_seconds = stamp(done["updatedAt"]) - started
            direct_seconds = await direct.run(shape, f"Bench post {index} direct", url)
            print(
                f"  run {index} {shape:>5}: relay {relay_seconds:.3f}s, direct {direct_seconds:.3f}s",
                flush=True,
            )
            targets[shape] = [
                {k: t.get(k) for k in ("provider", "status", "skipReason", "lastError")}
                for t in done["targets"]
            ]
            if index:  # the first run warms both up
                figures[shape]["relay"].append(relay_seconds)
                figures[shape]["direct"].append(direct_seconds)
    result: dict[str, Any] = {}
    for shape, seconds in figures.items():
        relay_median = statistics.median(seconds["relay"])
        direct_median = statistics.median(seconds["direct"])
        result[shape] = {
            "targets": targets[shape],
            "relay_seconds": [round(s, 3) for s in seconds["relay"]],
            "direct_seconds": [round(s, 3) for s in seconds["direct"]],
            "relay_median": round(relay_median, 3),
            "direct_median": round(direct_median, 3),
            "overhead_ms": round((relay_median - direct_median) * 1000),
            "ratio": round(relay_median / direct_median, 3),
        }
    return result


async def burst(
    relay: Relay,
    users: list[tuple[str, str, str]],
    processes: dict[str, int],
    limits_text: str,
) -> dict[str, Any]:
    """Every user's five publications POSTed at once; until every one has settled."""
    posted: dict[str, float] = {}

    async def one(user_id: str, file_id: str, seq: int, shape: str) -> None:
        at = time.time()
        posted[await relay.publish(user_id, shape, file_id, 1000 + seq)] = at

    limits = parse_limits(limits_text)
    jobs = [
        one(user_id, file_id, seq, shape)
        for seq, shape in enumerate(BURST_SHAPES)
        for user_id, file_id, _ in users
    ]
    cpu_before = {name: _cpu_seconds(pid) for name, pid in processes.items()}
    load_before = os.getloadavg()
    started = time.time()
    await asyncio.gather(*jobs)
    all_posted = time.time()
    # The limits alone take up to three windows (X: 5 publishes at 2 per window).
    deadline = time.monotonic() + DEADLINE_SECONDS + 3 * limits["twitter"].window.total_seconds()
    while await relay.count("PUBLISHING") or await relay.count("SCHEDULED"):
        if time.monotonic() > deadline:
            raise RuntimeError("the burst did not settle in time")
        await asyncio.sleep(1.0)
    observed = time.time()
    cpu = {name: round(_cpu_seconds(pid) - cpu_before[name], 1) for name, pid in processes.items()}
    wall = observed - started
    found = [p for p in await relay.every_publication() if p["id"] in posted]
    statuses = Counter(p["status"] for p in found)
    settled_at = max(stamp(p["updatedAt"]) for p in found)
    durations = {p["id"]: stamp(p["updatedAt"]) - posted[p["id"]] for p in found}
    slowest = max(durations, key=lambda k: durations[k])

    per_provider: dict[str, dict[str, Any]] = {}
    published: dict[str, list[float]] = defaultdict(list)
    per_connection: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    target_status: Counter[str] = Counter()
    for publication in found:
        for target in publication["targets"]:
            target_status[target["status"]] += 1
            if target["status"] == "PUBLISHED" and target.get("publishedAt"):
                published[target["provider"]].append(stamp(target["publishedAt"]) - started)
                per_connection[target["provider"]][target["integrationId"]].append(
                    stamp(target["publishedAt"]) - started
                )
    for provider in PUBLISHING_PROVIDERS:
        times = sorted(published[provider])
        if not times:
            continue
        limit = limits[provider]
        window = limit.window.total_seconds()
        most = max(len(v) for v in per_connection[provider].values())
        floor = (-(-most // limit.count) - 1) * window
        # Per connection: how long after the limits let it (its first publish plus the
        # windows its count needs) its last publish landed: Relay's own delay.
        late = sorted(
            max(v) - (min(v) + (-(-len(v) // limit.count) - 1) * window)
            for v in per_connection[provider].values()
        )
        connections = len(per_connection[provider])
        bins = Counter(int(t // window) for t in times)
        per_provider[provider] = {
            "publishes": len(times),
            "connections": connections,
            "limit": f"{limit.count}/{int(window)}s per connection",
            "configured_per_second": round(connections * limit.count / window, 2),
            "first_s": round(times[0], 2),
            "last_s": round(times[-1], 2),
            "floor_s": floor,
            "achieved_per_second": round(len(times) / times[-1], 2),
            "per_window": [bins[i] for i in range(max(bins) + 1)],
            "allowed_per_window": connections * limit.count,
            "late_median_s": round(statistics.median(late), 2),
            "late_max_s": round(late[-1], 2),
        }
    cores = os.cpu_count() or 1
    return {
        "publications": len(found),
        "statuses": dict(statuses),
        "targets": dict(target_status),
        "post_seconds": round(all_posted - started, 2),
        "settled_seconds": round(settled_at - started, 2),
        "observed_seconds": round(wall, 2),
        "slowest_publication_seconds": round(durations[slowest], 2),
        "median_publication_seconds": round(statistics.median(durations.values()), 2),
        "per_provider": per_provider,
        "cpu_seconds": cpu,
        "cpu_ms_per_published_target": {
            name: round(seconds * 1000 / max(1, target_status["PUBLISHED"]), 1)
            for name, seconds in cpu.items()
        },
        "worker_cpu_share": round(cpu.get("relay worker", 0.0) / wall / cores, 3),
        "stack_cpu_share": round(sum(cpu.values()) / wall / cores, 3),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_start": [round(v, 2) for v in os.getloadavg()],
        "database": "sqlite",
        "processing_seconds": args.processing_seconds,
        "poll_interval_seconds": POLL_INTERVAL,
        "burst_limits": args.limits,
    }
    stack = Stack(None, persist_temporal=False)
    sandboxes = Sandboxes(stack.dir, args.processing_seconds)
    relay: Relay | None = None
    direct: Direct | None = None
    try:
        stack.env.update(await asyncio.to_thread(sandboxes.start))
        stack.env.update(
            SANDBOX="off",
            PUBLIC_BASE_URL=f"http://127.0.0.1:{stack.api_port}",
            PUBLISH_POLL_INTERVAL=f"{int(POLL_INTERVAL * 1000)}ms",
            PUBLISH_RATE_LIMITS=args.limits,
        )
        key = await asyncio.to_thread(stack.start)
        await register_search_attributes(await Client.connect(stack.env["TEMPORAL_ADDRESS"]))
        engine = make_engine(stack.database_url)
        relay = Relay(f"http://127.0.0.1:{stack.api_port}", key, sandboxes.s3, engine)
        direct = Direct(sandboxes.platforms.api_base, POLL_INTERVAL)
        for provider in PUBLISHING_PROVIDERS:
            await control(
                direct.http,
                f"{sandboxes.platforms.api_base}/_sandbox/rate-limits",
                {
                    "provider": provider,
                    "limit": SANDBOX_LIMIT[0],
                    "windowSeconds": SANDBOX_LIMIT[1],
                },
            )

        setup = time.monotonic()
        solo = args.runs + 1
        names = (
            [f"solo-{i}" for i in range(solo)]
            + [f"slow-{i}" for i in range(solo if args.latency > 0 else 0)]
            + [f"user-{i:03d}" for i in range(args.users)]
        )
        gate = asyncio.Semaphore(SETUP_USERS_AT_ONCE)

        async def prepared(index: int, user_id: str) -> tuple[str, str, str]:
            async with gate:
                file_id, url = await setup_user(relay, user_id, index)  # type: ignore[arg-type]
                return user_id, file_id, url

        users = await asyncio.gather(*(prepared(i, n) for i, n in enumerate(names)))
        results["setup_seconds"] = round(time.monotonic() - setup, 1)
        results["connect_retries"] = dict(relay.connect_retries)
        print(
            f"setup: {len(users) * 6} connections and {len(users)} videos "
            f"in {results['setup_seconds']}s (connects retried: {results['connect_retries']})",
            flush=True,
        )
        results["single"] = await single(relay, direct, users[:solo], args.runs)
        singles = [("single", results["single"])]
        if args.latency > 0:
            # The same, with every platform request taking `latency` as a real one does.
            latency_url = f"{sandboxes.platforms.api_base}/_sandbox/latency"
            await control(direct.http, latency_url, {"seconds": args.latency})
            results["latency_seconds"] = args.latency
            results["single_latency"] = await single(
                relay, direct, users[solo : 2 * solo], args.runs
            )
            await control(direct.http, latency_url, {"seconds": 0})
            singles.append((f"single (+{args.latency}s a request)", results["single_latency"]))
        for label, single_result in singles:
            for shape, figure in single_result.items():
                print(
                    f"{label} {shape}: relay {figure['relay_median']}s vs direct "
                    f"{figure['direct_median']}s = {figure['ratio']}x "
                    f"(+{figure['overhead_ms']} ms)",
                    flush=True,
                )
        processes = {_name(list(p.args)): p.pid for p in stack.processes + sandboxes.processes}  # type: ignore[arg-type]
        burst_users = users[len(names) - args.users :]
        results["burst"] = await burst(relay, burst_users, processes, args.limits)
        figure = results["burst"]
        print(
            f"burst: {figure['publications']} publications settled in {figure['settled_seconds']}s "
            f"(slowest {figure['slowest_publication_seconds']}s), worker CPU share "
            f"{figure['worker_cpu_share']}",
            flush=True,
        )
        for provider, row in figure["per_provider"].items():
            print(
                f"  {provider:>9}: {row['publishes']} publishes, last at {row['last_s']}s "
                f"(floor {row['floor_s']}s; per connection {row['late_median_s']}s late, at "
                f"most {row['late_max_s']}s), per window {row['per_window']} of "
                f"{row['allowed_per_window']}",
                flush=True,
            )
    finally:
        if relay is not None:
            await relay.close()
        if direct is not None:
            await direct.close()
        await asyncio.to_thread(stack.stop)
        sandboxes.stop()
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="single-publication runs (+1 warm-up)")
    parser.add_argument("--users", type=int, default=100, help="burst users (5 publications each)")
    parser.add_argument(
        "--window", type=int, default=BURST_WINDOW, help="the burst limits' window (seconds)"
    )
    parser.add_argument("--limits", help="PUBLISH_RATE_LIMITS (default: from --window)")
    parser.add_argument(
        "--processing-seconds", type=float, default=0.3, help="the platforms' processing delay"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.15,
        help="the single publications again with each platform request taking this long (0: skip)",
    )
    args = parser.parse_args()
    args.limits = args.limits or burst_limits(args.window)
    started = time.monotonic()
    results = asyncio.run(main(args))
    results["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"publishing-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out} ({results['total_seconds']}s)")


if __name__ == "__main__":
    cli()
