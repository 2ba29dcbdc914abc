"""Starting and updating `IntegrationWorkflow` (API side).

A connection's workflow is started when its authorization is initiated; every later
change is a Temporal update, sent with update-with-start (`USE_EXISTING`), so a
connection whose run ended unexpectedly (terminated by an operator, a lost Temporal
cluster) resumes from the database on its next request. An update the workflow refuses
comes back as a `RelayError` with the workflow's error code.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from relay import search_attributes
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import Integration
from relay.oauth.contracts import (
    AuthorizationCallback,
    AuthorizationOutcome,
    ConfirmationSettled,
    DisconnectOutcome,
    DisconnectRequest,
    IntegrationInput,
    RefreshOutcome,
    RefreshRequest,
    integration_workflow_id,
)
from relay.settings import Settings
from workflows.clients import application_failure
from workflows.oauth import IntegrationWorkflow

ParamT = TypeVar("ParamT")
ResultT = TypeVar("ResultT")


def confirmation_window_seconds(settings: Settings) -> int:
    """OAUTH_CONFIRMATION_WINDOW, as the workflow takes it."""
    return max(1, int(settings.oauth_confirmation_window.total_seconds()))


def integration_search_attributes(integration: Integration) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.INTEGRATION_ID, str(integration.id)),
            SearchAttributePair(search_attributes.USER_ID, integration.user_id),
            SearchAttributePair(search_attributes.PROVIDER, integration.provider),
            SearchAttributePair(search_attributes.ENTITY_ID, str(integration.id)),
        ]
    )


async def start_integration(
    client: Client, settings: Settings, integration: Integration, callback_deadline: datetime
) -> None:
    """Start a new connection's workflow (its id is never reused while it runs or after)."""
    await client.start_workflow(
        IntegrationWorkflow.run,
        IntegrationInput(
            integration_id=str(integration.id),
            user_id=integration.user_id,
            provider=integration.provider,
            callback_deadline=callback_deadline,
            confirmation_window_seconds=confirmation_window_seconds(settings),
        ),
        id=integration_workflow_id(integration.id),
        task_queue=settings.temporal_task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=integration_search_attributes(integration),
    )


def update_error(exc: WorkflowUpdateFailedError) -> RelayError:
    """The workflow's refusal (or failure) of an update, as the API's error."""
    cause = application_failure(exc)
    if cause is not None:
        try:
            code = ErrorCode(cause.type or "")
        except ValueError:
            code = ErrorCode.CONFLICT  # a validator's rejection: the workflow's state forbids it
        details = cause.details[0] if cause.details else None
        return RelayError(code, cause.message, details if isinstance(details, dict) else None)
    return RelayError(ErrorCode.INTERNAL_ERROR, "the integration's workflow failed the request")


async def _update(
    client: Client,
    settings: Settings,
    integration: Integration,
    update: UpdateMethodMultiParam[[IntegrationWorkflow, ParamT], ResultT],
    arg: ParamT,
) -> ResultT:
    """Send `update` to the integration's workflow, starting a recovering run if none runs."""
    handle = client.get_workflow_handle_for(
        IntegrationWorkflow.run, integration_workflow_id(integration.id)
    )
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise update_error(exc) from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    # No running workflow (terminated by an operator, a lost cluster): the database knows
    # the connection, so a run is started that resumes from it and takes the update.
    start = WithStartWorkflowOperation(
        IntegrationWorkflow.run,
        IntegrationInput(
            integration_id=str(integration.id),
            user_id=integration.user_id,
            provider=integration.provider,
            recover=True,
            confirmation_window_seconds=confirmation_window_seconds(settings),
        ),
        id=integration_workflow_id(integration.id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=integration_search_attributes(integration),
    )
    try:
        return await client.execute_update_with_start_workflow(
            update, arg, start_workflow_operation=start
        )
    except WorkflowUpdateFailedError as exc:
        raise update_error(exc) from None


async def complete_authorization(
    client: Client, settings: Settings, integration: Integration, callback: AuthorizationCallback
) -> AuthorizationOutcome:
    """Hand the consumed callback to the workflow and wait for the exchange's outcome."""
    return await _update(
        client, settings, integration, IntegrationWorkflow.complete_authorization, callback
    )


async def refresh(
    client: Client, settings: Settings, integration: Integration, request: RefreshRequest
) -> RefreshOutcome:
    return await _update(client, settings, integration, IntegrationWorkflow.refresh, request)


async def disconnect(
    client: Client, settings: Settings, integration: Integration, request: DisconnectRequest
) -> DisconnectOutcome:
    return await _update(client, settings, integration, IntegrationWorkflow.disconnect, request)


async def settle_confirmation(
    client: Client, settings: Settings, integration: Integration
) -> AuthorizationOutcome:
    """Tell the workflow the confirm route settled its confirmation in the database."""
    return await _update(
        client,
        settings,
        integration,
        IntegrationWorkflow.settle_confirmation,
        ConfirmationSettled(),
    )
