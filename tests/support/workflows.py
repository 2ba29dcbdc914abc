"""Test-only workflows (never registered by Relay's own worker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow

from relay import search_attributes


@dataclass
class EchoInput:
    message: str
    entity_id: str = "echo"


@dataclass
class EchoState:
    message: str
    finished: bool = False
    echoes: list[str] = field(default_factory=list)


@activity.defn
async def echo_activity(text: str) -> str:
    return f"echo: {text}"


@workflow.defn
class EchoWorkflow:
    """Echoes its input through an activity, then waits for `finish`."""

    @workflow.init
    def __init__(self, params: EchoInput) -> None:
        self._state = EchoState(message=params.message)

    @workflow.run
    async def run(self, params: EchoInput) -> str:
        workflow.upsert_search_attributes([search_attributes.ENTITY_ID.value_set(params.entity_id)])
        result = await workflow.execute_activity(
            echo_activity, params.message, start_to_close_timeout=timedelta(seconds=10)
        )
        self._state.echoes.append(result)
        await workflow.wait_condition(lambda: self._state.finished)
        return result

    @workflow.signal
    def finish(self) -> None:
        self._state.finished = True

    @workflow.query
    def state(self) -> EchoState:
        return self._state
