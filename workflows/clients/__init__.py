"""Clients of each capability's workflows: the code that starts, signals and updates them,
shared by the API and the worker (like samples-python's starters), typed against the
workflow classes."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


def application_failure(exc: BaseException) -> ApplicationError | None:
    """The `ApplicationError` in a Temporal failure's cause chain (an update's, a workflow's),
    which carries Relay's error code as its type; None when the failure has none."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    return cause
