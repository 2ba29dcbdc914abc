"""Test-only workflow for the observability tests: it logs from the workflow and an activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

# A credential-shaped value the activity logs by mistake; the log pipeline must mask it.
LEAKED_TOKEN = "ya29.leaked-access-token-0123456789"  # noqa: S105


@dataclass
class ChattyInput:
    reference: str


@activity.defn
async def chatty_activity(reference: str) -> str:
    activity.logger.info(
        "calling the provider for %s with access_token=%s", reference, LEAKED_TOKEN
    )
    activity.logger.info("sent Authorization: Bearer %s", LEAKED_TOKEN)
    return f"done {reference}"


@workflow.defn
class ChattyWorkflow:
    """Logs through workflow.logger, then runs `chatty_activity` once."""

    @workflow.run
    async def run(self, params: ChattyInput) -> str:
        workflow.logger.info("starting for %s", params.reference)
        return await workflow.execute_activity(
            chatty_activity, params.reference, start_to_close_timeout=timedelta(seconds=10)
        )
