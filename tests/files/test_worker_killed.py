"""A worker killed (SIGKILL) while it processes a file: once a worker is back, the step is
retried and the file is READY, complete and nothing written twice wrongly."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.files.contracts import file_workflow_id
from relay.ledger import Ledger
from relay.sandbox.s3 import S3Sandbox
from relay.settings import Settings
from relay.worker_context import WorkerContext
from tests.conftest import ServerThread, Stack, eventually, task_queue, terminate_running
from tests.files import samples
from tests.files.conftest import bucket_keys, post_form, s3_settings, start_upload, wait_processed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _processing_started(stack: Stack, file_id: str) -> bool:
    handle = stack.client.get_workflow_handle(file_workflow_id(file_id))
    for activity in (await handle.describe()).raw_description.pending_activities:
        if (
            activity.activity_type.name == "process_upload"
            and activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return True
    return False


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _process_attempts(stack: Stack, file_id: str) -> int:
    """The attempt of process_upload that completed (history keeps the last start)."""
    history = await stack.client.get_workflow_handle(file_workflow_id(file_id)).fetch_history()
    scheduled: set[int] = set()
    for event in history.events:
        attributes = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes"):
            if attributes.activity_type.name == "process_upload":
                scheduled.add(event.event_id)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                return int(started.attempt)
    return 0


async def test_a_worker_killed_mid_processing_leaves_a_ready_file(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    s3: S3Sandbox,
    run_worker_process: Callable[[Settings], Any],
) -> None:
    client = temporal_env.client
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        **s3_settings(s3),
    )
    _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}")
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    app = create_app(settings, engine=engine, keyring=keyring)
    # A 12 MP photo: long enough to be caught mid-processing.
    original = samples.jpeg_with_exif(4000, 3000, orientation=1, gps=True)
    with ServerThread(app) as server:
        stack = Stack(settings, engine, keyring, client, server.url, raw_key, context)
        worker = run_worker_process(settings)
        created = await start_upload(
            stack,
            kind="attachment",
            userId="u",
            conversationId="c",
            messageId="m-kill",
            filename="big.jpg",
            contentType="image/jpeg",
            size=len(original),
        )
        assert created.status_code == 201, created.text
        upload = created.json()["data"]
        assert (await post_form(upload, original, "image/jpeg")).status_code == 204
        async with stack.http() as http:
            assert (await http.post(f"/v1/files/{upload['id']}/complete")).status_code == 200
        for _ in range(2000):
            if await _processing_started(stack, upload["id"]):
                break
            await asyncio.sleep(0.005)
        images = _children(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # Its image processes die with it (PR_SET_PDEATHSIG), none is left orphaned.
        await eventually(lambda: not [pid for pid in images if _alive(pid)], timeout=10)
        # Whatever it had written is overwritten by the retry on the next worker.
        run_worker_process(settings)
        file = await wait_processed(stack, upload["id"])
        attempts = await _process_attempts(stack, upload["id"])
        await terminate_running(client, settings.temporal_task_queue)
    assert attempts >= 2  # the first attempt died with the worker
    assert file["status"] == "READY", file
    assert file["sha256"] == hashlib.sha256(original).hexdigest()
    assert len(file["renditions"]) == 5
    keys = bucket_keys(s3)
    assert "attachments/c/m-kill/big.jpg" in keys
    assert not [key for key in keys if key.startswith("temp/")]
    assert len(keys) == 6
