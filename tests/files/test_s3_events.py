"""End to end: S3 event notifications through SNS (`POST /webhooks/s3`, signed here as SNS
signs them, the certificate pinned as the S3 sandbox's) → the inbound inbox → the file's workflow, which
HEADs the upload and processes it as `complete` does; stray events end at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Replayer

from relay.files import repository
from relay.files.contracts import FILE_WORKFLOW, file_workflow_id
from relay.files.inbound import s3_records, s3_target
from relay.inbound.forward import signal_with_start
from relay.inbound.repository import Claimed
from relay.models.inbound import InboundEvent
from relay.sandbox.s3 import S3Sandbox
from relay.temporal import data_converter
from tests.conftest import Stack, eventually
from tests.files import samples
from tests.files.conftest import bucket_keys, post_form, start_upload, wait_processed
from tests.files.sns_signer import LoopbackSns, s3_record
from workflows.files import FileWorkflow

pytestmark = pytest.mark.e2e

TOPIC = "arn:aws:sns:us-east-1:123456789012:relay-uploads"
inbox = InboundEvent.__table__  # type: ignore[attr-defined]


@pytest.fixture
def signer() -> Iterator[LoopbackSns]:
    with LoopbackSns() as running:
        yield running


@pytest.fixture
def files_overrides(signer: LoopbackSns) -> dict[str, object]:
    return {"s3_events_topic_arns": TOPIC, "s3_events_sandbox_certificate": signer.pem}


async def post_sns(stack: Stack, message: dict[str, str]) -> httpx.Response:
    # As SNS posts: JSON in a text/plain body, the type in a header; no API key.
    async with stack.http(authenticated=False) as http:
        return await http.post(
            "/webhooks/s3",
            content=json.dumps(message),
            headers={
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": message["Type"],
            },
        )


def s3_rows(stack: Stack) -> list[Any]:
    with stack.engine.connect() as connection:
        return list(connection.execute(select(inbox).where(inbox.c.provider == "s3")))


async def created_upload(stack: Stack, data: bytes, **body: Any) -> dict[str, Any]:
    fields = {
        "kind": "avatar",
        "userId": f"user-{uuid.uuid4().hex[:8]}",
        "filename": "Me at the beach.jpg",
        "contentType": "image/jpeg",
        "size": len(data),
        **body,
    }
    created = await start_upload(stack, **fields)
    assert created.status_code == 201, created.text
    return created.json()["data"]  # type: ignore[no-any-return]


async def replays(stack: Stack, handle: WorkflowHandle[Any, Any]) -> None:
    """The run's history replays on the current code (the signal path is deterministic)."""
    replayer = Replayer(
        workflows=[FileWorkflow],
        data_converter=data_converter(stack.keyring),
        interceptors=[TracingInterceptor()],
    )
    await replayer.replay_workflow(await handle.fetch_history())


async def file_status(stack: Stack, file_id: str) -> str:
    async with stack.http() as http:
        return (await http.get(f"/v1/files/{file_id}")).json()["data"]["status"]  # type: ignore[no-any-return]


async def test_an_s3_event_processes_the_upload_once(
    files_stack: Stack, s3: S3Sandbox, signer: LoopbackSns
) -> None:
    data = samples.jpeg_with_exif(320, 240, orientation=1, gps=False)
    upload = await created_upload(files_stack, data)
    assert (await post_form(upload, data, "image/jpeg")).status_code == 204
    record = s3_record(s3.bucket, upload["key"], size=len(data))
    message = signer.notification(TOPIC, [record], version="1")

    answer = await post_sns(files_stack, message)
    assert answer.status_code == 200, answer.text
    (event,) = answer.json()["data"]["events"]
    assert event["duplicate"] is False and event["status"] == "FORWARDED"
    assert event["eventId"] == f"{s3.bucket}/{upload['key']}#{record['s3']['object']['sequencer']}"

    # No /complete: the event alone takes the file to READY, the upload gone from temp/.
    file = await wait_processed(files_stack, upload["id"])
    assert file["status"] == "READY", file
    assert [r["name"] for r in file["renditions"]]
    assert not [key for key in bucket_keys(s3) if key.startswith("temp/")]

    # SNS delivering it again (same message, or the same record in a new message).
    again = await post_sns(files_stack, message)
    assert again.json()["data"]["events"][0]["duplicate"] is True
    resent = await post_sns(files_stack, signer.notification(TOPIC, [record]))
    assert resent.json()["data"]["events"][0]["duplicate"] is True
    rows = s3_rows(files_stack)
    assert [(row.type, row.object_id, row.status) for row in rows] == [
        ("ObjectCreated:Post", upload["id"], "FORWARDED")
    ]
    # Processed once: one file.ready, one run of the file's workflow.
    runs = [
        run
        async for run in files_stack.client.list_workflows(
            f"WorkflowId = '{file_workflow_id(upload['id'])}'"
        )
    ]
    assert len(runs) == 1
    await replays(files_stack, files_stack.client.get_workflow_handle(runs[0].id))


async def test_an_event_before_the_upload_is_there_does_nothing(
    files_stack: Stack, s3: S3Sandbox, signer: LoopbackSns
) -> None:
    data = samples.jpeg_with_exif(200, 100, orientation=1, gps=False)
    upload = await created_upload(files_stack, data)
    record = s3_record(s3.bucket, upload["key"], size=len(data))
    answer = await post_sns(files_stack, signer.notification(TOPIC, [record]))
    assert answer.json()["data"]["events"][0]["status"] == "FORWARDED"

    # The workflow HEADed the upload (begin_processing) and found nothing: still waiting.
    handle = files_stack.client.get_workflow_handle(file_workflow_id(upload["id"]))

    def activity(event: Any) -> str:
        return str(event.activity_task_scheduled_event_attributes.activity_type.name)

    async def headed() -> bool:
        # begin_processing answered and the workflow task after it completed.
        events = list((await handle.fetch_history()).events)
        scheduled = {
            event.event_id: activity(event)
            for event in events
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        done = [
            event
            for event in events
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id)
            == "begin_processing"
        ]
        return bool(done) and events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED

    await eventually(headed, timeout=30)
    history = await handle.fetch_history()
    scheduled = [
        activity(event)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["save_file", "begin_processing"]
    assert await file_status(files_stack, upload["id"]) == "PENDING_UPLOAD"

    # Then it lands and its own event (a new sequencer) starts processing.
    assert (await post_form(upload, data, "image/jpeg")).status_code == 204
    later = s3_record(s3.bucket, upload["key"], size=len(data))
    await post_sns(files_stack, signer.notification(TOPIC, [later]))
    assert (await wait_processed(files_stack, upload["id"]))["status"] == "READY"


async def test_records_no_file_takes_are_recorded_as_ignored(
    files_stack: Stack, s3: S3Sandbox, signer: LoopbackSns
) -> None:
    data = samples.jpeg_with_exif(64, 64, orientation=1, gps=False)
    upload = await created_upload(files_stack, data)
    records = [
        # Relay's own writes (renditions), another bucket, a removal, a file never made.
        s3_record(s3.bucket, "thumbnails/m1/thumb-64-a.jpg", event="ObjectCreated:Put"),
        s3_record("another-bucket", upload["key"]),
        s3_record(s3.bucket, upload["key"], event="ObjectRemoved:Delete"),
        s3_record(s3.bucket, "temp/file_000000000000000000000000/x.jpg"),
    ]
    answer = await post_sns(files_stack, signer.notification(TOPIC, records))
    assert answer.status_code == 200, answer.text
    statuses = [event["status"] for event in answer.json()["data"]["events"]]
    assert statuses == ["IGNORED"] * 4
    never = files_stack.client.get_workflow_handle(
        file_workflow_id("file_000000000000000000000000")
    )
    with pytest.raises(Exception, match="not found"):
        await never.describe()
    assert await file_status(files_stack, upload["id"]) == "PENDING_UPLOAD"

    # S3's test event when the notification is configured: no records, nothing recorded.
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})
    message = signer.notification(TOPIC, [])
    message = signer.sign({**message, "Message": test_event})
    answer = await post_sns(files_stack, message)
    assert answer.status_code == 200 and answer.json()["data"]["events"] == []
    assert len(s3_rows(files_stack)) == 4


async def test_a_bad_signature_or_topic_is_refused_and_records_nothing(
    files_stack: Stack, s3: S3Sandbox, signer: LoopbackSns
) -> None:
    record = s3_record(s3.bucket, "temp/file_1/a.jpg")
    message = signer.notification(TOPIC, [record])
    forged = {**message, "Message": json.dumps({"Records": [record, record]})}
    other_topic = signer.notification("arn:aws:sns:us-east-1:999999999999:other", [record])
    for bad in (forged, other_topic, {"Type": "Notification"}):
        answer = await post_sns(files_stack, bad)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "INVALID_SIGNATURE"
    assert s3_rows(files_stack) == []


async def test_a_subscription_is_confirmed(files_stack: Stack, signer: LoopbackSns) -> None:
    token = uuid.uuid4().hex
    answer = await post_sns(files_stack, signer.confirmation(TOPIC, token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["confirmed"] is True
    assert signer.confirmations == [f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"]
    assert s3_rows(files_stack) == []

    # A confirmation for a topic not allowed is not confirmed.
    other = signer.confirmation("arn:aws:sns:us-east-1:999999999999:other", uuid.uuid4().hex)
    refused = await post_sns(files_stack, other)
    assert refused.status_code == 400
    assert len(signer.confirmations) == 1
    # Nor one whose SubscribeURL is off SNS's hosts, however well signed.
    secret = uuid.uuid4().hex
    off_host = signer.sign(
        {
            **signer.confirmation(TOPIC, secret),
            "SubscribeURL": f"https://example.com/?Action=ConfirmSubscription&Token={secret}",
        }
    )
    refused = await post_sns(files_stack, off_host)
    assert refused.status_code == 400
    assert secret not in refused.text
    assert len(signer.confirmations) == 1


async def test_a_run_started_by_a_stray_event_ends_at_once(
    files_stack: Stack, s3: S3Sandbox, signer: LoopbackSns
) -> None:
    """The inbox forwards by signal-with-start: an event whose file ended between being
    recorded and being forwarded starts a new run, which must neither process nor write."""
    data = samples.jpeg_with_exif(120, 90, orientation=1, gps=False)
    upload = await created_upload(files_stack, data)
    record = s3_record(s3.bucket, upload["key"], size=len(data))
    # The target as the route declares it while the file waits for its upload.
    (parsed,) = s3_records(json.dumps({"Records": [record]}))
    target, object_id = s3_target(
        parsed, s3.bucket, lambda file_id: repository.find_view(files_stack.engine, file_id)
    )
    assert target is not None and target.workflow_type == FILE_WORKFLOW

    # The file then goes its way (uploaded, completed, READY: its run ends)...
    assert (await post_form(upload, data, "image/jpeg")).status_code == 204
    async with files_stack.http() as http:
        assert (await http.post(f"/v1/files/{upload['id']}/complete")).status_code == 200
    ready = await wait_processed(files_stack, upload["id"])
    assert ready["status"] == "READY"
    handle = files_stack.client.get_workflow_handle(file_workflow_id(upload["id"]))
    await handle.result()
    first_run = (await handle.describe()).run_id
    keys_before = bucket_keys(s3)

    # ...and only now is the event forwarded, as the inbox's forwarder would.
    claimed = Claimed(uuid.uuid4(), "s3", parsed.event_id, parsed.event_name, object_id, target)
    await signal_with_start(
        files_stack.client,
        files_stack.settings.temporal_task_queue,
        claimed,
        rpc_timeout=timedelta(seconds=10),
    )
    stray = files_stack.client.get_workflow_handle(file_workflow_id(upload["id"]))
    await stray.result()
    description = await stray.describe()
    assert description.run_id != first_run
    assert description.status == WorkflowExecutionStatus.COMPLETED
    history = await stray.fetch_history()
    assert not [
        event
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # Nothing written: the file is READY as it was, its objects all there.
    assert bucket_keys(s3) == keys_before
    await replays(files_stack, stray)
    async with files_stack.http() as http:
        after = (await http.get(f"/v1/files/{upload['id']}")).json()["data"]
    assert after["status"] == "READY" and after["updatedAt"] == ready["updatedAt"]
    # And DELETE still works on the ended file.
    async with files_stack.http() as http:
        assert (await http.delete(f"/v1/files/{upload['id']}")).status_code == 200
        assert (await http.get(f"/v1/files/{upload['id']}")).status_code == 404
    assert not [key for key in bucket_keys(s3) if upload["id"] in key]
