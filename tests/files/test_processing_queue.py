"""process_upload runs on the files' processing task queue, polled by a worker of its own
whose slots match its image processes: a burst waits in Temporal, not in one worker's
slots (docs/files.md, "Performance")."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from temporalio.api.enums.v1 import EventType

from activities.files import PROCESSING_SLOTS_PER_IMAGE_PROCESS
from relay.files.contracts import file_workflow_id, processing_task_queue
from relay.sandbox.s3 import S3Sandbox
from tests.conftest import Stack
from tests.files import samples
from tests.files.conftest import upload_and_complete
from worker import build_dedicated_workers

pytestmark = pytest.mark.e2e


async def test_processing_runs_on_its_own_bounded_queue(files_stack: Stack, s3: S3Sandbox) -> None:
    # One client registers one worker per task queue: the stack's own is already running,
    # and a queue built (never run) by an earlier parametrization stays registered.
    elsewhere = f"elsewhere-{uuid.uuid4().hex}"
    other = dataclasses.replace(
        files_stack.context,
        settings=files_stack.settings.model_copy(update={"temporal_task_queue": elsewhere}),
    )
    (processing,) = build_dedicated_workers(other)
    assert processing.task_queue == processing_task_queue(elsewhere)
    slots = processing.config()["max_concurrent_activities"]
    assert slots is not None and slots % PROCESSING_SLOTS_PER_IMAGE_PROCESS == 0
    queue = processing_task_queue(files_stack.settings.temporal_task_queue)

    file = await upload_and_complete(
        files_stack, samples.webp(), content_type="image/webp", filename="a.webp"
    )
    assert file["status"] == "READY", file
    handle = files_stack.client.get_workflow_handle(file_workflow_id(file["id"]))
    scheduled = {
        event.activity_task_scheduled_event_attributes.activity_type.name: (
            event.activity_task_scheduled_event_attributes.task_queue.name
        )
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert scheduled["process_upload"] == queue
    assert scheduled["begin_processing"] == files_stack.settings.temporal_task_queue
