"""Talking to file workflows from the API (and the S3 event route), typed against the
workflow class."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from relay import search_attributes
from relay.errors import ErrorCode, RelayError
from relay.files.contracts import CompleteUpload, FileInput, FileView, file_workflow_id
from relay.settings import Settings
from workflows.clients import Entity, WorkflowClosed, await_update
from workflows.files import FileWorkflow

T = TypeVar("T")


def file_handle(client: Client, file_id: str) -> WorkflowHandle[FileWorkflow, FileView]:
    return client.get_workflow_handle_for(FileWorkflow.run, file_workflow_id(file_id))


def _entity(file_id: str) -> Entity:
    return Entity(
        "the file", "fileId", file_id, "S3", "the file's workflow has ended (READY or REJECTED)"
    )


async def _wait(file_id: str, call: Awaitable[T]) -> T:
    """Raises `WorkflowClosed` when the file's run has ended."""
    return await await_update(_entity(file_id), call)


def _search_attributes(view: FileView) -> TypedSearchAttributes:
    # Ids only: search attributes are stored in the clear.
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.ENTITY_ID, view.id),
            SearchAttributePair(search_attributes.PROVIDER, "s3"),
            SearchAttributePair(search_attributes.USER_ID, view.user_id),
        ]
    )


async def create_file(client: Client, settings: Settings, view: FileView) -> FileView:
    """Update-with-start of `open`: answers once the file is recorded. A retried request
    (same idempotencyKey, so the same id) lands on the same workflow."""
    start = WithStartWorkflowOperation(
        FileWorkflow.run,
        FileInput(view=view, upload_expiry_seconds=settings.upload_expiry.total_seconds()),
        id=file_workflow_id(view.id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=_search_attributes(view),
    )
    try:
        return await _wait(
            view.id,
            client.execute_update_with_start_workflow(
                FileWorkflow.open, start_workflow_operation=start
            ),
        )
    except WorkflowClosed:
        raise RelayError(
            ErrorCode.CONFLICT, "a file with this idempotencyKey already ended"
        ) from None


async def complete_file(client: Client, file_id: str, request: CompleteUpload) -> FileView:
    """Raises `WorkflowClosed` when the run has ended (the file is READY or REJECTED)."""
    handle = file_handle(client, file_id)
    return await _wait(file_id, handle.execute_update(FileWorkflow.complete, request))


async def signal_uploaded(client: Client, file_id: str, request: CompleteUpload) -> bool:
    """The S3 event's way in; False when the file's run has ended (nothing to start)."""
    try:
        await file_handle(client, file_id).signal(FileWorkflow.uploaded, request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def delete_file(client: Client, settings: Settings, view: FileView) -> FileView:
    """`delete` on the running workflow, or on a new run of the same id carrying the
    file's last view when its own run has ended (update-with-start)."""
    start = WithStartWorkflowOperation(
        FileWorkflow.run,
        FileInput(view=view),
        id=file_workflow_id(view.id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_search_attributes(view),
    )
    try:
        return await _wait(
            view.id,
            client.execute_update_with_start_workflow(
                FileWorkflow.delete, start_workflow_operation=start
            ),
        )
    except WorkflowClosed:
        raise RelayError(ErrorCode.NOT_FOUND, "no file with that id") from None
