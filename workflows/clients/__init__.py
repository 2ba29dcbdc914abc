"""Clients of each capability's workflows: the code that starts, signals and updates them,
shared by the API and the worker (like samples-python's starters), typed against the
workflow classes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from relay.errors import ErrorCode, RelayError

T = TypeVar("T")

# How long a request waits for a provider through an entity workflow's update. Past it the
# answer is 502 PROVIDER_ERROR (retryable): the workflow keeps retrying on its own, and the
# same request again (same idempotencyKey) lands on it.
UPDATE_WAIT = timedelta(seconds=25)


def application_failure(exc: BaseException) -> ApplicationError | None:
    """The `ApplicationError` in a Temporal failure's cause chain (an update's, a workflow's),
    which carries Relay's error code as its type; None when the failure has none."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    return cause


@dataclass(frozen=True)
class Entity:
    """Whom an update is for, as errors name it: `noun` ("the payment"), the details key
    of its id (`paymentId`), the id, the provider that may be slow, and what to say when
    its run has ended."""

    noun: str
    id_key: str
    id: str
    provider: str
    closed: str


class WorkflowClosed(RelayError):
    """The entity's run has ended (409 CONFLICT): a caller that can answer from the read
    model, or start a new run, catches it."""

    def __init__(self, entity: Entity) -> None:
        super().__init__(ErrorCode.CONFLICT, entity.closed)
        self.entity = entity


def update_error(exc: WorkflowUpdateFailedError, entity: Entity) -> RelayError:
    """An update the workflow refused, with the code its ApplicationError carries. A
    provider refusing what the client asked (VALIDATION_ERROR) is a 400 (ARCHITECTURE.md)."""
    cause = application_failure(exc)
    if cause is None:
        return RelayError(ErrorCode.INTERNAL_ERROR, f"{entity.noun}'s workflow failed")
    try:
        code = ErrorCode(cause.type or "")
    except ValueError:
        code = ErrorCode.CONFLICT
    details = cause.details[0] if cause.details else None
    status = 400 if code == ErrorCode.VALIDATION_ERROR else None
    return RelayError(code, cause.message, details, status=status)


async def await_update(entity: Entity, call: Awaitable[T]) -> T:
    """The result of an update (or update-with-start) on an entity workflow, waited for at
    most UPDATE_WAIT, every failure as the RelayError the API answers."""
    try:
        async with asyncio.timeout(UPDATE_WAIT.total_seconds()):
            return await call
    except WorkflowUpdateFailedError as exc:
        raise update_error(exc, entity) from None
    except WorkflowAlreadyStartedError:
        # Update-with-start on an id whose run has ended and may not be reused.
        raise WorkflowClosed(entity) from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise RelayError(
            ErrorCode.PROVIDER_ERROR,
            f"{entity.provider} did not answer in time; {entity.noun}'s workflow keeps retrying",
            {entity.id_key: entity.id, "retryable": True},
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise WorkflowClosed(entity) from None
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            # Temporal takes no update while the run's workflow task is failing (no worker
            # runs the workflow on the task queue, a deployment in progress): retryable.
            raise RelayError(
                ErrorCode.TEMPORAL_UNAVAILABLE,
                f"{entity.noun}'s workflow cannot take requests right now; retry",
                {entity.id_key: entity.id, "retryable": True},
            ) from None
        raise
