"""Talking to publication workflows from the API, typed against the workflow class."""

from __future__ import annotations

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from relay import search_attributes
from relay.publishing.contracts import (
    CancelPublication,
    PublicationInput,
    PublicationState,
    UnpublishPublication,
    publication_workflow_id,
)
from relay.settings import Settings
from workflows.clients import Entity, await_update
from workflows.publishing import PublicationWorkflow


def publication_handle(
    client: Client, publication_id: str
) -> WorkflowHandle[PublicationWorkflow, PublicationState]:
    return client.get_workflow_handle_for(
        PublicationWorkflow.run, publication_workflow_id(publication_id)
    )


def _entity(publication_id: str) -> Entity:
    return Entity(
        "the publication",
        "publicationId",
        publication_id,
        "the platforms",
        "the publication's workflow has ended; it can no longer be canceled",
    )


def _attributes(publication_id: str, user_id: str) -> TypedSearchAttributes:
    # Ids only: search attributes are stored in the clear.
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.ENTITY_ID, publication_id),
            SearchAttributePair(search_attributes.USER_ID, user_id),
        ]
    )


async def start_publication(
    client: Client, settings: Settings, user_id: str, params: PublicationInput
) -> None:
    """Starts `publication-{id}`; a repeated request finds the run (or its end) instead of
    starting a second one."""
    try:
        await client.start_workflow(
            PublicationWorkflow.run,
            params,
            id=publication_workflow_id(params.publication_id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=_attributes(params.publication_id, user_id),
        )
    except WorkflowAlreadyStartedError:
        pass  # it ran already


async def cancel_publication(client: Client, publication_id: str) -> PublicationState:
    handle = publication_handle(client, publication_id)
    return await await_update(
        _entity(publication_id),
        handle.execute_update(PublicationWorkflow.cancel, CancelPublication()),
    )


async def unpublish_publication(
    client: Client, settings: Settings, user_id: str, publication_id: str
) -> PublicationState:
    """The unpublish update on the publication's run, or on a new run of the same id that
    loads the targets when the first one has ended (update-with-start)."""
    start = WithStartWorkflowOperation(
        PublicationWorkflow.run,
        PublicationInput(publication_id=publication_id, unpublish=True),
        id=publication_workflow_id(publication_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=_attributes(publication_id, user_id),
    )
    return await await_update(
        _entity(publication_id),
        client.execute_update_with_start_workflow(
            PublicationWorkflow.unpublish,
            UnpublishPublication(),
            start_workflow_operation=start,
        ),
    )
