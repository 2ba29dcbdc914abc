"""Relay's long-lived workflows keep running: the API refuses to cancel the webhook
dispatcher, and when an operator terminates it anyway the worker starts it again.

A real `relay worker` process and the real API over the Temporal dev server; a webhook
published after the restart reaches a receiver on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.crypto import Keyring
from relay.settings import Settings
from relay.webhooks.contracts import dispatcher_workflow_id
from tests.conftest import ServerThread, eventually, settings_env, task_queue, terminate_running
from tests.support.api import bearer, new_key
from tests.webhooks.conftest import Receiver
from worker import LONG_LIVED_CHECK_INTERVAL

# The worker checks every LONG_LIVED_CHECK_INTERVAL (5 s); a restart well within 15 s.
RESTART_WITHIN = 15.0


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{name}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield recv
    await runner.cleanup()


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
def worker_process(
    worker_log: Path,
) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """`relay worker` (which supervises the long-lived workflows), its log kept in a file."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        with worker_log.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "worker"],
                env=settings_env(settings),
                cwd=worker_log.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def _log_messages(path: Path) -> list[str]:
    return [
        json.loads(line)["message"]
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]


async def test_the_dispatcher_cannot_be_cancelled_and_comes_back_when_terminated(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    worker_process: Callable[[Settings], subprocess.Popen[bytes]],
    worker_log: Path,
    receiver: Receiver,
) -> None:
    assert LONG_LIVED_CHECK_INTERVAL.total_seconds() <= 5
    client = temporal_env.client
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        webhook_allowed_networks="127.0.0.0/8",
    )
    workflow_id = dispatcher_workflow_id(settings.temporal_task_queue)
    dispatcher = client.get_workflow_handle(workflow_id)
    worker = worker_process(settings)
    app = create_app(settings, engine=engine, keyring=keyring)

    async def running() -> WorkflowExecutionDescription | None:
        try:
            description = await dispatcher.describe()
        except RPCError:
            return None
        return description if description.status == WorkflowExecutionStatus.RUNNING else None

    try:
        with ServerThread(app) as server:
            first = await eventually(running, timeout=60, interval=0.25)
            assert isinstance(first, WorkflowExecutionDescription)
            async with httpx.AsyncClient(
                base_url=server.url, headers=bearer(new_key(engine)), timeout=30
            ) as http:
                # Any API key could stop every delivery: the API refuses, naming why.
                response = await http.post(f"/v1/runs/{workflow_id}/cancel")
                assert response.status_code == 409, response.text
                error = response.json()["error"]
                assert error["code"] == "CONFLICT"
                assert "long-lived" in error["message"] and workflow_id in error["message"]
                assert error["details"]["workflowId"] == workflow_id
                # ... and the dispatcher runs on: the same run, no cancellation requested.
                still = await running()
                assert still is not None and still.run_id == first.run_id
                history = await client.get_workflow_handle(
                    workflow_id, run_id=first.run_id
                ).fetch_history()
                assert not any(
                    event.HasField("workflow_execution_cancel_requested_event_attributes")
                    for event in history.events
                )

                # An operator terminates it in the Temporal UI: the worker starts it again.
                await dispatcher.terminate(reason="an operator in the Temporal UI")
                terminated_at = time.monotonic()

                async def restarted() -> WorkflowExecutionDescription | None:
                    description = await running()
                    return (
                        description if description and description.run_id != first.run_id else None
                    )

                second = await eventually(restarted, timeout=RESTART_WITHIN, interval=0.25)
                assert isinstance(second, WorkflowExecutionDescription)
                elapsed = time.monotonic() - terminated_at
                print(f"\ndispatcher running again {elapsed:.1f} s after it was terminated")
                old = await client.get_workflow_handle(workflow_id, run_id=first.run_id).describe()
                assert old.status == WorkflowExecutionStatus.TERMINATED
                assert any(
                    f"long-lived workflow {workflow_id} had ended" in message
                    for message in _log_messages(worker_log)
                )

                # Deliveries flow through the new run.
                created = await http.post(
                    "/v1/webhooks", json={"url": receiver.url("after"), "events": ["order.*"]}
                )
                assert created.status_code == 201, created.text
                published = await http.post(
                    "/v1/events", json={"type": "order.created", "data": {"orderId": "o-9"}}
                )
                assert published.status_code == 202, published.text
                await eventually(lambda: receiver.at("after"), timeout=30)
                [delivery] = receiver.at("after")
                assert delivery.json["data"] == {"orderId": "o-9"}
    finally:
        # Stop the worker first, or it would start the dispatcher terminated below again.
        worker.terminate()
        worker.wait(timeout=60)
        await terminate_running(client, settings.temporal_task_queue)
    assert worker.returncode == 0
    assert "Traceback" not in worker_log.read_text()
