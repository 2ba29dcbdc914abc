"""The harness's own check: a test-only workflow with an activity, a signal and a query."""

from __future__ import annotations

from tests.histories.scenarios import Recording, scenario, until
from tests.support.workflows import EchoInput, EchoWorkflow, echo_activity


@scenario(
    "EchoWorkflow",
    "signal-finish",
    test_workflows=(EchoWorkflow,),
    test_activities=(echo_activity,),
)
async def echo_then_finish(rec: Recording) -> list[str]:
    async with rec.stack() as stack:
        handle = await stack.client.start_workflow(
            EchoWorkflow.run,
            EchoInput("recorded", entity_id="echo-recorded"),
            id="echo-recorded",
            task_queue=stack.settings.temporal_task_queue,
        )

        async def echoed() -> bool:
            return bool((await handle.query(EchoWorkflow.state)).echoes)

        await until(echoed)
        await handle.signal(EchoWorkflow.finish)
        await handle.result()
    return [handle.id]
