"""GET/POST /v1/runs against the dev server, with a test-only workflow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.client import WorkflowHandle

from tests.conftest import Stack, eventually
from tests.support.workflows import EchoInput, EchoWorkflow


@pytest_asyncio.fixture(loop_scope="session")
async def echo_run(stack: Stack) -> AsyncIterator[WorkflowHandle]:
    workflow_id = f"echo-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        EchoWorkflow.run,
        EchoInput("hello", entity_id=workflow_id),
        id=workflow_id,
        task_queue=stack.settings.temporal_task_queue,
    )
    yield handle


async def test_get_run_returns_status_and_typed_state(
    stack: Stack, echo_run: WorkflowHandle
) -> None:
    async with stack.http() as http:

        async def echoed() -> dict | None:
            body = (await http.get(f"/v1/runs/{echo_run.id}")).json()
            state = body["data"]["state"]
            return body if state and state["echoes"] else None

        body = await eventually(echoed)
    assert body["success"] is True
    data = body["data"]
    assert data["workflowId"] == echo_run.id
    assert data["workflowType"] == "EchoWorkflow"
    assert data["status"] == "Running"
    assert data["state"] == {"message": "hello", "finished": False, "echoes": ["echo: hello"]}


async def test_list_runs_filters_by_search_attribute_and_paginates(
    stack: Stack, echo_run: WorkflowHandle
) -> None:
    async with stack.http() as http:

        async def listed() -> dict | None:
            response = await http.get("/v1/runs", params={"entityId": echo_run.id})
            body = response.json()
            return body if body["data"] else None

        body = await eventually(listed)
        assert [run["workflowId"] for run in body["data"]] == [echo_run.id]
        assert body["data"][0]["searchAttributes"] == {"RelayEntityId": echo_run.id}

        page = (
            await http.get("/v1/runs", params={"workflowType": "EchoWorkflow", "limit": 1})
        ).json()
        assert len(page["data"]) == 1


async def test_cancel_run_then_conflict(stack: Stack, echo_run: WorkflowHandle) -> None:
    async with stack.http() as http:
        response = await http.post(f"/v1/runs/{echo_run.id}/cancel")
        assert response.status_code == 202, response.text

        async def canceled() -> bool:
            return (await http.get(f"/v1/runs/{echo_run.id}")).json()["data"][
                "status"
            ] == "Canceled"

        await eventually(canceled)
        again = await http.post(f"/v1/runs/{echo_run.id}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "CONFLICT"


async def test_unknown_run_is_404_with_envelope(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/runs/no-such-run")
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": {
            "code": "RUN_NOT_FOUND",
            "message": "no run with id 'no-such-run'",
            "details": None,
        },
    }


async def test_filter_values_cannot_inject_query(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/runs", params={"userId": "x' OR WorkflowId != '"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
