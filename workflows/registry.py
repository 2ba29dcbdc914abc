"""Every workflow the worker registers, and how the API reads a run's state.

A workflow that exposes its state does so through a query method named `state`;
GET /v1/runs/{workflowId} calls it through the typed handle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio import workflow


def all_workflows() -> list[type]:
    # Imported inside the function so importing the registry stays cheap for the API.
    workflows: list[type] = []
    from workflows.webhooks import WebhookDispatchWorkflow

    workflows.append(WebhookDispatchWorkflow)
    from workflows.oauth import IntegrationWorkflow

    workflows.append(IntegrationWorkflow)
    return workflows


def workflow_name(cls: type) -> str:
    return workflow._Definition.must_from_class(cls).name or cls.__name__


def state_queries(workflows: Sequence[type]) -> dict[str, Callable[..., Any]]:
    """Workflow type name → its `state` query, for the workflows that have one."""
    return {workflow_name(cls): cls.state for cls in workflows if hasattr(cls, "state")}
