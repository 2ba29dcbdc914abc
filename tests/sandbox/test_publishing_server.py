"""The publishing platforms sandbox, driven over plain HTTP as each platform documents it,
and YouTube's resumable upload through google-api-python-client's own MediaFileUpload."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource, build, build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaFileUpload

from relay.oauth.catalog import load_catalog
from relay.sandbox import publishing
from relay.sandbox.oauth_providers import OAuthProvidersSandbox
from relay.sandbox.publishing import (
    SANDBOX_TOKENS,
    PublishingSandbox,
    PublishingServer,
)
from relay.settings import Settings
from tests.sandbox.test_oauth_providers_server import connect

# Long enough that a state asserted right after an upload is still in progress on a busy host.
PROCESSING_SECONDS = 1.0
WAIT_SECONDS = 10
LINKEDIN_HEADERS = {"LinkedIn-Version": "202507", "X-Restli-Protocol-Version": "2.0.0"}
PERSON = "urn:li:person:8675309"
MB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[PublishingServer]:
    with PublishingSandbox(port=0, processing_seconds=PROCESSING_SECONDS).run_in_thread() as s:
        yield s


@pytest.fixture
def bases(server: PublishingServer) -> dict[str, str]:
    return server.sandbox.bases()


def auth(provider: str, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or SANDBOX_TOKENS[provider]}"}


def sandbox_posts(server: PublishingServer) -> dict[str, Any]:
    answer = httpx.get(f"{server.api_base}/_sandbox/posts")
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def eventually(check: Callable[[], Any]) -> Any:
    """`check()`'s first truthy answer within WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def youtube_service(root: str, token: str = SANDBOX_TOKENS["youtube"]) -> Resource:
    """The YouTube client as the publishing capability is to build it: the bundled discovery
    document with its rootUrl set to YOUTUBE_API_BASE (see the module's docstring)."""
    document = json.loads(get_static_doc("youtube", "v3") or "{}")
    document |= {"rootUrl": root, "baseUrl": root}
    return build_from_document(document, credentials=Credentials(token=token))


def linkedin_post(commentary: str = "Hello LinkedIn") -> dict[str, Any]:
    return {
        "author": PERSON,
        "commentary": commentary,
        "visibility": "PUBLIC",
        "distribution": {
            "feedDistribution": "MAIN_FEED",
            "targetEntities": [],
            "thirdPartyDistributionChannels": [],
        },
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": False,
    }


def tiktok_init(
    base: str, source_info: dict[str, Any], title: str = "Hello TikTok"
) -> httpx.Response:
    body = {
        "post_info": {"title": title, "privacy_level": "SELF_ONLY", "disable_comment": True},
        "source_info": source_info,
    }
    return httpx.post(f"{base}/v2/post/publish/video/init/", json=body, headers=auth("tiktok"))


# --- X -----------------------------------------------------------------------------------------


def test_x_chunked_video_processes_then_tweets_and_deletes(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    base, headers = bases["twitter"], auth("twitter")
    video = b"v" * 3000
    init = httpx.post(
        f"{base}/2/media/upload/initialize",
        json={
            "media_type": "video/mp4",
            "total_bytes": len(video),
            "media_category": "tweet_video",
        },
        headers=headers,
    )
    assert init.status_code == 200, init.text
    media_id = init.json()["data"]["id"]
    assert len(media_id) == 19 and init.json()["data"]["media_key"] == f"7_{media_id}"
    for index, chunk in enumerate((video[:2000], video[2000:])):
        appended = httpx.post(
            f"{base}/2/media/upload/{media_id}/append",
            data={"segment_index": str(index)},
            files={"media": ("chunk", chunk, "application/octet-stream")},
            headers=headers,
        )
        assert appended.status_code == 200, appended.text
    finalized = httpx.post(f"{base}/2/media/upload/{media_id}/finalize", headers=headers)
    assert finalized.json()["data"]["processing_info"]["state"] == "pending"
    assert finalized.json()["data"]["size"] == len(video)

    early = httpx.post(
        f"{base}/2/tweets",
        json={"text": "too soon", "media": {"media_ids": [media_id]}},
        headers=headers,
    )
    assert early.status_code == 400
    assert early.json()["errors"][0]["message"] == "Your media IDs are invalid."

    def status() -> str:
        answer = httpx.get(
            f"{base}/2/media/upload",
            params={"command": "STATUS", "media_id": media_id},
            headers=headers,
        )
        state: str = answer.json()["data"]["processing_info"]["state"]
        return state

    assert status() == "in_progress"
    assert eventually(lambda: status() == "succeeded")
    tweet = httpx.post(
        f"{base}/2/tweets",
        json={"text": "Launch day", "media": {"media_ids": [media_id]}},
        headers=headers,
    )
    assert tweet.status_code == 201, tweet.text
    data = tweet.json()["data"]
    assert data["text"] == "Launch day" and data["edit_history_tweet_ids"] == [data["id"]]

    deleted = httpx.delete(f"{base}/2/tweets/{data['id']}", headers=headers)
    assert deleted.json() == {"data": {"deleted": True}}
    again = httpx.delete(f"{base}/2/tweets/{data['id']}", headers=headers)
    assert again.status_code == 404
    assert again.json()["errors"][0]["type"].endswith("resource-not-found")
    seen = sandbox_posts(server)
    [post] = seen["data"]["twitter"]
    assert post["id"] == data["id"] and post["deleted"] and post["media"] == [media_id]
    assert post["url"] == f"https://x.com/i/web/status/{data['id']}"
    assert seen["publishes"]["twitter"] == 1
    assert seen["requests"]["twitter"] >= 9


def test_x_one_shot_image_and_the_command_form(bases: dict[str, str]) -> None:
    base, headers = bases["twitter"], auth("twitter")
    image = httpx.post(
        f"{base}/2/media/upload",
        data={"media_category": "tweet_image"},
        files={"media": ("a.png", b"\x89PNG....", "image/png")},
        headers=headers,
    )
    assert image.status_code == 200, image.text
    assert "processing_info" not in image.json()["data"]
    assert image.json()["data"]["media_key"].startswith("3_")
    init = httpx.post(
        f"{base}/2/media/upload",
        data={"command": "INIT", "media_type": "image/gif", "total_bytes": "4"},
        headers=headers,
    )
    gif = init.json()["data"]["id"]
    httpx.post(
        f"{base}/2/media/upload",
        data={"command": "APPEND", "media_id": gif, "segment_index": "0"},
        files={"media": ("chunk", b"GIF8")},
        headers=headers,
    ).raise_for_status()
    finalized = httpx.post(
        f"{base}/2/media/upload", data={"command": "FINALIZE", "media_id": gif}, headers=headers
    )
    assert finalized.json()["data"]["media_key"] == f"16_{gif}"

    tweet = httpx.post(
        f"{base}/2/tweets",
        json={"text": "", "media": {"media_ids": [image.json()["data"]["id"]]}},
        headers=headers,
    )
    assert tweet.status_code == 201


def test_x_text_limit_is_280(bases: dict[str, str]) -> None:
    base, headers = bases["twitter"], auth("twitter")

    over = httpx.post(f"{base}/2/tweets", json={"text": "x" * 281}, headers=headers)
    exact = httpx.post(f"{base}/2/tweets", json={"text": "é" * 280}, headers=headers)

    assert over.status_code == 400
    assert over.json()["title"] == "Invalid Request"
    assert over.json()["errors"][0]["parameters"] == {"text": []}
    assert "too long" in over.json()["errors"][0]["message"]
    assert exact.status_code == 201


# --- LinkedIn ------------------------------------------------------------------------------------


def test_linkedin_post_needs_the_versioned_headers_answers_201_and_deletes(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    base = bases["linkedin"]
    headers = auth("linkedin") | LINKEDIN_HEADERS

    unversioned = httpx.post(f"{base}/rest/posts", json=linkedin_post(), headers=auth("linkedin"))
    no_restli = httpx.post(
        f"{base}/rest/posts",
        json=linkedin_post(),
        headers=auth("linkedin") | {"LinkedIn-Version": "202507"},
    )
    created = httpx.post(f"{base}/rest/posts", json=linkedin_post(), headers=headers)

    assert unversioned.status_code == 400 and unversioned.json()["code"] == "VERSION_MISSING"
    assert no_restli.status_code == 400
    assert created.status_code == 201 and created.content == b""
    urn = created.headers["x-restli-id"]
    assert urn.startswith("urn:li:share:") and len(urn.rsplit(":", 1)[1]) == 19
    encoded = httpx.URL(f"{base}/rest/posts/").join(urn.replace(":", "%3A"))
    fetched = httpx.get(encoded, headers=headers)
    assert fetched.json()["commentary"] == "Hello LinkedIn" and fetched.json()["id"] == urn
    assert httpx.delete(encoded, headers=headers).status_code == 204
    gone = httpx.get(encoded, headers=headers)
    assert gone.status_code == 404 and gone.json()["status"] == 404
    [post] = sandbox_posts(server)["data"]["linkedin"]
    assert post["deleted"] and post["url"] == f"https://www.linkedin.com/feed/update/{urn}/"


def test_linkedin_commentary_limit_and_required_fields(bases: dict[str, str]) -> None:
    base = bases["linkedin"]
    headers = auth("linkedin") | LINKEDIN_HEADERS

    over = httpx.post(f"{base}/rest/posts", json=linkedin_post("y" * 3001), headers=headers)
    exact = httpx.post(f"{base}/rest/posts", json=linkedin_post("y" * 3000), headers=headers)
    missing = httpx.post(
        f"{base}/rest/posts",
        json={k: v for k, v in linkedin_post().items() if k != "distribution"},
        headers=headers,
    )

    assert over.status_code == 422
    [error] = over.json()["errorDetails"]["inputErrors"]
    assert error["input"]["inputPath"]["fieldPath"] == "commentary"
    assert exact.status_code == 201
    assert missing.status_code == 422 and "distribution" in missing.json()["message"]


# --- Facebook ------------------------------------------------------------------------------------


def page_token(base: str, user_token: str = SANDBOX_TOKENS["facebook"]) -> tuple[str, str]:
    """(the Page's id, its Page token) of the user's only Page, as /me/accounts gives them."""
    answer = httpx.get(f"{base}/me/accounts", headers=auth("facebook", user_token))
    assert answer.status_code == 200, answer.text
    (page,) = answer.json()["data"]
    return str(page["id"]), str(page["access_token"])


def test_facebook_feed_photos_and_delete(server: PublishingServer, bases: dict[str, str]) -> None:
    base = bases["facebook"]
    page, token = page_token(base)
    assert page == "104857600123456"  # SANDBOX_TOKENS' user's Page

    feed = httpx.post(
        f"{base}/{page}/feed",
        params={"access_token": token},
        data={"message": "Hello Page", "link": "https://example.com/launch"},
    )
    photo = httpx.post(
        f"{base}/{page}/photos",
        data={"message": "A photo", "access_token": token},
        files={"source": ("p.jpg", b"\xff\xd8jpeg", "image/jpeg")},
    )
    by_url = httpx.post(
        f"{base}/{page}/photos",
        json={"url": "https://example.com/p.jpg"},
        headers=auth("facebook", token),
    )

    assert feed.status_code == 200, feed.text
    post_id = feed.json()["id"]
    assert post_id.startswith(f"{page}_")
    assert photo.json()["post_id"].startswith(f"{page}_") and photo.json()["id"].isdigit()
    assert by_url.status_code == 200
    fetched = httpx.get(f"{base}/{post_id}", params={"fields": "message", "access_token": token})
    assert fetched.json() == {"id": post_id, "message": "Hello Page"}
    as_user = httpx.delete(f"{base}/{post_id}", headers=auth("facebook"))
    assert as_user.status_code == 403 and as_user.json()["error"]["code"] == 200
    assert httpx.delete(f"{base}/{post_id}", headers=auth("facebook", token)).json() == {
        "success": True
    }
    again = httpx.delete(f"{base}/{post_id}", headers=auth("facebook", token))
    assert again.status_code == 400
    assert (again.json()["error"]["code"], again.json()["error"]["error_subcode"]) == (100, 33)
    posts = sandbox_posts(server)["data"]["facebook"]
    assert [p["deleted"] for p in posts] == [True, False, False]


def test_facebook_refuses_an_empty_or_too_long_message(bases: dict[str, str]) -> None:
    base = bases["facebook"]
    page, token = page_token(base)
    headers = auth("facebook", token)

    empty = httpx.post(f"{base}/{page}/feed", data={}, headers=headers)
    over = httpx.post(f"{base}/{page}/feed", data={"message": "m" * 63207}, headers=headers)
    exact = httpx.post(f"{base}/{page}/feed", data={"message": "m" * 63206}, headers=headers)

    assert empty.status_code == 400 and empty.json()["error"]["code"] == 100
    assert over.status_code == 400 and "63206" in over.json()["error"]["message"]
    assert over.json()["error"]["type"] == "OAuthException"
    assert exact.status_code == 200


# --- Instagram -----------------------------------------------------------------------------------


def test_instagram_container_finishes_then_publishes(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    base, token = bases["instagram"], SANDBOX_TOKENS["instagram"]
    user = "17841400000000001"

    container = httpx.post(
        f"{base}/{user}/media",
        params={
            "video_url": "https://cdn.example.com/reel.mp4",
            "media_type": "REELS",
            "caption": "A reel",
            "access_token": token,
        },
    )
    assert container.status_code == 200, container.text
    creation_id = container.json()["id"]

    def status() -> str:
        answer = httpx.get(
            f"{base}/{creation_id}", params={"fields": "status_code", "access_token": token}
        )
        code: str = answer.json()["status_code"]
        return code

    assert status() == "IN_PROGRESS"
    early = httpx.post(
        f"{base}/{user}/media_publish", params={"creation_id": creation_id, "access_token": token}
    )
    assert early.status_code == 400
    assert (early.json()["error"]["code"], early.json()["error"]["error_subcode"]) == (
        9007,
        2207027,
    )
    assert eventually(lambda: status() == "FINISHED")
    published = httpx.post(
        f"{base}/{user}/media_publish", params={"creation_id": creation_id, "access_token": token}
    )
    assert published.status_code == 200
    media_id = published.json()["id"]
    assert status() == "PUBLISHED"
    media = httpx.get(
        f"{base}/{media_id}",
        params={"fields": "permalink,media_product_type", "access_token": token},
    )
    assert media.json()["media_product_type"] == "REELS"
    assert media.json()["permalink"].startswith("https://www.instagram.com/p/")
    # Instagram's API cannot delete media: the publishing capability must report it.
    refused = httpx.delete(f"{base}/{media_id}", params={"access_token": token})
    assert refused.status_code == 400 and "Unsupported delete" in refused.json()["error"]["message"]
    [post] = sandbox_posts(server)["data"]["instagram"]
    assert post["id"] == media_id and not post["deleted"]


def test_instagram_processing_failure_and_caption_limit(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    base, headers = bases["instagram"], auth("instagram")
    httpx.post(
        f"{server.api_base}/_sandbox/processing", json={"provider": "instagram", "failNext": 1}
    ).raise_for_status()

    failing = httpx.post(
        f"{base}/1784/media", data={"image_url": "https://cdn.example.com/a.jpg"}, headers=headers
    ).json()["id"]
    fine = httpx.post(
        f"{base}/1784/media", data={"image_url": "https://cdn.example.com/b.jpg"}, headers=headers
    ).json()["id"]
    over = httpx.post(
        f"{base}/1784/media",
        data={"image_url": "https://cdn.example.com/c.jpg", "caption": "c" * 2201},
        headers=headers,
    )

    def codes() -> list[str]:
        return [
            httpx.get(f"{base}/{c}", params={"fields": "status_code"}, headers=headers).json()[
                "status_code"
            ]
            for c in (failing, fine)
        ]

    assert eventually(lambda: codes() == ["ERROR", "FINISHED"])
    refused = httpx.post(
        f"{base}/1784/media_publish", data={"creation_id": failing}, headers=headers
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 9007
    assert over.status_code == 400 and "2200" in over.json()["error"]["message"]


# --- YouTube -------------------------------------------------------------------------------------


def test_youtube_resumable_upload_through_the_google_client(
    server: PublishingServer, bases: dict[str, str], tmp_path: Path
) -> None:
    youtube = youtube_service(bases["youtube"])
    video = tmp_path / "launch.mp4"
    video.write_bytes(bytes(range(256)) * 2600)  # 665,600 bytes: three 256 KiB chunks
    media = MediaFileUpload(str(video), mimetype="video/mp4", chunksize=256 * 1024, resumable=True)
    request = youtube.videos().insert(
        part="snippet,status,processingDetails",
        body={
            "snippet": {"title": "Launch", "description": "Our launch", "tags": ["relay"]},
            "status": {"privacyStatus": "unlisted"},
        },
        media_body=media,
    )
    assert request.uri.startswith(f"{bases['youtube']}upload/youtube/v3/videos?")

    progress: list[float] = []
    response = None
    while response is None:
        status, response = request.next_chunk()
        if status is not None:
            progress.append(status.progress())

    assert len(progress) == 2 and progress[0] < progress[1] < 1
    assert response["kind"] == "youtube#video" and len(response["id"]) == 11
    assert response["snippet"]["title"] == "Launch"
    assert response["status"]["uploadStatus"] == "uploaded"
    assert response["status"]["privacyStatus"] == "unlisted"
    assert response["processingDetails"] == {"processingStatus": "processing"}

    def processed() -> dict[str, Any] | None:
        listed = youtube.videos().list(part="status,processingDetails", id=response["id"])
        [item] = listed.execute()["items"]
        return item if item["status"]["uploadStatus"] == "processed" else None

    item = eventually(processed)
    assert item is not None and item["processingDetails"]["processingStatus"] == "succeeded"
    assert youtube.videos().delete(id=response["id"]).execute() == ""
    assert youtube.videos().list(part="status", id=response["id"]).execute()["items"] == []
    with pytest.raises(HttpError) as again:
        youtube.videos().delete(id=response["id"]).execute()
    assert again.value.status_code == 404
    assert again.value.error_details[0]["reason"] == "videoNotFound"
    [post] = sandbox_posts(server)["data"]["youtube"]
    assert post["deleted"] and post["url"] == f"https://www.youtube.com/watch?v={response['id']}"


def test_api_endpoint_alone_keeps_https_for_the_upload_url(bases: dict[str, str]) -> None:
    # Why YOUTUBE_API_BASE is the rootUrl: the library swaps only the netloc of the media
    # URL for `api_endpoint`, so an http sandbox would be asked over TLS.
    youtube = build(
        "youtube",
        "v3",
        static_discovery=True,
        client_options={"api_endpoint": bases["youtube"]},
        credentials=Credentials(token=SANDBOX_TOKENS["youtube"]),
    )
    media = MediaFileUpload(__file__, mimetype="video/mp4", resumable=True)
    request = youtube.videos().insert(part="snippet", body={}, media_body=media)

    assert request.uri.startswith("https://127.0.0.1:")
    assert youtube.videos().delete(id="x").uri.startswith(bases["youtube"])


def test_youtube_failed_processing_and_title_limit(
    server: PublishingServer, bases: dict[str, str], tmp_path: Path
) -> None:
    youtube = youtube_service(bases["youtube"])
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 1000)
    httpx.post(
        f"{server.api_base}/_sandbox/processing", json={"provider": "youtube", "failNext": 1}
    ).raise_for_status()

    with pytest.raises(HttpError) as too_long:
        youtube.videos().insert(
            part="snippet",
            body={"snippet": {"title": "t" * 101}},
            media_body=MediaFileUpload(str(video), mimetype="video/mp4", resumable=True),
        ).execute()
    uploaded = (
        youtube.videos()
        .insert(
            part="snippet,status",
            body={"snippet": {"title": "t" * 100}},
            media_body=MediaFileUpload(str(video), mimetype="video/mp4", resumable=True),
        )
        .execute()
    )

    assert too_long.value.status_code == 400
    assert too_long.value.error_details[0]["reason"] == "invalidTitle"

    def upload_status() -> str | None:
        [item] = youtube.videos().list(part="status", id=uploaded["id"]).execute()["items"]
        return (
            item["status"]["uploadStatus"] if item["status"]["uploadStatus"] != "uploaded" else None
        )

    assert eventually(upload_status) == "failed"


def test_youtube_session_answers_where_the_upload_stands(bases: dict[str, str]) -> None:
    base = bases["youtube"]
    started = httpx.post(
        f"{base}upload/youtube/v3/videos",
        params={"uploadType": "resumable", "part": "snippet"},
        json={"snippet": {"title": "Resumed"}},
        headers=auth("youtube")
        | {"X-Upload-Content-Length": "10", "X-Upload-Content-Type": "video/mp4"},
    )
    assert started.status_code == 200, started.text
    session = started.headers["location"]

    first = httpx.put(session, content=b"01234", headers={"Content-Range": "bytes 0-4/10"})
    asked = httpx.put(session, content=b"", headers={"Content-Range": "bytes */10"})
    wrong = httpx.put(session, content=b"99999", headers={"Content-Range": "bytes 0-4/10"})
    last = httpx.put(session, content=b"56789", headers={"Content-Range": "bytes 5-9/10"})

    assert (first.status_code, first.headers["range"]) == (308, "bytes=0-4")
    assert (asked.status_code, asked.headers["range"]) == (308, "bytes=0-4")
    assert wrong.status_code == 400
    assert last.status_code == 200 and last.json()["snippet"]["title"] == "Resumed"
    unknown = httpx.put(f"{base}upload/youtube/v3/videos?upload_id=nope", content=b"x")
    assert unknown.status_code == 404


# --- TikTok --------------------------------------------------------------------------------------


def test_tiktok_file_upload_in_chunks_then_publish_complete(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    base = bases["tiktok"]
    size, chunk = 11 * MB, 5 * MB
    init = tiktok_init(
        base,
        {"source": "FILE_UPLOAD", "video_size": size, "chunk_size": chunk, "total_chunk_count": 2},
    )
    assert init.status_code == 200, init.text
    assert init.json()["error"]["code"] == "ok"
    publish_id = init.json()["data"]["publish_id"]
    upload_url = init.json()["data"]["upload_url"]
    assert publish_id.startswith("v_pub_file~v2-1.") and upload_url.startswith(server.api_base)

    def status() -> dict[str, Any]:
        answer = httpx.post(
            f"{base}/v2/post/publish/status/fetch/",
            json={"publish_id": publish_id},
            headers=auth("tiktok"),
        )
        data: dict[str, Any] = answer.json()["data"]
        return data

    assert status()["status"] == "PROCESSING_UPLOAD"
    video_type = {"Content-Type": "video/mp4"}
    first = httpx.put(
        upload_url,
        content=b"a" * chunk,
        headers=video_type | {"Content-Range": f"bytes 0-{chunk - 1}/{size}"},
    )
    misplaced = httpx.put(
        upload_url,
        content=b"b" * MB,
        headers=video_type | {"Content-Range": f"bytes {chunk}-{chunk + MB - 1}/{size}"},
    )
    last = httpx.put(
        upload_url,
        content=b"b" * (size - chunk),
        headers=video_type | {"Content-Range": f"bytes {chunk}-{size - 1}/{size}"},
    )

    assert first.status_code == 206
    assert misplaced.status_code == 400
    assert last.status_code == 201
    assert status()["uploaded_bytes"] == size
    done = eventually(lambda: (s := status())["status"] == "PUBLISH_COMPLETE" and s)
    assert done and len(done["publicaly_available_post_id"]) == 1
    [post] = sandbox_posts(server)["data"]["tiktok"]
    assert post["id"] == str(done["publicaly_available_post_id"][0])
    assert post["text"] == "Hello TikTok"
    assert sandbox_posts(server)["publishes"]["tiktok"] == 1


def test_tiktok_pull_from_url_title_limit_and_chunk_rules(bases: dict[str, str]) -> None:
    base = bases["tiktok"]

    pulled = tiktok_init(
        base, {"source": "PULL_FROM_URL", "video_url": "https://cdn.example.com/v.mp4"}
    )
    status = httpx.post(
        f"{base}/v2/post/publish/status/fetch/",
        json={"publish_id": pulled.json()["data"]["publish_id"]},
        headers=auth("tiktok"),
    )
    over = tiktok_init(
        base, {"source": "PULL_FROM_URL", "video_url": "https://x.test/v"}, "😀" * 1101
    )
    exact = tiktok_init(
        base, {"source": "PULL_FROM_URL", "video_url": "https://x.test/v"}, "😀" * 1100
    )
    tiny_chunks = tiktok_init(
        base,
        {"source": "FILE_UPLOAD", "video_size": 11 * MB, "chunk_size": MB, "total_chunk_count": 11},
    )
    whole_small = tiktok_init(
        base,
        {"source": "FILE_UPLOAD", "video_size": 1000, "chunk_size": 1000, "total_chunk_count": 1},
    )

    assert pulled.status_code == 200 and "upload_url" not in pulled.json()["data"]
    assert status.json()["data"]["status"] == "PROCESSING_DOWNLOAD"
    # TikTok counts UTF-16 units: an emoji is two.
    assert over.status_code == 400 and over.json()["error"]["code"] == "invalid_params"
    assert exact.status_code == 200
    assert tiny_chunks.status_code == 400
    assert whole_small.status_code == 200


def test_processing_is_listed_and_ended_by_the_control(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    finish = f"{server.api_base}/_sandbox/processing/finish"
    httpx.post(f"{server.api_base}/_sandbox/processing", json={"seconds": 600}).raise_for_status()
    pulled = tiktok_init(
        bases["tiktok"], {"source": "PULL_FROM_URL", "video_url": "https://cdn.example.com/v.mp4"}
    )
    again = tiktok_init(
        bases["tiktok"], {"source": "PULL_FROM_URL", "video_url": "https://cdn.example.com/w.mp4"}
    )
    first, second = sandbox_posts(server)["data"]["tiktok"]
    listed = sandbox_posts(server)["processing"]

    assert first["status"] == second["status"] == "processing"
    assert first["processingId"] == pulled.json()["data"]["publish_id"]
    assert [m["id"] for m in listed] == [
        again.json()["data"]["publish_id"],
        pulled.json()["data"]["publish_id"],
    ]
    assert {m["status"] for m in listed} == {"processing"}

    # By the post's id, or by the media's.
    done = httpx.post(finish, json={"provider": "tiktok", "id": first["id"]})
    failed = httpx.post(
        finish, json={"provider": "tiktok", "id": second["processingId"], "outcome": "failed"}
    )
    twice = httpx.post(finish, json={"provider": "tiktok", "id": first["id"]})
    unknown = httpx.post(finish, json={"provider": "youtube", "id": first["id"]})
    status = httpx.post(
        f"{bases['tiktok']}/v2/post/publish/status/fetch/",
        json={"publish_id": pulled.json()["data"]["publish_id"]},
        headers=auth("tiktok"),
    )

    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert failed.status_code == 200
    assert twice.status_code == 409 and "already succeeded" in twice.json()["error"]
    assert unknown.status_code == 404
    assert (
        httpx.post(finish, json={"provider": "tiktok", "id": "x", "outcome": "no"}).status_code
        == 400
    )
    assert status.json()["data"]["status"] == "PUBLISH_COMPLETE"
    shown = {p["id"]: p["status"] for p in sandbox_posts(server)["data"]["tiktok"]}
    assert shown == {first["id"]: "published", second["id"]: "failed"}


# --- tokens, limits, faults ----------------------------------------------------------------------


def _call(provider: str, bases: dict[str, str], headers: dict[str, str]) -> httpx.Response:
    """One representative API call per provider."""
    base = bases[provider]
    if provider == "twitter":
        return httpx.post(f"{base}/2/tweets", json={"text": "hi"}, headers=headers)
    if provider == "linkedin":
        return httpx.post(
            f"{base}/rest/posts", json=linkedin_post(), headers=headers | LINKEDIN_HEADERS
        )
    if provider == "facebook":
        # With a user token (a Page post takes the Page's token: test_facebook_pages.py).
        return httpx.get(f"{base}/me/accounts", headers=headers)
    if provider == "instagram":
        return httpx.post(
            f"{base}/1784/media", data={"image_url": "https://x.test/a.jpg"}, headers=headers
        )
    if provider == "youtube":
        return httpx.get(
            f"{base}youtube/v3/videos", params={"part": "id", "id": "x"}, headers=headers
        )
    body = {
        "post_info": {"title": "hi", "privacy_level": "SELF_ONLY"},
        "source_info": {"source": "PULL_FROM_URL", "video_url": "https://x.test/v"},
    }
    return httpx.post(f"{base}/v2/post/publish/video/init/", json=body, headers=headers)


UNAUTHORIZED_SHAPES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "twitter": lambda b: b["title"] == "Unauthorized" and b["status"] == 401,
    "linkedin": lambda b: b["code"] == "INVALID_ACCESS_TOKEN" and b["serviceErrorCode"] == 65600,
    "facebook": lambda b: b["error"]["code"] == 190 and b["error"]["type"] == "OAuthException",
    "instagram": lambda b: b["error"]["code"] == 190,
    "youtube": lambda b: b["error"]["status"] == "UNAUTHENTICATED",
    "tiktok": lambda b: b["error"]["code"] == "access_token_invalid",
}


@pytest.mark.parametrize("provider", publishing.PROVIDERS)
def test_an_unknown_or_another_platforms_token_is_401_in_the_platforms_shape(
    provider: str, bases: dict[str, str]
) -> None:
    other = "twitter" if provider != "twitter" else "tiktok"

    unknown = _call(provider, bases, auth(provider, "not-a-token"))
    foreign = _call(provider, bases, auth(other))
    missing = _call(provider, bases, {})
    accepted = _call(provider, bases, auth(provider))

    for refused in (unknown, foreign, missing):
        assert refused.status_code == 401
        assert UNAUTHORIZED_SHAPES[provider](refused.json()), refused.text
    assert accepted.is_success, accepted.text


def test_token_notices_register_expire_and_revoke(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    sink = server.sandbox.token_sink
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    issued = httpx.post(
        sink,
        json={
            "event": "issued",
            "provider": "linkedin",
            "accessToken": "sbx-linkedin-1",
            "expiresAt": later,
            "scopes": ["w_member_social"],
            "subject": "u1",
        },
    )
    expired = httpx.post(
        sink,
        json={
            "event": "issued",
            "provider": "linkedin",
            "accessToken": "sbx-linkedin-2",
            "expiresAt": earlier,
        },
    )
    other = httpx.post(
        sink,
        json={
            "event": "issued",
            "provider": "google_calendar",
            "accessToken": "sbx-google-1",
            "expiresAt": later,
        },
    )
    server.sandbox.register_token("twitter", "direct-x-token")

    assert issued.status_code == 201 and other.json() == {"accepted": False}
    assert expired.status_code == 201
    assert _call("linkedin", bases, auth("linkedin", "sbx-linkedin-1")).status_code == 201
    assert _call("linkedin", bases, auth("linkedin", "sbx-linkedin-2")).status_code == 401
    assert _call("twitter", bases, auth("twitter", "direct-x-token")).status_code == 201
    assert _call("twitter", bases, auth("twitter", "sbx-linkedin-1")).status_code == 401
    revoked = httpx.post(
        sink, json={"event": "revoked", "provider": "linkedin", "accessToken": "sbx-linkedin-1"}
    )
    assert revoked.json() == {"accepted": True}
    assert _call("linkedin", bases, auth("linkedin", "sbx-linkedin-1")).status_code == 401
    assert httpx.post(sink, json={"provider": "twitter"}).status_code == 400


def test_the_oauth_sandboxs_tokens_work_here_once_registered_as_a_sink(
    server: PublishingServer, bases: dict[str, str], tmp_path: Path
) -> None:
    oauth = OAuthProvidersSandbox(port=0, providers_file=tmp_path / "providers.yaml")
    with oauth.run_in_thread() as running:
        running.sandbox.register_token_sink(server.sandbox.token_sink)
        catalog = load_catalog(Path(running.sandbox.environment()["PROVIDERS_FILE"]))
        twitter = catalog.get("twitter")
        assert twitter is not None
        token = connect(twitter).access_token

        accepted = eventually(
            lambda: _call("twitter", bases, auth("twitter", token)).status_code == 201
        )

    assert accepted
    assert _call("linkedin", bases, auth("linkedin", token)).status_code == 401


def test_rate_limits_answer_429_per_token_until_the_window_resets(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    for provider in ("twitter", "linkedin"):
        httpx.post(
            f"{server.api_base}/_sandbox/rate-limits",
            json={"provider": provider, "limit": 2, "windowSeconds": 60},
        ).raise_for_status()
    server.sandbox.register_token("twitter", "second-x-token")

    x_answers = [_call("twitter", bases, auth("twitter")) for _ in range(3)]
    other_token = _call("twitter", bases, auth("twitter", "second-x-token"))
    linkedin = [_call("linkedin", bases, auth("linkedin")) for _ in range(3)]

    assert [a.status_code for a in x_answers] == [201, 201, 429]
    assert [a.headers["x-rate-limit-remaining"] for a in x_answers] == ["1", "0", "0"]
    limited = x_answers[2]
    assert limited.json()["title"] == "Too Many Requests"
    assert limited.headers["x-rate-limit-limit"] == "2"
    assert limited.headers["x-rate-limit-remaining"] == "0"
    assert 0 < int(limited.headers["x-rate-limit-reset"]) - time.time() <= 61
    assert other_token.status_code == 201
    assert [a.status_code for a in linkedin] == [201, 201, 429]
    assert 1 <= int(linkedin[2].headers["retry-after"]) <= 60
    assert linkedin[2].json()["code"] == "TOO_MANY_REQUESTS"
    httpx.post(f"{server.api_base}/_sandbox/reset-limits").raise_for_status()
    assert _call("twitter", bases, auth("twitter")).status_code == 201


def test_a_youtube_429_reaches_the_google_client_with_retry_after(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    httpx.post(
        f"{server.api_base}/_sandbox/rate-limits",
        json={"provider": "youtube", "limit": 1, "windowSeconds": 30},
    ).raise_for_status()
    youtube = youtube_service(bases["youtube"])

    youtube.videos().list(part="id", id="x").execute()
    with pytest.raises(HttpError) as limited:
        youtube.videos().list(part="id", id="x").execute()

    assert limited.value.status_code == 429
    assert limited.value.error_details[0]["reason"] == "rateLimitExceeded"
    assert 1 <= int(limited.value.resp["retry-after"]) <= 30


@pytest.mark.parametrize(
    ("provider", "status", "check"),
    [
        ("tiktok", 503, lambda b: b["error"]["code"] == "internal_error"),
        ("facebook", 500, lambda b: b["error"]["code"] == 2),
        ("youtube", 503, lambda b: b["error"]["status"] == "UNAVAILABLE"),
        ("instagram", 429, lambda b: b["error"]["code"] == 32),
    ],
)
def test_faults_answer_the_status_in_the_platforms_shape(
    server: PublishingServer,
    bases: dict[str, str],
    provider: str,
    status: int,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    fault = {"provider": provider, "count": 1, "status": status, "retryAfter": 7}
    httpx.post(f"{server.api_base}/_sandbox/faults", json=fault).raise_for_status()

    failed = _call(provider, bases, auth(provider))
    then = _call(provider, bases, auth(provider))
    untouched = _call("twitter", bases, auth("twitter"))

    assert failed.status_code == status and check(failed.json()), failed.text
    if status == 429:
        assert failed.headers["retry-after"] == "7"
    assert then.is_success and untouched.is_success


def test_controls_refuse_bad_input(server: PublishingServer) -> None:
    controls = server.api_base + "/_sandbox"

    assert (
        httpx.post(f"{controls}/faults", json={"provider": "myspace", "count": 1}).status_code
        == 400
    )
    assert (
        httpx.post(f"{controls}/faults", json={"provider": "tiktok", "count": -1}).status_code
        == 400
    )
    assert (
        httpx.post(
            f"{controls}/rate-limits", json={"provider": "tiktok", "limit": 1, "windowSeconds": 0}
        ).status_code
        == 400
    )
    assert httpx.post(f"{controls}/processing", json={"seconds": -1}).status_code == 400
    assert httpx.post(f"{controls}/tokens", content=b"[]").status_code == 400
    limits = httpx.get(f"{controls}/rate-limits").json()["data"]
    assert set(limits) == set(publishing.PROVIDERS)


# --- running it ----------------------------------------------------------------------------------


def test_environment_command_and_bases() -> None:
    sandbox = PublishingSandbox(port=4321, tokens=(("twitter", "secret-token"),))

    # Scheme, host and port only, like every *_API_BASE; bases() adds the version prefixes.
    assert sandbox.environment() == {
        "TWITTER_API_BASE": "http://127.0.0.1:4321",
        "LINKEDIN_API_BASE": "http://127.0.0.1:4321",
        "FACEBOOK_API_BASE": "http://127.0.0.1:4321",
        "INSTAGRAM_API_BASE": "http://127.0.0.1:4321",
        "YOUTUBE_API_BASE": "http://127.0.0.1:4321",
        "TIKTOK_API_BASE": "http://127.0.0.1:4321",
    }
    assert sandbox.bases()["facebook"] == "http://127.0.0.1:4321/v21.0"
    some = PublishingSandbox(port=4321, providers=frozenset({"tiktok", "linkedin"}))
    assert some.environment() == {
        "LINKEDIN_API_BASE": "http://127.0.0.1:4321",
        "TIKTOK_API_BASE": "http://127.0.0.1:4321",
    }
    assert sandbox.token_sink == "http://127.0.0.1:4321/_sandbox/tokens"
    command = sandbox.command()
    assert command[:3] == [sys.executable, "-m", "relay.sandbox.publishing"]
    assert "secret-token" not in command


def env_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / ".env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def test_wanted_plan_and_describe(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    development = make_settings(relay_env="development")

    assert publishing.wanted(development)
    assert not publishing.wanted(make_settings(relay_env="development", sandbox="off"))
    assert publishing.plan(make_settings(relay_env="production")) is None
    planned = publishing.plan(development)
    assert planned is not None
    assert planned.stands_in_for() == list(publishing.PROVIDERS)
    assert publishing.describe(development, planned) == (
        f"sandboxed (local X, LinkedIn, Facebook, Instagram, YouTube, TikTok at {planned.api_base})"
    )
    # A platform with an OAuth client of its own stays real: the sandbox would refuse the
    # tokens its connections hold.
    with_x = make_settings(
        relay_env="development",
        _env_file=env_file(tmp_path, TWITTER_CLIENT_ID="x", TWITTER_CLIENT_SECRET="y"),
    )
    partly = publishing.plan(with_x)
    assert partly is not None and "TWITTER_API_BASE" not in partly.environment()
    assert publishing.describe(with_x, partly).endswith("; real: X)")
    assert publishing.describe(development, None).startswith("not configured")
    assert publishing.describe(with_x, None) == "real (X)"


def test_runs_as_a_module(tmp_path: Path) -> None:
    sandbox = PublishingSandbox()
    process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("wb")
    )
    try:
        sandbox.wait_ready()
        answer = _call("twitter", sandbox.bases(), auth("twitter"))
        assert answer.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert SANDBOX_TOKENS["twitter"].encode() not in (tmp_path / "stderr").read_bytes()


def test_the_latency_control_delays_platform_requests_not_the_controls(
    server: PublishingServer, bases: dict[str, str]
) -> None:
    latency = f"{server.api_base}/_sandbox/latency"
    assert httpx.post(latency, json={"seconds": -1}).status_code == 400
    # Two seconds: far over what a control takes even on a loaded machine.
    httpx.post(latency, json={"seconds": 2}).raise_for_status()
    started = time.monotonic()
    posted = httpx.post(
        f"{bases['twitter']}/2/tweets", json={"text": "slow"}, headers=auth("twitter")
    )
    slow = time.monotonic() - started
    started = time.monotonic()
    sandbox_posts(server)
    control = time.monotonic() - started
    httpx.post(latency, json={"seconds": 0}).raise_for_status()

    assert posted.status_code == 201, posted.text
    assert slow >= 2
    assert control < 2
