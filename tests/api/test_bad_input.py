"""Bad input is the client's error: a 4xx envelope at once, never a 500 and never a wait.

Against the running API (uvicorn on loopback, the Temporal dev server): a cursor the API
did not issue, a JSON body that is not UTF-8, a webhook URL whose host IDNA refuses; and
the OpenAPI schema documents every error status the platform answers with.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter
from sqlalchemy.engine import Engine
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from relay.settings import Settings
from tests.conftest import ServerThread, Stack, eventually
from tests.support.api import closed_address
from tests.support.workflows import EchoInput, EchoWorkflow

# --- /v1/runs cursors ---------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "null",  # decodes to three bytes Temporal cannot parse: was a 500 after ~9 s
        "x",
        "AAAA",
        _b64(b'{"a":1}'),  # JSON Temporal silently accepted as a first page
        _b64(b'{"CloseTime":"2026-01-01T00:00:00Z","RunID":"r"}'),  # its own token shape
        "%%%not-base64%%%",
        "a" * 4000,
    ],
)
async def test_a_cursor_the_api_did_not_issue_is_422_at_once(stack: Stack, cursor: str) -> None:
    async with stack.http() as http:
        started = time.monotonic()
        response = await http.get("/v1/runs", params={"cursor": cursor})
        elapsed = time.monotonic() - started
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [(item["in"], item["field"]) for item in error["details"]] == [("query", "cursor")]
    assert elapsed < 2, f"answered after {elapsed:.1f}s: the bad token reached Temporal"


@pytest_asyncio.fixture(loop_scope="session")
async def two_runs(stack: Stack) -> AsyncIterator[str]:
    """Two running EchoWorkflows sharing one RelayEntityId; yields that id."""
    entity = f"paged-{uuid.uuid4().hex[:8]}"
    handles = [
        await stack.client.start_workflow(
            EchoWorkflow.run,
            EchoInput("page", entity_id=entity),
            id=f"{entity}-{index}",
            task_queue=stack.settings.temporal_task_queue,
        )
        for index in range(2)
    ]
    yield entity
    for handle in handles:
        await handle.terminate()


async def test_issued_cursors_page_through_and_are_bound_to_their_filters(
    stack: Stack, two_runs: str
) -> None:
    async with stack.http() as http:

        async def both_listed() -> bool:
            body = (await http.get("/v1/runs", params={"entityId": two_runs})).json()
            return len(body["data"]) == 2

        await eventually(both_listed)
        first = (await http.get("/v1/runs", params={"entityId": two_runs, "limit": 1})).json()
        cursor = first["nextCursor"]
        assert cursor and len(first["data"]) == 1
        second = (
            await http.get("/v1/runs", params={"entityId": two_runs, "limit": 1, "cursor": cursor})
        ).json()
        seen = {run["workflowId"] for run in first["data"] + second["data"]}
        assert seen == {f"{two_runs}-0", f"{two_runs}-1"}

        # The same cursor with other filters is not a page of that list.
        other = await http.get("/v1/runs", params={"entityId": "another", "cursor": cursor})
        assert other.status_code == 422, other.text
        assert other.json()["error"]["details"][0]["field"] == "cursor"
        # Temporal's own page token for that very list (what the API used to hand out,
        # base64-encoded) is not a cursor either.
        listing = stack.client.list_workflows(f"RelayEntityId = '{two_runs}'", page_size=1)
        await listing.fetch_next_page()
        assert listing.next_page_token
        raw = _b64(listing.next_page_token)
        forged = await http.get("/v1/runs", params={"entityId": two_runs, "cursor": raw})
        assert forged.status_code == 422, forged.text


# --- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/codec/encode", "/v1/webhooks", "/v1/events"])
@pytest.mark.parametrize(
    "body",
    [b'{"payloads": "\xff"}', b"\x80abc", b'{"type": "a\xc3\x28"}', b'["\xc0\xaf"]'],
)
async def test_a_json_body_that_is_not_utf8_is_422(stack: Stack, path: str, body: bytes) -> None:
    async with stack.http() as http:
        response = await http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "success": False,
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "the request is invalid",
            "details": [{"field": "body", "in": "body", "message": "the body is not valid UTF-8"}],
        },
    }


async def test_a_body_that_is_not_json_names_the_body(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/webhooks", content=b'{"url": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"] == [
        {"field": "body", "in": "body", "message": "the body is not valid JSON"}
    ]


async def test_a_form_body_that_cannot_be_parsed_is_422(stack: Stack) -> None:
    """The codec login form posts multipart or urlencoded; one with no boundary is the
    client's error too (it was 400 with code INTERNAL_ERROR)."""
    async with stack.http(authenticated=False) as http:
        response = await http.post(
            "/codec/session", content=b"apiKey=x", headers={"Content-Type": "multipart/form-data"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "the request is invalid",
        "details": [{"field": "body", "in": "body", "message": "the body could not be parsed"}],
    }


# --- webhook URLs with host names IDNA refuses ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://xn--a.com/hook",  # not valid Punycode
        "https://\u2024.com/hook",  # ONE DOT LEADER: an empty label once mapped
        "https://" + "a" * 64 + ".com/hook",  # a label over 63 characters
        "https://a..com/hook",  # an empty label
        "https://.example.com/hook",
        "https://xn--ls8h.la/hook",  # an emoji label: IDNA 2008 refuses it
        "https://\u200d.example.com/hook",  # a joiner out of context
        "https://ex%41mple.com/hook",  # percent signs are no host name
        "https://" + "a." * 127 + "com/hook",  # a name over 253 characters
    ],
)
async def test_a_host_name_idna_refuses_is_invalid_webhook_url(stack: Stack, url: str) -> None:
    async with stack.http() as http:
        created = await http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
        assert created.status_code == 400, created.text
        assert created.json()["error"]["code"] == "INVALID_WEBHOOK_URL"
        # The same check guards a change of URL.
        endpoint = await http.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/ok", "events": ["*"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        changed = await http.patch(
            f"/v1/webhooks/{endpoint.json()['data']['id']}", json={"url": url}
        )
    assert changed.status_code == 400, changed.text
    assert changed.json()["error"]["code"] == "INVALID_WEBHOOK_URL"


# --- Temporal refusing a request ----------------------------------------------------------


def _refusing_temporal() -> APIRouter:
    router = APIRouter(prefix="/test")

    @router.get("/temporal/{status}")
    async def refuse(status: str) -> None:
        raise RPCError("refused: " + status, RPCStatusCode[status], b"")

    return router


@pytest.mark.parametrize(
    "status, expected, code",
    [
        ("INVALID_ARGUMENT", 422, "VALIDATION_ERROR"),  # what the client sent
        ("RESOURCE_EXHAUSTED", 503, "TEMPORAL_UNAVAILABLE"),  # overloaded, after the retries
        ("UNAVAILABLE", 503, "TEMPORAL_UNAVAILABLE"),
        # A workflow Relay runs itself is missing (no worker has started the dispatcher):
        # POST /v1/deliveries/{id}/retry was a 500.
        ("NOT_FOUND", 503, "TEMPORAL_UNAVAILABLE"),
        ("INTERNAL", 500, "INTERNAL_ERROR"),  # a bug somewhere: never hidden as a 4xx
    ],
)
async def test_temporal_statuses_are_classified(
    engine: Engine, make_settings: Callable[..., Settings], status: str, expected: int, code: str
) -> None:
    app = create_app(make_settings(temporal_address=closed_address()), engine=engine)
    app.include_router(_refusing_temporal())
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get(f"/test/temporal/{status}")
    assert response.status_code == expected, response.text
    assert response.json()["error"]["code"] == code


# --- the OpenAPI schema documents every error status ----------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def openapi(engine: Engine, make_settings: Callable[..., Settings]) -> dict:
    app = create_app(make_settings(temporal_address=closed_address()), engine=engine)
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            return (await http.get("/openapi.json")).json()  # type: ignore[no-any-return]


ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _envelope(operation: dict, status: int) -> bool:
    entry = operation["responses"].get(str(status))
    return bool(entry) and entry["content"]["application/json"]["schema"] == ENVELOPE


async def test_codec_routes_document_every_status_they_answer_with(openapi: dict) -> None:
    for path in ("/codec/encode", "/codec/decode"):
        operation = openapi["paths"][path]["post"]
        for status in (401, 403, 413, 422, 503):
            assert _envelope(operation, status), (path, status, operation["responses"])
    login = openapi["paths"]["/codec/login"]["get"]  # a public form: no key, no body
    assert {"401", "403", "422", "503"}.isdisjoint(login["responses"])


async def test_every_platform_error_status_is_the_envelope(openapi: dict) -> None:
    operations = [
        (path, method, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        name = f"{method.upper()} {path}"
        has_input = "requestBody" in operation or bool(operation.get("parameters"))
        if has_input:
            assert _envelope(operation, 422), name
        if "requestBody" in operation or path.startswith(("/v1/", "/codec/")):
            assert _envelope(operation, 413), name
        if operation.get("security") and path.startswith(("/v1/", "/codec/")):
            for status in (401, 403, 503):
                assert _envelope(operation, status), (name, status)
        # Every documented 4xx and 5xx is Relay's envelope, FastAPI's `{"detail"}` nowhere.
        for status, entry in operation["responses"].items():
            if status.startswith(("4", "5")) and "content" in entry:
                assert entry["content"]["application/json"]["schema"] == ENVELOPE, (name, status)
    assert "HTTPValidationError" not in str(openapi)


# --- values the database cannot hold --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/inbound-events", {"params": {"type": "a\x00b"}}),
        ("GET", "/v1/subscriptions", {"params": {"userId": "u\x00"}}),
        ("GET", "/v1/integrations", {"params": {"userId": "u\x00"}}),
    ],
)
async def test_a_nul_character_is_the_clients_error(
    stack: Stack, engine: Engine, method: str, path: str, kwargs: dict
) -> None:
    """PostgreSQL refuses NUL in text (found by the schema fuzz as a 500); SQLite stores it."""
    async with stack.http() as http:
        response = await http.request(method, path, **kwargs)
    if engine.dialect.name == "postgresql":
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    else:
        assert response.status_code == 200, response.text
