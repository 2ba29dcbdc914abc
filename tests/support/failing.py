"""A test-only workflow whose activity fails with a secret in its message and details."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError


@dataclass
class LeakyInput:
    token: str


@activity.defn
async def reject_token(params: LeakyInput) -> None:
    # What a careless provider client might do: put the credential in the error.
    raise ApplicationError(
        f"provider rejected token {params.token}",
        {"token": params.token},
        type="OAUTH_FAILED",
        non_retryable=True,
    )


@workflow.defn
class LeakyWorkflow:
    """Passes a secret to an activity that fails quoting it."""

    @workflow.run
    async def run(self, params: LeakyInput) -> None:
        await workflow.execute_activity(
            reject_token,
            params,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
