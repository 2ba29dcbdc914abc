"""The upload-expiry timer on the time-skipping server: an upload never completed is
deleted from temp/ after UPLOAD_EXPIRY, and the file is REJECTED (upload_expired)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.files import FileActivities
from relay.files.contracts import FileInput, FileKind, FileStatus, FileView, file_workflow_id
from relay.files.layout import upload_key
from relay.files.repository import find
from relay.sandbox.s3 import S3Sandbox
from relay.settings import Settings
from tests.conftest import task_queue
from tests.files.conftest import bucket_keys, published, s3_settings
from workflows.files import FileWorkflow


async def test_an_upload_never_completed_is_removed_after_upload_expiry(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    make_settings: Callable[..., Settings],
    s3: S3Sandbox,
) -> None:
    settings = make_settings(**s3_settings(s3))
    activities = FileActivities(settings=settings, engine=engine)
    queue = task_queue()
    file_id = f"file_{uuid.uuid4().hex[:24]}"
    view = FileView(
        id=file_id,
        kind=FileKind.AVATAR,
        filename="a.jpg",
        content_type="image/jpeg",
        declared_size=5,
        user_id="u",
        upload_key=upload_key(file_id, "a.jpg"),
    )
    # The browser uploaded; nobody called complete (and no S3 event came).
    s3.client().put_object(Bucket=s3.bucket, Key=view.upload_key, Body=b"hello")
    client = time_skipping_env.client
    async with Worker(
        client,
        task_queue=queue,
        workflows=[FileWorkflow],
        activities=activities.activities(),
    ):
        handle = await client.start_workflow(
            FileWorkflow.run,
            FileInput(view=view, upload_expiry_seconds=timedelta(hours=24).total_seconds()),
            id=file_workflow_id(file_id),
            task_queue=queue,
        )
        # A day later (skipped): the timer has fired.
        await time_skipping_env.sleep(timedelta(hours=23))
        assert (await handle.query(FileWorkflow.state)).status == FileStatus.PENDING_UPLOAD
        assert bucket_keys(s3) == [view.upload_key]
        result = await handle.result()
    activities.close()
    assert result.status == FileStatus.REJECTED
    assert result.reason == "upload_expired"
    assert bucket_keys(s3) == []
    row = find(engine, file_id)
    assert row is not None and row.status == "REJECTED" and row.reason == "upload_expired"
    assert published(engine, file_id) == ["file.rejected"]
