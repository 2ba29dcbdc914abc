"""GET /v1/files: newest first, filtered, keyset-paginated, items shaped as GET's without
URLs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Stack
from tests.files import samples
from tests.files.conftest import start_upload, upload_and_complete

pytestmark = pytest.mark.e2e


async def listed(stack: Stack, **params: Any) -> tuple[int, dict[str, Any]]:
    async with stack.http() as http:
        answer = await http.get("/v1/files", params=params)
    return answer.status_code, answer.json()


async def every_page(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        status, body = await listed(stack, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        assert len(body["data"]) <= params.get("limit", 50)
        items += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items


async def test_files_are_listed_newest_first_filtered_and_paginated(files_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    made: list[str] = []
    for index in range(5):
        body: dict[str, Any] = {
            "kind": "avatar" if index % 2 else "attachment",
            "userId": user,
            "filename": f"f{index}.pdf",
            "contentType": "application/pdf",
            "size": 10,
        }
        if body["kind"] == "attachment":
            body |= {"conversationId": "c1", "messageId": f"m{index}"}
        created = await start_upload(files_stack, **body)
        assert created.status_code == 201, created.text
        made.append(created.json()["data"]["id"])
    other = await start_upload(
        files_stack,
        kind="avatar",
        userId=f"other-{uuid.uuid4().hex[:8]}",
        filename="o.pdf",
        contentType="application/pdf",
        size=10,
    )
    assert other.status_code == 201

    items = await every_page(files_stack, userId=user, limit=2)
    assert [item["id"] for item in items] == list(reversed(made))
    first = items[-1]
    assert first["status"] == "PENDING_UPLOAD" and first["filename"] == "f0.pdf"
    assert first["userId"] == user and first["conversationId"] == "c1"
    assert first["uploadExpiresAt"] and first["createdAt"]

    avatars = await every_page(files_stack, userId=user, kind="avatar")
    assert [item["id"] for item in avatars] == [made[3], made[1]]
    assert await every_page(files_stack, userId=user, status="READY") == []
    assert await every_page(files_stack, userId=user, status="DELETED") == []

    # A deleted file is gone from the list too.
    async with files_stack.http() as http:
        assert (await http.delete(f"/v1/files/{made[4]}")).status_code == 200
    assert [item["id"] for item in await every_page(files_stack, userId=user)] == list(
        reversed(made[:4])
    )


async def test_a_ready_file_is_listed_with_its_renditions_but_no_urls(files_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    data = samples.jpeg_with_exif(300, 200, orientation=1, gps=False)
    ready = await upload_and_complete(
        files_stack, data, content_type="image/jpeg", filename="a.jpg", userId=user
    )
    assert ready["status"] == "READY"
    (item,) = await every_page(files_stack, userId=user, status="READY")
    assert item["id"] == ready["id"]
    assert item["metadata"] == ready["metadata"] and item["sha256"] == ready["sha256"]
    assert item["url"] is None and item["urlsExpireAt"] is None
    assert [(r["name"], r["width"], r["bytes"]) for r in item["renditions"]] == [
        (r["name"], r["width"], r["bytes"]) for r in ready["renditions"]
    ]
    assert all(r["url"] is None for r in item["renditions"])
    assert all(r["url"] for r in ready["renditions"])


async def test_bad_list_parameters_are_422_and_the_list_needs_an_api_key(
    files_stack: Stack,
) -> None:
    bad: list[dict[str, Any]] = [
        {"cursor": "not-a-cursor"},
        {"limit": 0},
        {"limit": 201},
        {"kind": "video"},
        {"status": "X"},
    ]
    for params in bad:
        status, body = await listed(files_stack, **params)
        assert status == 422, (params, body)
        assert body["error"]["code"] == "VALIDATION_ERROR"
    async with files_stack.http(authenticated=False) as http:
        assert (await http.get("/v1/files")).status_code == 401
