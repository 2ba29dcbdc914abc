"""FileWorkflow, against the S3 sandbox (moto's server, in this process).

- upload-ready: POST /v1/files, the presigned POST, complete (twice), READY.
- upload-rejected: a truncated JPEG, REJECTED with nothing left behind.
- delete-after-ready: READY, then DELETE (the run update-with-start begins for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.histories.scenarios import Recording, scenario, until


@contextmanager
def _s3() -> Iterator[dict[str, object]]:
    from relay.sandbox.s3 import S3Sandbox

    sandbox = S3Sandbox(port=0)
    with sandbox.run_in_thread():
        yield {
            "s3_bucket": sandbox.bucket,
            "s3_endpoint_url": sandbox.endpoint_url,
            "aws_region": sandbox.region,
            "aws_access_key_id": sandbox.access_key_id,
            "aws_secret_access_key": sandbox.secret_access_key,
        }


async def _upload(stack: Any, data: bytes, filename: str) -> str:
    import httpx

    async with stack.http() as http:
        created = await http.post(
            "/v1/files",
            json={
                "kind": "attachment",
                "userId": "user-rec",
                "conversationId": "conv-rec",
                "messageId": "msg-rec",
                "filename": filename,
                "contentType": "image/jpeg",
                "size": len(data),
            },
        )
        created.raise_for_status()
        upload = created.json()["data"]
        async with httpx.AsyncClient() as s3:
            posted = await s3.post(
                upload["uploadUrl"],
                data=upload["uploadFields"],
                files={"file": (filename, data, "image/jpeg")},
            )
            posted.raise_for_status()
        for _ in range(2):
            completed = await http.post(f"/v1/files/{upload['id']}/complete")
            assert completed.status_code < 300, completed.text

        async def processed() -> bool:
            answer = (await http.get(f"/v1/files/{upload['id']}")).json()["data"]
            return answer["status"] in {"READY", "REJECTED"}

        await until(processed)
    return str(upload["id"])


@scenario("FileWorkflow", "upload-ready")
async def upload_ready(rec: Recording) -> list[str]:
    from relay.files.contracts import file_workflow_id
    from tests.files import samples

    with _s3() as settings:
        async with rec.stack(**settings) as stack:
            file_id = await _upload(stack, samples.jpeg_with_exif(), "photo.jpg")
            return [file_workflow_id(file_id)]


@scenario("FileWorkflow", "upload-ready-processing-queue")
async def upload_ready_on_the_processing_queue(rec: Recording) -> list[str]:
    """upload-ready as today's code runs it: `process_upload` on the processing task queue
    of its own (the patched branch), which the older histories predate."""
    from relay.files.contracts import file_workflow_id
    from tests.files import samples

    with _s3() as settings:
        async with rec.stack(**settings) as stack:
            file_id = await _upload(stack, samples.jpeg_with_exif(), "queued.jpg")
            return [file_workflow_id(file_id)]


@scenario("FileWorkflow", "upload-rejected")
async def upload_rejected(rec: Recording) -> list[str]:
    from relay.files.contracts import file_workflow_id
    from tests.files import samples

    with _s3() as settings:
        async with rec.stack(**settings) as stack:
            file_id = await _upload(stack, samples.truncated_jpeg(), "broken.jpg")
            return [file_workflow_id(file_id)]


@scenario("FileWorkflow", "delete-after-ready")
async def delete_after_ready(rec: Recording) -> list[str]:
    from relay.files.contracts import file_workflow_id
    from tests.files import samples

    with _s3() as settings:
        async with rec.stack(**settings) as stack:
            file_id = await _upload(stack, samples.jpeg_with_exif(), "gone.jpg")
            async with stack.http() as http:  # type: ignore[attr-defined]
                (await http.delete(f"/v1/files/{file_id}")).raise_for_status()
            handle = stack.client.get_workflow_handle(file_workflow_id(file_id))
            await handle.result()
            return [file_workflow_id(file_id)]
