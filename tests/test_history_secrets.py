"""A secret passed through a run appears nowhere in plaintext in its history."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.crypto import Keyring
from relay.settings import Settings
from relay.temporal import connect
from tests.conftest import eventually, task_queue
from tests.support.failing import LeakyInput, LeakyWorkflow, reject_token
from tests.support.workflows import EchoInput, EchoWorkflow, echo_activity


@pytest_asyncio.fixture(loop_scope="session")
async def relay_client(
    temporal_env: WorkflowEnvironment, keyring: Keyring, make_settings: Callable[..., Settings]
) -> Client:
    """Relay's own client: data converter with the codec, tracing interceptor."""
    target = temporal_env.client.service_client.config.target_host
    return await connect(make_settings(temporal_address=target), keyring)


@pytest_asyncio.fixture(loop_scope="session")
async def worker_queue(relay_client: Client) -> AsyncIterator[str]:
    queue = task_queue()
    async with Worker(
        relay_client,
        task_queue=queue,
        workflows=[EchoWorkflow, LeakyWorkflow],
        activities=[echo_activity, reject_token],
    ):
        yield queue


async def _raw_history(relay_client: Client, workflow_id: str) -> WorkflowHistory:
    """The history as anyone with access to Temporal sees it: a client without the codec."""
    plain = await Client.connect(relay_client.service_client.config.target_host)
    return await plain.get_workflow_handle(workflow_id).fetch_history()


def _assert_nowhere(history: WorkflowHistory, secret: str) -> None:
    blobs = [history.to_json().encode()]
    blobs += [event.SerializeToString() for event in history.events]
    for needle in (secret.encode(), base64.b64encode(secret.encode())):
        for blob in blobs:
            assert needle not in blob


def _secret() -> str:
    return f"tok_{uuid.uuid4().hex}"


async def test_workflow_input_and_results_are_not_in_plaintext(
    relay_client: Client, worker_queue: str
) -> None:
    secret = _secret()
    workflow_id = f"secret-echo-{uuid.uuid4().hex[:8]}"
    handle = await relay_client.start_workflow(
        EchoWorkflow.run,
        EchoInput(secret, entity_id=workflow_id),
        id=workflow_id,
        task_queue=worker_queue,
    )

    async def echoed() -> bool:
        return bool((await handle.query(EchoWorkflow.state)).echoes)

    await eventually(echoed)
    await handle.signal(EchoWorkflow.finish)
    assert await handle.result() == f"echo: {secret}"

    history = await _raw_history(relay_client, workflow_id)
    _assert_nowhere(history, secret)

    # With the codec the same history decodes.
    started = history.events[0].workflow_execution_started_event_attributes
    decoded: list[Payload] = await relay_client.data_converter.payload_codec.decode(  # type: ignore[union-attr]
        list(started.input.payloads)
    )
    assert secret.encode() in decoded[0].data


async def test_failure_messages_and_details_are_not_in_plaintext(
    relay_client: Client, worker_queue: str
) -> None:
    secret = _secret()
    workflow_id = f"secret-fail-{uuid.uuid4().hex[:8]}"

    with pytest.raises(WorkflowFailureError) as caught:
        await relay_client.execute_workflow(
            LeakyWorkflow.run, LeakyInput(secret), id=workflow_id, task_queue=worker_queue
        )

    history = await _raw_history(relay_client, workflow_id)
    _assert_nowhere(history, secret)
    failures = [
        event.activity_task_failed_event_attributes.failure
        for event in history.events
        if event.HasField("activity_task_failed_event_attributes")
    ]
    assert failures, "the activity failed"
    assert failures[0].message == "Encoded failure"
    assert failures[0].stack_trace == ""

    # With the codec the failure reads as the activity raised it.
    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    application_error = activity_error.cause
    assert isinstance(application_error, ApplicationError)
    assert application_error.message == f"provider rejected token {secret}"
    assert application_error.type == "OAUTH_FAILED"
    assert application_error.details == ({"token": secret},)
