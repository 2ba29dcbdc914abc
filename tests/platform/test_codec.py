"""The encryption payload codec, alone and through a real Temporal dev server."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relay.codec import ENCODING, KEY_ID_METADATA, EncryptionCodec
from relay.crypto import DecryptionError, Keyring, generate_key_spec
from relay.temporal import data_converter
from tests.conftest import eventually, task_queue
from tests.support.workflows import EchoInput, EchoWorkflow, echo_activity


def _plain(text: str) -> Payload:
    return DataConverter.default.payload_converter.to_payloads([text])[0]


async def test_encode_decode_roundtrip_with_key_id_in_metadata() -> None:
    codec = EncryptionCodec(Keyring.parse(generate_key_spec("k1")))
    originals = [_plain("first secret"), _plain("second secret")]

    encoded = await codec.encode(originals)

    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert b"secret" not in payload.SerializeToString()
    assert await codec.decode(encoded) == originals


async def test_payloads_encrypted_before_rotation_still_decode() -> None:
    old, new = generate_key_spec("old"), generate_key_spec("new")
    before = EncryptionCodec(Keyring.parse(old))
    after = EncryptionCodec(Keyring.parse(f"{new},{old}"))
    original = _plain("written under the old key")

    encoded_before = await before.encode([original])
    encoded_after = await after.encode([original])

    assert encoded_before[0].metadata[KEY_ID_METADATA] == b"old"
    assert encoded_after[0].metadata[KEY_ID_METADATA] == b"new"
    assert await after.decode(encoded_before) == [original]
    assert await after.decode(encoded_after) == [original]
    with pytest.raises(DecryptionError, match="no key with id 'new'"):
        await before.decode(encoded_after)


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(Keyring.parse(generate_key_spec("k1")))
    plain = _plain("not encrypted")
    assert await codec.decode([plain]) == [plain]


async def test_tampered_or_unlabelled_payloads_raise() -> None:
    codec = EncryptionCodec(Keyring.parse(generate_key_spec("k1")))
    [encoded] = await codec.encode([_plain("x")])

    tampered = Payload()
    tampered.CopyFrom(encoded)
    tampered.data = encoded.data[:-1] + bytes([encoded.data[-1] ^ 1])
    with pytest.raises(DecryptionError):
        await codec.decode([tampered])

    unlabelled = Payload(metadata={"encoding": ENCODING}, data=encoded.data)
    with pytest.raises(DecryptionError, match="names no encryption key id"):
        await codec.decode([unlabelled])


def _payloads_in(history: WorkflowHistory) -> list[Payload]:
    found = []
    for event in history.events:
        for attributes in (
            event.workflow_execution_started_event_attributes.input,
            event.activity_task_scheduled_event_attributes.input,
            event.activity_task_completed_event_attributes.result,
            event.workflow_execution_completed_event_attributes.result,
        ):
            found.extend(attributes.payloads)
    return found


async def test_real_history_is_encrypted_and_survives_rotation(
    temporal_env: WorkflowEnvironment,
) -> None:
    """A run started under one key finishes on a worker whose ring has a new first key."""
    old_spec, new_spec = generate_key_spec("before"), generate_key_spec("after")
    target = temporal_env.client.service_client.config.target_host
    old_client = await Client.connect(
        target, data_converter=data_converter(Keyring.parse(old_spec))
    )
    new_client = await Client.connect(
        target, data_converter=data_converter(Keyring.parse(f"{new_spec},{old_spec}"))
    )
    queue = task_queue()
    workflow_id = f"codec-{uuid.uuid4().hex[:8]}"
    secret = f"classified-{uuid.uuid4().hex}"

    async with Worker(
        old_client, task_queue=queue, workflows=[EchoWorkflow], activities=[echo_activity]
    ):
        handle = await old_client.start_workflow(
            EchoWorkflow.run,
            EchoInput(secret, entity_id=workflow_id),
            id=workflow_id,
            task_queue=queue,
        )

        async def echoed() -> bool:
            return bool((await handle.query(EchoWorkflow.state)).echoes)

        await eventually(echoed)

    # The old worker is gone; the new one replays the old history from scratch.
    async with Worker(
        new_client, task_queue=queue, workflows=[EchoWorkflow], activities=[echo_activity]
    ):
        new_handle = new_client.get_workflow_handle(workflow_id)
        await new_handle.signal(EchoWorkflow.finish)
        assert await new_handle.result() == f"echo: {secret}"

    history = await new_handle.fetch_history()
    assert secret.encode() not in history.to_json().encode()
    for event in history.events:
        assert secret.encode() not in event.SerializeToString()
    payloads = _payloads_in(history)
    assert payloads and all(p.metadata["encoding"] == ENCODING for p in payloads)
    kids = [p.metadata[KEY_ID_METADATA] for p in payloads]
    # Input, activity input and result were written under the old key, the result
    # of the workflow under the new one.
    assert kids[:3] == [b"before", b"before", b"before"]
    assert kids[-1] == b"after"

    # A client holding only the old key cannot read what the new key wrote.
    with pytest.raises(DecryptionError):
        await old_client.get_workflow_handle(workflow_id).result()
