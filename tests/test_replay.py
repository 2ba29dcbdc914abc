"""Replays every recorded history against the current workflow code.

A change that makes a workflow non-deterministic (reordered commands, a removed
activity, a new timer without `workflow.patched`) fails here instead of breaking
runs in production. Histories live in `tests/histories/<WorkflowType>/*.json`,
encrypted with the test-only keyring in `tests/histories/keys.txt`; record them
with `python -m tests.histories.record`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from relay.crypto import Keyring
from relay.temporal import data_converter
from tests.histories.scenarios import HISTORIES, KEYS_FILE, load_scenarios, recorded_test_workflows
from tests.support.workflows import EchoInput, EchoState, echo_activity
from workflows.registry import all_workflows, workflow_name

_RECORDED = sorted(HISTORIES.glob("*/*.json"))


def _workflows() -> dict[str, type]:
    return {workflow_name(cls): cls for cls in [*all_workflows(), *recorded_test_workflows()]}


def test_every_registered_workflow_has_a_recorded_history() -> None:
    recorded = {path.parent.name for path in _RECORDED}
    missing = sorted({workflow_name(cls) for cls in all_workflows()} - recorded)
    assert missing == [], (
        f"no recorded history for {missing}: add a scenario in tests/histories/scenarios/ "
        "and run `python -m tests.histories.record`"
    )


def test_every_registered_workflow_has_a_scenario() -> None:
    scenarios = {registered.workflow_type for registered in load_scenarios()}
    missing = sorted({workflow_name(cls) for cls in all_workflows()} - scenarios)
    assert missing == [], f"no recording scenario for {missing}"


def test_recorded_histories_name_known_workflows() -> None:
    known = _workflows()
    unknown = sorted({path.parent.name for path in _RECORDED} - set(known))
    assert unknown == [], f"histories of workflows no longer registered: {unknown}"


@pytest.mark.parametrize("path", _RECORDED, ids=[f"{p.parent.name}/{p.stem}" for p in _RECORDED])
async def test_history_replays_on_current_code(path: Path) -> None:
    workflow_type = path.parent.name
    workflows = _workflows()
    if workflow_type not in workflows:
        pytest.fail(f"{workflow_type} is not a registered workflow")
    history = WorkflowHistory.from_json(f"{workflow_type}-{path.stem}", path.read_text())
    replayer = Replayer(
        workflows=[workflows[workflow_type]],
        data_converter=data_converter(Keyring.parse(KEYS_FILE.read_text().strip())),
        interceptors=[TracingInterceptor()],
    )
    # Raises on a non-deterministic change, naming the event that no longer matches.
    await replayer.replay_workflow(history)


@workflow.defn(name="EchoWorkflow", sandboxed=False)
class ChangedEchoWorkflow:
    """EchoWorkflow with a timer added before its activity: not replay-compatible."""

    @workflow.init
    def __init__(self, params: EchoInput) -> None:
        self._state = EchoState(message=params.message)

    @workflow.run
    async def run(self, params: EchoInput) -> str:
        await workflow.sleep(timedelta(seconds=1))
        return await workflow.execute_activity(
            echo_activity, params.message, start_to_close_timeout=timedelta(seconds=10)
        )

    @workflow.signal
    def finish(self) -> None:
        pass

    @workflow.query
    def state(self) -> EchoState:
        return self._state


async def test_a_non_deterministic_change_is_caught() -> None:
    """The harness itself: replaying a history against changed code fails."""
    path = HISTORIES / "EchoWorkflow" / "signal-finish.json"
    history = WorkflowHistory.from_json("echo", path.read_text())
    replayer = Replayer(
        workflows=[ChangedEchoWorkflow],
        data_converter=data_converter(Keyring.parse(KEYS_FILE.read_text().strip())),
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history)
