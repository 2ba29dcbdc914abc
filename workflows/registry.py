"""Every workflow the worker registers, and how the API reads a run's state.

The workflows are those of every capability in `relay.capabilities.CAPABILITIES`
(each `workflows/<name>.py` exports `WORKFLOWS`). A workflow that exposes its state
does so through a query method named `state`; GET /v1/runs/{workflowId} calls it
through the typed handle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from temporalio import workflow

from relay.capabilities import CAPABILITIES


def all_workflows() -> list[type]:
    workflows: list[type] = []
    for name in CAPABILITIES:
        workflows.extend(importlib.import_module(f"workflows.{name}").WORKFLOWS)
    return workflows


def workflow_name(cls: type) -> str:
    return workflow._Definition.must_from_class(cls).name or cls.__name__


def state_queries(workflows: Sequence[type]) -> dict[str, Callable[..., Any]]:
    """Workflow type name → its `state` query, for the workflows that have one."""
    return {workflow_name(cls): cls.state for cls in workflows if hasattr(cls, "state")}
