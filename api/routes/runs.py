"""Workflow runs, read through Temporal visibility."""

from __future__ import annotations

import base64
import binascii
import importlib
import importlib.util
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic.alias_generators import to_camel
from pydantic_core import to_jsonable_python
from temporalio.client import (
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from api.deps import KeyringDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ApiModel,
    Envelope,
    Page,
    error_responses,
    ok,
)
from api.pagination import page as page_envelope
from relay import search_attributes
from relay.capabilities import CAPABILITIES
from relay.crypto import DecryptionError, Keyring
from relay.errors import ErrorCode, RelayError
from relay.settings import Settings

router = APIRouter(prefix="/v1/runs", tags=["runs"], dependencies=[Depends(require_api_key)])

STATE_QUERY_TIMEOUT = timedelta(seconds=5)
# Values are interpolated into a visibility query, so only plain identifiers pass.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:@*/+-]{1,200}$")


class RunStatus(StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    TIMED_OUT = "TimedOut"


_STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: RunStatus.RUNNING,
    WorkflowExecutionStatus.COMPLETED: RunStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED: RunStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: RunStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED: RunStatus.TERMINATED,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: RunStatus.CONTINUED_AS_NEW,
    WorkflowExecutionStatus.TIMED_OUT: RunStatus.TIMED_OUT,
}


class Run(ApiModel):
    workflow_id: str
    run_id: str
    workflow_type: str
    status: RunStatus | None
    start_time: datetime | None
    close_time: datetime | None
    search_attributes: dict[str, Any]


class RunDetail(Run):
    history_length: int
    state: Any = None


def _status(status: WorkflowExecutionStatus | None) -> RunStatus | None:
    return _STATUS_NAMES.get(status) if status is not None else None


def _relay_attributes(execution: WorkflowExecution) -> dict[str, Any]:
    attributes = execution.typed_search_attributes
    return {
        key.name: attributes.get(key)
        for key in search_attributes.ALL
        if attributes.get(key) is not None
    }


def _run(execution: WorkflowExecution) -> dict[str, Any]:
    return {
        "workflow_id": execution.id,
        "run_id": execution.run_id,
        "workflow_type": execution.workflow_type,
        "status": _status(execution.status),
        "start_time": execution.start_time,
        "close_time": execution.close_time,
        "search_attributes": _relay_attributes(execution),
    }


async def _describe(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    try:
        return await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RelayError(ErrorCode.RUN_NOT_FOUND, f"no run with id {handle.id!r}") from None
        raise


def _camel_keys(value: Any) -> Any:
    """Workflow state dataclasses are snake_case; the wire is camelCase."""
    if isinstance(value, dict):
        return {to_camel(str(key)): _camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


def long_lived_workflows(settings: Settings) -> dict[str, str]:
    """Relay's own long-lived workflows (workflow id -> capability): what each capability's
    client module (`workflows/clients/<name>.py`) declares in `long_lived_workflow_ids`."""
    found: dict[str, str] = {}
    for name in CAPABILITIES:
        module = f"workflows.clients.{name}"
        if importlib.util.find_spec(module) is None:
            continue
        declared = getattr(importlib.import_module(module), "long_lived_workflow_ids", None)
        if declared is not None:
            found.update(dict.fromkeys(declared(settings), name))
    return found


def _refuse_long_lived(workflow_id: str, settings: Settings, action: str) -> None:
    """409 for a run Relay keeps running: stopping it would stop the capability for everyone."""
    capability = long_lived_workflows(settings).get(workflow_id)
    if capability is not None:
        raise RelayError(
            ErrorCode.CONFLICT,
            f"run {workflow_id!r} is one of Relay's long-lived workflows ({capability}) and "
            f"must always run, so it cannot be {action} through the API",
            {"workflowId": workflow_id, "capability": capability, "longLived": True},
        )


def _clause(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not _SAFE_VALUE.match(value):
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "filter values are letters, digits and . _ : @ * / + -",
            [{"field": field, "in": "query", "message": "unsupported characters"}],
        )
    return f"{field} = '{value}'"


# Cursors: Temporal's visibility page token, sealed under the encryption keyring with the
# list's query as associated data. Temporal's token format is its own (the dev server and
# SQL visibility parse it as JSON, and answer an unparsable one with UNKNOWN, which the
# client retries for about 9 s before the request fails), so a cursor Relay did not issue
# for this very query must never reach Temporal: it fails authentication here, at once.
_CURSOR_PURPOSE = "runs-cursor"


def _cursor_context(query: str | None) -> str:
    return f"{_CURSOR_PURPOSE}:{query or ''}"


def _invalid_cursor(message: str) -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "cursor is not valid",
        [{"field": "cursor", "in": "query", "message": message}],
    )


def encode_run_cursor(keyring: Keyring, query: str | None, token: bytes) -> str:
    sealed = keyring.seal(base64.urlsafe_b64encode(token).decode(), _cursor_context(query))
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def decode_run_cursor(keyring: Keyring, query: str | None, cursor: str | None) -> bytes | None:
    """The page token inside a cursor this API issued for `query`; 422 for anything else."""
    if not cursor:
        return None
    try:
        sealed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return base64.urlsafe_b64decode(keyring.open(sealed, _cursor_context(query)))
    except (binascii.Error, ValueError, DecryptionError):
        raise _invalid_cursor(
            "pass nextCursor unchanged, with the same filters as the page that returned it"
        ) from None


@router.get(
    "",
    summary="List workflow runs",
    response_model=Page[Run],
    responses=error_responses(401, 422, 503),
)
async def list_runs(
    client: TemporalDep,
    keyring: KeyringDep,
    workflow_type: Annotated[
        str | None, Query(alias="workflowType", examples=["WebhookDispatchWorkflow"])
    ] = None,
    status: Annotated[RunStatus | None, Query()] = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    integration_id: Annotated[str | None, Query(alias="integrationId")] = None,
    provider: Annotated[str | None, Query()] = None,
    event_type: Annotated[str | None, Query(alias="eventType")] = None,
    entity_id: Annotated[str | None, Query(alias="entityId")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            description="`nextCursor` of the previous page, unchanged, with the same filters; "
            "anything else is 422."
        ),
    ] = None,
) -> dict[str, Any]:
    clauses = [
        _clause("WorkflowType", workflow_type),
        _clause("ExecutionStatus", status.value if status else None),
        _clause(search_attributes.USER_ID.name, user_id),
        _clause(search_attributes.INTEGRATION_ID.name, integration_id),
        _clause(search_attributes.PROVIDER.name, provider),
        _clause(search_attributes.EVENT_TYPE.name, event_type),
        _clause(search_attributes.ENTITY_ID.name, entity_id),
    ]
    query = " AND ".join(clause for clause in clauses if clause) or None
    token = decode_run_cursor(keyring, query, cursor)
    iterator = client.list_workflows(query, page_size=limit, next_page_token=token)
    try:
        await iterator.fetch_next_page()
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise RelayError(
                ErrorCode.VALIDATION_ERROR,
                "the run filter or cursor is invalid",
                [
                    {
                        "field": "cursor" if token else "filters",
                        "in": "query",
                        "message": exc.message,
                    }
                ],
            ) from None
        raise
    page = iterator.current_page or []
    next_token = iterator.next_page_token
    return page_envelope(
        [Run.model_validate(_run(execution)) for execution in page],
        encode_run_cursor(keyring, query, next_token) if next_token else None,
    )


@router.get(
    "/{workflow_id}",
    summary="One run, with its state where the workflow exposes one",
    response_model=Envelope[RunDetail],
    responses=error_responses(401, 404, 503),
)
async def get_run(workflow_id: str, client: TemporalDep, request: Request) -> dict[str, Any]:
    handle = client.get_workflow_handle(workflow_id)
    description = await _describe(handle)
    detail = _run(description) | {"history_length": description.history_length}
    query = request.app.state.state_queries.get(description.workflow_type)
    if query is not None:
        try:
            state = await handle.query(query, rpc_timeout=STATE_QUERY_TIMEOUT)
            detail["state"] = _camel_keys(to_jsonable_python(state))
        except RPCError:
            detail["state"] = None  # no worker to answer, or the run predates the query
    return ok(RunDetail.model_validate(detail))


@router.post(
    "/{workflow_id}/cancel",
    summary="Request cancellation of a running run",
    description="409 `CONFLICT` if the run is not running, or is one of Relay's own "
    "long-lived workflows (the webhook dispatchers), which must always run.",
    status_code=202,
    response_model=Envelope[Run],
    responses=error_responses(401, 404, 409, 503),
)
async def cancel_run(
    workflow_id: str, client: TemporalDep, settings: SettingsDep
) -> dict[str, Any]:
    _refuse_long_lived(workflow_id, settings, "cancelled")
    handle = client.get_workflow_handle(workflow_id)
    description = await _describe(handle)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise RelayError(ErrorCode.CONFLICT, f"run {workflow_id!r} is not running")
    await client.get_workflow_handle(workflow_id, run_id=description.run_id).cancel()
    return ok(Run.model_validate(_run(description)))
