"""End to end: HTTP → presigned POST to moto's S3 → complete → the file workflow → READY
or REJECTED, checked by opening what landed in the bucket."""

from __future__ import annotations

import hashlib
import io
import uuid

import httpx
import pytest
from PIL import Image

from relay.sandbox.s3 import S3Sandbox
from tests.conftest import Stack
from tests.files import samples
from tests.files.conftest import (
    bucket_keys,
    post_form,
    published,
    start_upload,
    upload_and_complete,
    wait_processed,
)

pytestmark = pytest.mark.e2e


async def fetch(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    return answer.content


def has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return samples.GPS_IFD in exif or bool(exif.get_ifd(samples.GPS_IFD))


async def test_a_jpeg_with_exif_is_upright_thumbnailed_compressed_and_gps_free(
    files_stack: Stack, s3: S3Sandbox
) -> None:
    original = samples.jpeg_with_exif(640, 480, orientation=6, gps=True)
    assert has_gps(original)
    file = await upload_and_complete(
        files_stack, original, content_type="image/jpeg", filename="Holiday photo.jpg"
    )
    assert file["status"] == "READY", file
    message = file["messageId"]
    # Stored 640x480 with orientation 6: displayed 480x640.
    meta = file["metadata"]
    assert (meta["width"], meta["height"]) == (480, 640)
    assert meta["format"] == "JPEG" and meta["orientation"] == 6
    assert (meta["cameraMake"], meta["cameraModel"]) == ("RelayCam", "Model 7")
    assert meta["gpsStripped"] is True
    assert file["contentType"] == "image/jpeg"
    assert file["size"] == len(original)
    assert file["sha256"] == hashlib.sha256(original).hexdigest()

    # The original, byte for byte, at seed 000's key; the upload gone from temp/.
    assert await fetch(file["url"]) == original
    keys = bucket_keys(s3)
    assert f"attachments/conv-1/{message}/Holiday-photo.jpg" in keys
    assert not [key for key in keys if key.startswith("temp/")]

    names = {r["name"]: r for r in file["renditions"]}
    assert set(names) == {
        "compressed-Holiday-photo.jpg",
        *(f"thumb-{size}-Holiday-photo.jpg" for size in (64, 128, 256, 512)),
    }
    for size in (64, 128, 256, 512):
        assert f"thumbnails/{message}/thumb-{size}-Holiday-photo.jpg" in keys
    for rendition in file["renditions"]:
        data = await fetch(rendition["url"])
        assert len(data) == rendition["bytes"]
        assert not has_gps(data), rendition["name"]
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"
            assert image.size == (rendition["width"], rendition["height"])
            # Upright: portrait, the display aspect ratio kept.
            width, height = image.size
            assert height > width
            assert abs(width / height - 480 / 640) < 0.02
            if rendition["name"].startswith("thumb-"):
                size = int(rendition["name"].split("-")[1])
                assert max(image.size) == min(size, 640)
            # The blue marker (stored top-left) is top-right once rotated 90° clockwise.
            r, g, b = image.convert("RGB").getpixel((width - 2, 1))  # type: ignore[misc]
            assert b > 150 and r < 100, rendition["name"]
    assert published(files_stack.engine, file["id"]) == ["file.ready"]


async def test_a_transparent_png_avatar_keeps_its_alpha(files_stack: Stack, s3: S3Sandbox) -> None:
    original = samples.png_with_transparency(300, 200)
    file = await upload_and_complete(
        files_stack, original, content_type="image/png", filename="me.png", kind="avatar"
    )
    assert file["status"] == "READY", file
    assert file["metadata"]["hasAlpha"] is True
    keys = bucket_keys(s3)
    assert f"avatars/user-1/{file['id']}/me.png" in keys
    names = {r["name"]: r for r in file["renditions"]}
    assert "compressed-me.png.webp" in names
    for size in (64, 128, 256, 512):
        assert f"thumbnails/{file['id']}/thumb-{size}-me.png" in keys
        data = await fetch(names[f"thumb-{size}-me.png"]["url"])
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.mode == "RGBA"
            assert max(image.size) == min(size, 300)
            assert abs(image.size[0] / image.size[1] - 1.5) < 0.03
            # Left half opaque, right half transparent, as drawn.
            assert image.getpixel((0, image.size[1] // 2))[3] == 255  # type: ignore[index]
            assert image.getpixel((image.size[0] - 1, image.size[1] // 2))[3] == 0  # type: ignore[index]
    with Image.open(io.BytesIO(await fetch(names["compressed-me.png.webp"]["url"]))) as image:
        assert image.format == "WEBP" and image.mode == "RGBA"


async def test_a_webp_gets_webp_thumbnails(files_stack: Stack) -> None:
    file = await upload_and_complete(
        files_stack, samples.webp(400, 400), content_type="image/webp", filename="w.webp"
    )
    assert file["status"] == "READY", file
    thumbs = [r for r in file["renditions"] if r["name"].startswith("thumb-")]
    assert len(thumbs) == 4
    for rendition in thumbs:
        with Image.open(io.BytesIO(await fetch(rendition["url"]))) as image:
            assert image.format == "WEBP"
            assert image.size[0] == image.size[1] == rendition["width"]


async def test_a_non_image_is_stored_and_described_without_renditions(
    files_stack: Stack, s3: S3Sandbox
) -> None:
    data = samples.NOT_AN_IMAGE
    file = await upload_and_complete(
        files_stack, data, content_type="application/pdf", filename="report.pdf"
    )
    assert file["status"] == "READY", file
    assert file["renditions"] == []
    assert file["contentType"] == "application/pdf"
    assert file["size"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert await fetch(file["url"]) == data
    assert bucket_keys(s3) == [f"attachments/conv-1/{file['messageId']}/report.pdf"]


@pytest.mark.parametrize(
    ("make", "content_type", "reason"),
    [
        (samples.truncated_jpeg, "image/jpeg", "truncated_image"),
        (lambda: samples.png_bomb(5000, 5000), "image/png", "too_many_pixels"),
        (lambda: samples.NOT_AN_IMAGE, "image/jpeg", "not_an_image"),
        (samples.webp, "image/jpeg", "type_mismatch"),
    ],
    ids=["truncated", "decompression-bomb", "not-an-image", "type-mismatch"],
)
async def test_bad_images_are_rejected_and_leave_nothing_behind(
    files_stack: Stack, s3: S3Sandbox, make: object, content_type: str, reason: str
) -> None:
    data = make()  # type: ignore[operator]
    file = await upload_and_complete(files_stack, data, content_type=content_type, filename="x")
    assert file["status"] == "REJECTED"
    assert file["reason"] == reason
    assert file["renditions"] == [] and file["url"] is None
    assert bucket_keys(s3) == []
    assert published(files_stack.engine, file["id"]) == ["file.rejected"]


async def test_bytes_past_the_declared_size_are_rejected(files_stack: Stack, s3: S3Sandbox) -> None:
    """An S3 that did not enforce the policy (or a PUT by another way): the object's real
    size is checked again, and the file rejected."""
    created = await start_upload(
        files_stack,
        kind="attachment",
        userId="u",
        conversationId="c",
        messageId="m-size",
        filename="a.jpg",
        contentType="image/jpeg",
        size=100,
    )
    upload = created.json()["data"]
    s3.client().put_object(Bucket=s3.bucket, Key=upload["key"], Body=samples.jpeg_with_exif())
    async with files_stack.http() as http:
        assert (await http.post(f"/v1/files/{upload['id']}/complete")).status_code == 200
    file = await wait_processed(files_stack, upload["id"])
    assert (file["status"], file["reason"]) == ("REJECTED", "size_mismatch")
    assert bucket_keys(s3) == []


async def test_s3_refuses_an_upload_bigger_than_declared(files_stack: Stack, s3: S3Sandbox) -> None:
    data = samples.jpeg_with_exif(64, 64, gps=False)
    created = await start_upload(
        files_stack,
        kind="avatar",
        userId="u",
        filename="a.jpg",
        contentType="image/jpeg",
        size=len(data) - 1,
    )
    upload = created.json()["data"]
    assert upload["key"] == f"temp/{upload['id']}/a.jpg"
    refused = await post_form(upload, data, "image/jpeg")
    assert refused.status_code == 400 and "EntityTooLarge" in refused.text
    wrong_type = await post_form(
        {**upload, "uploadFields": {**upload["uploadFields"], "Content-Type": "text/html"}},
        data[:-1],
        "text/html",
    )
    assert wrong_type.status_code == 403
    assert bucket_keys(s3) == []
    async with files_stack.http() as http:
        early = await http.post(f"/v1/files/{upload['id']}/complete")
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "CONFLICT"


async def test_bad_requests_write_nothing(files_stack: Stack, s3: S3Sandbox) -> None:
    base = {
        "kind": "attachment",
        "userId": "u",
        "conversationId": "c",
        "messageId": "m",
        "filename": "a.jpg",
        "contentType": "image/jpeg",
        "size": 10,
    }
    unknown_kind = await start_upload(files_stack, **{**base, "kind": "video"})
    assert unknown_kind.status_code == 422
    assert unknown_kind.json()["error"]["code"] == "VALIDATION_ERROR"
    no_message = await start_upload(files_stack, **{**base, "messageId": None})
    assert no_message.status_code == 422
    too_big = await start_upload(files_stack, **{**base, "size": 50_000_000})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    async with files_stack.http() as http:
        missing = await http.get("/v1/files/file_nope")
        assert missing.status_code == 404
        assert (await http.delete("/v1/files/file_nope")).status_code == 404
        assert (await http.post("/v1/files/file_nope/complete")).status_code == 404
        assert (
            await http.get("/v1/files/file_nope", headers={"Authorization": ""})
        ).status_code == 401
    assert bucket_keys(s3) == []
    # A second live attachment of the same name in one message would share its keys.
    assert (await start_upload(files_stack, **base)).status_code == 201
    duplicate = await start_upload(files_stack, **base)
    assert duplicate.status_code == 409


async def test_delete_removes_the_original_and_every_rendition(
    files_stack: Stack, s3: S3Sandbox
) -> None:
    file = await upload_and_complete(
        files_stack, samples.jpeg_with_exif(), content_type="image/jpeg", filename="d.jpg"
    )
    assert file["status"] == "READY"
    assert len(bucket_keys(s3)) == 6
    async with files_stack.http() as http:
        deleted = await http.delete(f"/v1/files/{file['id']}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["data"] == {"id": file["id"], "deleted": True}
        assert bucket_keys(s3) == []
        assert (await http.get(f"/v1/files/{file['id']}")).status_code == 404
        assert (await http.delete(f"/v1/files/{file['id']}")).status_code == 404


async def test_completing_twice_and_retrying_the_create_are_harmless(
    files_stack: Stack, s3: S3Sandbox
) -> None:
    data = samples.jpeg_with_exif(200, 100, gps=False)
    body = {
        "kind": "avatar",
        "userId": "u2",
        "filename": "a.jpg",
        "contentType": "image/jpeg",
        "size": len(data),
        # Unique per run: both database parametrizations share one Temporal server.
        "idempotencyKey": f"avatar-u2-{uuid.uuid4().hex}",
    }
    first = (await start_upload(files_stack, **body)).json()["data"]
    again = (await start_upload(files_stack, **body)).json()["data"]
    assert again["id"] == first["id"]
    other = await start_upload(files_stack, **{**body, "filename": "b.jpg"})
    assert other.status_code == 409, other.text
    assert [d["field"] for d in other.json()["error"]["details"]] == ["idempotencyKey", "filename"]
    assert (await post_form(again, data, "image/jpeg")).status_code == 204
    async with files_stack.http() as http:
        for _ in range(2):
            assert (await http.post(f"/v1/files/{first['id']}/complete")).status_code == 200
    file = await wait_processed(files_stack, first["id"])
    assert file["status"] == "READY"
    async with files_stack.http() as http:
        late = await http.post(f"/v1/files/{first['id']}/complete")
    assert late.status_code == 200 and late.json()["data"]["status"] == "READY"
    retried = await start_upload(files_stack, **body)
    assert retried.status_code == 409, retried.text
    assert retried.json()["error"]["code"] == "CONFLICT"
    assert published(files_stack.engine, first["id"]) == ["file.ready"]


async def test_delete_before_completion_removes_the_upload(
    files_stack: Stack, s3: S3Sandbox
) -> None:
    data = samples.webp(64, 64)
    created = await start_upload(
        files_stack,
        kind="avatar",
        userId="u3",
        filename="p.webp",
        contentType="image/webp",
        size=len(data),
    )
    upload = created.json()["data"]
    assert (await post_form(upload, data, "image/webp")).status_code == 204
    assert bucket_keys(s3) == [upload["key"]]
    async with files_stack.http() as http:
        assert (await http.delete(f"/v1/files/{upload['id']}")).status_code == 200
        assert (await http.get(f"/v1/files/{upload['id']}")).status_code == 404
        # The run ended with the delete: completing now finds no file.
        assert (await http.post(f"/v1/files/{upload['id']}/complete")).status_code == 404
    assert bucket_keys(s3) == []
    assert published(files_stack.engine, upload["id"]) == []
