"""POST /codec/encode and /codec/decode: Temporal's codec-server protocol, behind a key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHandle

from relay.api_keys import create_key, revoke_key
from relay.codec import ENCODING, KEY_ID_METADATA
from relay.crypto import Keyring, generate_key_spec
from tests.conftest import TEMPORAL_CLI, Stack, eventually
from tests.support.workflows import EchoInput, EchoWorkflow


@pytest_asyncio.fixture(loop_scope="session")
async def finished_run(stack: Stack) -> AsyncIterator[tuple[WorkflowHandle, str]]:
    secret = f"sk_live_{uuid.uuid4().hex}"
    workflow_id = f"codec-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        EchoWorkflow.run,
        EchoInput(secret, entity_id=workflow_id),
        id=workflow_id,
        task_queue=stack.settings.temporal_task_queue,
    )

    async def echoed() -> bool:
        return bool((await handle.query(EchoWorkflow.state)).echoes)

    await eventually(echoed)
    await handle.signal(EchoWorkflow.finish)
    await handle.result()
    yield handle, secret


async def _raw_input(stack: Stack, workflow_id: str) -> dict:
    """The workflow's input as the history holds it, read by a client with no codec."""
    plain = await Client.connect(stack.client.service_client.config.target_host)
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return json_format.MessageToDict(started.input)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _decoded_text(body: dict) -> str:
    return base64.b64decode(body["payloads"][0]["data"]).decode()


async def test_decode_with_a_key_reveals_history_payloads(
    stack: Stack, finished_run: tuple[WorkflowHandle, str]
) -> None:
    handle, secret = finished_run
    raw = await _raw_input(stack, handle.id)
    metadata = raw["payloads"][0]["metadata"]
    assert base64.b64decode(metadata["encoding"]) == ENCODING
    assert base64.b64decode(metadata[KEY_ID_METADATA]) == b"test1"
    assert secret not in json.dumps(raw)

    async with stack.http() as http:
        response = await http.post("/codec/decode", json=raw)

    assert response.status_code == 200, response.text
    payload = response.json()["payloads"][0]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(_decoded_text(response.json())) == {"message": secret, "entity_id": handle.id}


async def test_encode_then_decode_roundtrip(stack: Stack) -> None:
    plain = {"payloads": [{"metadata": {"encoding": _b64(b"json/plain")}, "data": _b64(b'"hi"')}]}
    async with stack.http() as http:
        encoded = (await http.post("/codec/encode", json=plain)).json()
        decoded = (await http.post("/codec/decode", json=encoded)).json()
    metadata = encoded["payloads"][0]["metadata"]
    assert base64.b64decode(metadata["encoding"]) == ENCODING
    assert base64.b64decode(metadata[KEY_ID_METADATA]) == b"test1"
    assert b"hi" not in base64.b64decode(encoded["payloads"][0]["data"])
    assert decoded == plain


async def test_codec_without_a_live_key_is_401(
    stack: Stack, finished_run: tuple[WorkflowHandle, str]
) -> None:
    handle, secret = finished_run
    raw = await _raw_input(stack, handle.id)
    _, revoked = create_key(stack.engine, f"revoked-{uuid.uuid4().hex[:6]}")
    revoke_key(stack.engine, _name_of(stack, revoked))
    async with stack.http(authenticated=False) as http:
        answers = [
            await http.post("/codec/decode", json=raw),
            await http.post("/codec/encode", json=raw),
            await http.post("/codec/decode", json=raw, headers={"Authorization": "Bearer rk_x"}),
            await http.post(
                "/codec/decode", json=raw, headers={"Authorization": f"Bearer {revoked}"}
            ),
        ]
    for response in answers:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"] == "Bearer"
        assert secret not in response.text


def _name_of(stack: Stack, raw: str) -> str:
    from relay.api_keys import hash_key, list_keys

    return next(key.name for key in list_keys(stack.engine) if key.key_hash == hash_key(raw))


async def test_cookie_session_lets_a_browser_decode(
    stack: Stack, finished_run: tuple[WorkflowHandle, str]
) -> None:
    handle, secret = finished_run
    raw = await _raw_input(stack, handle.id)
    async with stack.http(authenticated=False) as browser:
        page = await browser.get("/codec/login")
        assert page.status_code == 200 and 'name="apiKey"' in page.text

        refused = await browser.post("/codec/session", data={"apiKey": "rk_wrong"})
        assert refused.status_code == 401
        assert "relay_codec" not in refused.headers.get("set-cookie", "")

        opened = await browser.post("/codec/session", data={"apiKey": stack.api_key})
        assert opened.status_code == 204
        cookie = opened.headers["set-cookie"]
        assert "relay_codec=" in cookie
        assert "HttpOnly" in cookie and "Path=/codec" in cookie
        # The cookie holds a session token, not the key (tests/api/test_codec_sessions.py).
        assert stack.api_key not in cookie

        response = await browser.post("/codec/decode", json=raw)
    assert response.status_code == 200, response.text
    assert secret in _decoded_text(response.json())


async def test_session_with_bearer_header(stack: Stack) -> None:
    async with stack.http() as http:
        opened = await http.post("/codec/session")
    assert opened.status_code == 204
    assert "relay_codec=" in opened.headers["set-cookie"]


async def test_cors_preflight_from_the_ui_origin_allows_credentials(stack: Stack) -> None:
    ui = f"http://localhost:{stack.settings.temporal_ui_port}"
    preflight_headers = {
        "Origin": ui,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    async with stack.http(authenticated=False) as http:
        allowed = await http.options("/codec/decode", headers=preflight_headers)
        foreign = await http.options(
            "/codec/decode", headers=preflight_headers | {"Origin": "https://evil.example"}
        )
    async with stack.http() as http:
        actual = await http.post("/codec/decode", json={"payloads": []}, headers={"Origin": ui})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ui
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {
        h.strip() for h in allowed_headers.split(",")
    }
    assert "access-control-allow-origin" not in foreign.headers
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == ui
    assert actual.headers["access-control-allow-credentials"] == "true"


async def test_bad_bodies_are_validation_errors(stack: Stack) -> None:
    foreign_key = Keyring.parse(generate_key_spec("elsewhere"))
    kid, blob = foreign_key.encrypt(Payload(data=b"x").SerializeToString())
    foreign = json_format.MessageToDict(
        Payloads(
            payloads=[
                Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: kid.encode()}, data=blob)
            ]
        )
    )
    async with stack.http() as http:
        not_payloads = await http.post("/codec/decode", json={"payloads": "nope"})
        undecodable = await http.post("/codec/decode", json=foreign)
    for response in (not_payloads, undecodable):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_temporal_cli_shows_decrypted_history_through_the_codec_endpoint(
    stack: Stack, finished_run: tuple[WorkflowHandle, str]
) -> None:
    handle, secret = finished_run
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}

    async def show(*extra: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(TEMPORAL_CLI),
            "workflow",
            "show",
            "--workflow-id",
            handle.id,
            "--address",
            stack.client.service_client.config.target_host,
            "--output",
            "json",
            "--disable-config-file",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        output, _ = await process.communicate()
        return process.returncode or 0, output.decode()

    code, decrypted = await show(
        "--codec-endpoint", f"{stack.api_url}/codec", "--codec-auth", f"Bearer {stack.api_key}"
    )
    assert code == 0, decrypted
    code, ciphertext = await show()
    assert code == 0, ciphertext

    def start_input(output: str) -> dict:
        event = json.loads(output)["events"][0]
        return event["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]

    shown = start_input(decrypted)
    assert base64.b64decode(shown["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(shown["data"]))["message"] == secret

    hidden = start_input(ciphertext)
    assert base64.b64decode(hidden["metadata"]["encoding"]) == ENCODING
    assert secret.encode() not in base64.b64decode(hidden["data"])
