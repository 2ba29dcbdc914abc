"""Files fixtures: moto's S3 server (Relay's sandbox, a real process on loopback), a
bucket of each test's own, and a stack (API + worker) pointed at it."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.models.webhooks import WebhookEvent
from relay.sandbox.s3 import S3Sandbox
from relay.settings import Settings
from relay.worker_context import WorkerContext
from tests.conftest import ServerThread, Stack, eventually, task_queue, terminate_running
from worker import build_dedicated_workers, build_worker

events_table = WebhookEvent.__table__  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Sandbox]:
    """`python -m relay.sandbox.s3` (moto's server) on a free port, for the session."""
    sandbox = S3Sandbox()
    process = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready()
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3(s3_server: S3Sandbox) -> S3Sandbox:
    """The sandbox, with a bucket of this test's own (created, CORS rule set)."""
    sandbox = dataclasses.replace(s3_server, bucket=f"relay-test-{uuid.uuid4().hex[:12]}")
    sandbox.ensure_bucket()
    return sandbox


def bucket_keys(sandbox: S3Sandbox) -> list[str]:
    answer = sandbox.client().list_objects_v2(Bucket=sandbox.bucket)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def s3_settings(sandbox: S3Sandbox) -> dict[str, object]:
    return {
        "s3_bucket": sandbox.bucket,
        "s3_endpoint_url": sandbox.endpoint_url,
        "aws_region": sandbox.region,
        "aws_access_key_id": sandbox.access_key_id,
        "aws_secret_access_key": sandbox.secret_access_key,
    }


@pytest.fixture
def files_overrides() -> dict[str, object]:
    """More settings for `files_stack` (a test module overrides this fixture)."""
    return {}


@pytest_asyncio.fixture(loop_scope="session")
async def files_stack(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    s3: S3Sandbox,
    files_overrides: dict[str, object],
) -> AsyncIterator[Stack]:
    """An API (uvicorn on loopback) and a worker against the dev server and the sandbox."""
    client = temporal_env.client
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        # Small enough that the tests' decompression bomb stays a few KB.
        image_max_pixels=4_000_000,
        file_max_bytes=2_000_000,
        **s3_settings(s3),
        **files_overrides,
    )
    _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}")
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    worker = build_worker(context)
    # process_upload's own queue, as `relay worker` runs it.
    (processing,) = build_dedicated_workers(context)
    app = create_app(settings, engine=engine, keyring=keyring)
    async with worker, processing:
        with ServerThread(app) as server:
            yield Stack(settings, engine, keyring, client, server.url, raw_key, context)
        await terminate_running(client, settings.temporal_task_queue)
        for close in context.closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


# --- helpers -------------------------------------------------------------------------------


async def start_upload(stack: Stack, **body: Any) -> httpx.Response:
    async with stack.http() as http:
        return await http.post("/v1/files", json=body)


async def post_form(upload: dict[str, Any], data: bytes, content_type: str) -> httpx.Response:
    """The browser's part: the presigned POST, straight to S3."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            upload["uploadUrl"],
            data=upload["uploadFields"],
            files={"file": ("upload", data, content_type)},
        )


async def upload_and_complete(
    stack: Stack, data: bytes, *, content_type: str, filename: str, **body: Any
) -> dict[str, Any]:
    """Create, upload with the presigned POST, complete, wait until READY or REJECTED."""
    fields = {
        "kind": "attachment",
        "userId": "user-1",
        "conversationId": "conv-1",
        "messageId": f"msg-{uuid.uuid4().hex[:8]}",
        "filename": filename,
        "contentType": content_type,
        "size": len(data),
        **body,
    }
    created = await start_upload(stack, **fields)
    assert created.status_code == 201, created.text
    upload = created.json()["data"]
    posted = await post_form(upload, data, content_type)
    assert posted.status_code == 204, posted.text
    async with stack.http() as http:
        completed = await http.post(f"/v1/files/{upload['id']}/complete")
        assert completed.status_code == 200, completed.text
        assert completed.json()["data"]["status"] in {"PROCESSING", "READY", "REJECTED"}
    return await wait_processed(stack, upload["id"])


async def wait_processed(stack: Stack, file_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        async with stack.http() as http:
            answer = (await http.get(f"/v1/files/{file_id}")).json()["data"]
        return answer if answer["status"] in {"READY", "REJECTED"} else None

    return await eventually(done, timeout=60)  # type: ignore[return-value]


def published(engine: Engine, file_id: str) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [row.type for row in rows if (row.data or {}).get("fileId") == file_id]
