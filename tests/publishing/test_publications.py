"""Publications end to end: the API, the `publication-{id}` workflow and its activities on
the Temporal dev server, against the OAuth and publishing platforms sandboxes (real OAuth
connections, real adapters, moto's S3 for stored media, the real database)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import eventually
from tests.publishing.conftest import PublishingStack

pytestmark = [pytest.mark.e2e]

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"v" * 4000
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 2000


def _by_provider(publication: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {target["provider"]: target for target in publication["targets"]}


async def _sync_logs(stack: PublishingStack, integration_id: str) -> list[dict[str, Any]]:
    async with stack.http() as http:
        answer = await http.get(f"/v1/integrations/{integration_id}/sync-logs")
    assert answer.status_code == 200, answer.text
    logs: list[dict[str, Any]] = answer.json()["data"]
    return [log for log in logs if log["action"].startswith("content_")]


async def _integration(stack: PublishingStack, integration_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        answer = await http.get(f"/v1/integrations/{integration_id}")
    data: dict[str, Any] = answer.json()["data"]
    return data


async def test_a_text_post_reaches_every_connected_platform_once_and_is_unpublished(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    ids = {p: await stack.connect(p) for p in ("twitter", "linkedin", "facebook", "instagram")}
    await stack.connect("twitter", "someone-else")
    body = {"contentId": "post-1", "text": "Relay ships today", "idempotencyKey": "launch"}
    created = await stack.publish(**body)
    assert created.status_code == 201, created.text
    publication = created.json()["data"]
    # Default targets: every CONNECTED publishing connection of this user, no one else's.
    assert sorted(t["integrationId"] for t in publication["targets"]) == sorted(ids.values())
    done = await stack.settled(publication["id"])
    targets = _by_provider(done)
    assert done["status"] == "PUBLISHED", done
    for provider in ("twitter", "linkedin", "facebook"):
        assert targets[provider]["status"] == "PUBLISHED", targets[provider]
        assert targets[provider]["remoteId"] and targets[provider]["url"]
        assert targets[provider]["attempts"] == 1
        assert stack.publishes(provider) == 1
    # A target the platform cannot take is SKIPPED, and does not make it PARTIAL.
    assert targets["instagram"]["status"] == "SKIPPED"
    assert targets["instagram"]["skipReason"] == "MEDIA_REQUIRED"
    assert stack.publishes("instagram") == 0

    # The same contentId + idempotencyKey: the same publication, nothing posted again.
    again = await stack.publish(**body)
    assert again.status_code == 201, again.text
    assert again.json()["data"]["id"] == publication["id"]
    different = await stack.publish(**(body | {"text": "Something else"}))
    assert different.status_code == 409, different.text
    assert different.json()["error"]["code"] == "CONFLICT"
    assert stack.publishes("twitter") == 1

    # Seed 003's sync log per target attempt, lastSyncAt, and the events.
    (log,) = await _sync_logs(stack, ids["twitter"])
    assert log["status"] == "COMPLETED" and log["resourceId"] == publication["id"]
    assert log["itemsProcessed"] == 1
    assert (await _integration(stack, ids["twitter"]))["lastSyncAt"] is not None
    (event,) = stack.events("publication.published")
    assert event["data"]["publicationId"] == publication["id"]
    assert len(stack.events("integration.synced")) == 3

    async with stack.http() as http:
        listed = await http.get("/v1/publications", params={"userId": "user-1", "limit": 1})
        assert listed.status_code == 200, listed.text
        assert [p["id"] for p in listed.json()["data"]] == [publication["id"]]
        by_content = await http.get("/v1/publications", params={"contentId": "nope"})
        assert by_content.json()["data"] == []
        removed = await http.delete(f"/v1/publications/{publication['id']}")
    assert removed.status_code == 200, removed.text
    gone = removed.json()["data"]
    assert gone["status"] == "UNPUBLISHED"
    targets = _by_provider(gone)
    for provider in ("twitter", "linkedin", "facebook"):
        assert targets[provider]["status"] == "UNPUBLISHED", targets[provider]
        (post,) = stack.posts(provider)
        assert post["deleted"] is True
    assert targets["instagram"]["status"] == "SKIPPED"


async def test_one_platform_refusing_leaves_the_others_published_and_long_text_is_skipped(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    ids = {p: await stack.connect(p) for p in ("twitter", "linkedin", "facebook")}
    stack.fault("linkedin", count=1, status=403)
    created = await stack.publish(text="x" * 300)
    assert created.status_code == 201, created.text
    # A post X cannot take is answered SKIPPED at once, with the limit named; the others
    # are publishing.
    answered = _by_provider(created.json()["data"])
    assert created.json()["data"]["status"] == "PUBLISHING"
    assert answered["twitter"]["status"] == "SKIPPED"
    assert answered["twitter"]["skipReason"] == "TEXT_TOO_LONG"
    assert {answered[p]["status"] for p in ("linkedin", "facebook")} <= {
        "PENDING",
        "PUBLISHING",
        "PUBLISHED",
        "FAILED",
    }
    done = await stack.settled(created.json()["data"]["id"])
    targets = _by_provider(done)
    assert done["status"] == "PARTIAL", done
    assert targets["facebook"]["status"] == "PUBLISHED"
    assert targets["linkedin"]["status"] == "FAILED"
    assert targets["linkedin"]["errorCode"] == "PROVIDER_ERROR"
    assert "403" in targets["linkedin"]["lastError"]
    # Text over X's limit: skipped with the limit named; the others went on.
    assert targets["twitter"]["status"] == "SKIPPED"
    assert targets["twitter"]["skipReason"] == "TEXT_TOO_LONG"
    assert "280" in targets["twitter"]["lastError"]
    assert stack.publishes("twitter") == 0
    (log,) = await _sync_logs(stack, ids["linkedin"])
    assert log["status"] == "FAILED" and log["itemsFailed"] == 1
    assert (await _integration(stack, ids["linkedin"]))["lastError"]
    assert len(stack.events("publication.partial")) == 1
    assert len(stack.events("integration.error")) >= 1


async def test_a_429_is_waited_out_and_a_rejected_token_is_refreshed_once(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    linkedin = await stack.connect("linkedin")
    twitter = await stack.connect("twitter")
    stack.fault("linkedin", count=1, status=429, retry_after=1)
    old_token = stack.access_token(twitter)
    # X no longer takes the token it was given; the OAuth sandbox still refreshes it.
    stack.platform.state.revoke_token(old_token)
    created = await stack.publish(text="Retry me")
    done = await stack.settled(created.json()["data"]["id"])
    targets = _by_provider(done)
    assert done["status"] == "PUBLISHED", done
    assert targets["linkedin"]["attempts"] == 2
    assert stack.publishes("linkedin") == 1
    logs = await _sync_logs(stack, linkedin)
    assert sorted(log["status"] for log in logs) == ["COMPLETED", "FAILED"]
    # One refresh through the connection's workflow: a new token, stored, and one post.
    assert stack.access_token(twitter) != old_token
    assert stack.publishes("twitter") == 1
    assert targets["twitter"]["attempts"] == 1


async def test_a_rejected_token_that_cannot_be_refreshed_fails_its_target_as_needs_reauth(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    # Facebook's long-lived token has no refresh token: a refused one cannot be renewed.
    facebook = await stack.connect("facebook")
    twitter = await stack.connect("twitter")
    stack.platform.state.revoke_token(stack.access_token(facebook))
    created = await stack.publish(text="Nobody home")
    done = await stack.settled(created.json()["data"]["id"])
    targets = _by_provider(done)
    assert done["status"] == "PARTIAL", done
    assert targets["facebook"]["status"] == "FAILED"
    assert targets["facebook"]["errorCode"] == "NEEDS_REAUTH", targets["facebook"]
    assert targets["twitter"]["status"] == "PUBLISHED"
    assert stack.publishes("facebook") == 0
    assert (await _integration(stack, facebook))["lastError"]
    assert len(stack.events("publication.partial")) == 1
    assert twitter


async def test_media_posts_are_processed_and_what_cannot_be_deleted_is_reported(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    for provider in ("youtube", "tiktok", "instagram"):
        await stack.connect(provider)
    video = stack.stored_file(VIDEO, "video/mp4", "launch.mp4", "user-1")
    created = await stack.publish(text="Launch video", mediaFileIds=[video])
    assert created.status_code == 201, created.text
    done = await stack.settled(created.json()["data"]["id"])
    targets = _by_provider(done)
    assert done["status"] == "PUBLISHED", done
    for provider in ("youtube", "tiktok", "instagram"):
        assert targets[provider]["status"] == "PUBLISHED", targets[provider]
        assert targets[provider]["remoteId"], targets[provider]
        assert stack.publishes(provider) == 1

    async with stack.http() as http:
        removed = await http.delete(f"/v1/publications/{done['id']}")
    assert removed.status_code == 200, removed.text
    gone = removed.json()["data"]
    targets = _by_provider(gone)
    assert gone["status"] == "UNPUBLISHED"
    assert targets["youtube"]["status"] == "UNPUBLISHED"
    # Instagram's and TikTok's APIs cannot delete: reported per target, not hidden.
    for provider in ("instagram", "tiktok"):
        assert targets[provider]["status"] == "DELETE_FAILED", targets[provider]
        assert targets[provider]["deleteError"]


async def test_bad_requests_are_refused_before_anything_is_written(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    mine = await stack.connect("twitter")
    theirs = await stack.connect("twitter", "user-2")
    calendar = await stack.connect("linkedin")
    async with stack.http() as http:
        await http.patch(f"/v1/integrations/{calendar}", json={"isActive": False})
    pending = stack.stored_file(JPEG, "image/jpeg", "a.jpg", "user-1")
    from relay.files import repository as files
    from relay.files.contracts import FileStatus

    view = files.find_view(stack.engine, pending)
    assert view is not None
    view.status = FileStatus.PROCESSING
    files.save_view(stack.engine, view)

    async def refused(status: int, code: str, **body: Any) -> dict[str, Any]:
        answer = await stack.publish(**({"text": "hello"} | body))
        assert answer.status_code == status, answer.text
        error: dict[str, Any] = answer.json()["error"]
        assert error["code"] == code, error
        return error

    await refused(404, "INTEGRATION_NOT_FOUND", integrationIds=[str(uuid.uuid4())])
    await refused(404, "INTEGRATION_NOT_FOUND", integrationIds=[theirs])
    error = await refused(409, "CONFLICT", integrationIds=[calendar])
    assert "not CONNECTED" in error["message"]
    error = await refused(409, "CONFLICT", integrationIds=[mine], mediaFileIds=[pending])
    assert "PROCESSING" in error["message"]
    # Media are named by the files capability's ids (file_…), as POST /v1/files answers.
    error = await refused(
        422, "VALIDATION_ERROR", integrationIds=[mine], mediaFileIds=[str(uuid.uuid4())]
    )
    assert any("mediaFileIds" in str(item.get("field")) for item in error["details"]), error
    await refused(422, "VALIDATION_ERROR", integrationIds=[mine], scheduledAt="2030-01-01T10:00")
    await refused(422, "VALIDATION_ERROR", integrationIds=[], text="x")
    await refused(409, "CONFLICT", userId="nobody")
    async with stack.http() as http:
        assert (await http.get(f"/v1/publications/{uuid.uuid4()}")).status_code == 404
        assert (await http.get("/v1/publications/not-an-id")).status_code == 404
        listed = await http.get("/v1/publications")
    assert listed.json()["data"] == []


async def test_the_shared_limit_spaces_publishes_without_a_429(
    publishing_stack_factory: Any,
) -> None:
    async with publishing_stack_factory(publish_rate_limits="twitter=1/2s") as stack:
        await stack.connect("twitter")
        first = await stack.publish(text="one")
        second = await stack.publish(text="two")
        for created in (first, second):
            done = await stack.settled(created.json()["data"]["id"])
            assert done["status"] == "PUBLISHED", done
        assert stack.publishes("twitter") == 2

        async def both_counted() -> bool:
            return bool(stack.platform.state.posts()["requests"]["twitter"] == 2)

        await eventually(both_counted)


async def test_a_scheduled_publication_is_canceled_through_the_api(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    await stack.connect("twitter")
    created = await stack.publish(text="Later", scheduledAt="2031-01-01T09:00:00+01:00")
    assert created.status_code == 201, created.text
    publication = created.json()["data"]
    assert publication["status"] == "SCHEDULED"
    assert publication["scheduledAt"] == "2031-01-01T08:00:00Z"
    async with stack.http() as http:
        canceled = await http.post(f"/v1/publications/{publication['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["data"]["status"] == "CANCELED"
        assert canceled.json()["data"]["targets"][0]["status"] == "CANCELED"
        again = await http.post(f"/v1/publications/{publication['id']}/cancel")
        assert again.status_code == 409, again.text
        removed = await http.delete(f"/v1/publications/{publication['id']}")
        assert removed.status_code == 200, removed.text
        assert removed.json()["data"]["status"] == "CANCELED"
    assert stack.publishes("twitter") == 0
