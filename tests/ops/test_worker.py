"""`relay worker` as a process: Prometheus metrics, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.settings import Settings
from relay.webhooks.contracts import dispatcher_workflow_id
from relay.webhooks.publish import publish_event
from tests.conftest import eventually, free_port, settings_env, task_queue
from tests.webhooks.helpers import attempts_of, create_endpoint, deliveries_of

SLOW_RESPONSE_SECONDS = 3


class SlowReceiver:
    """A webhook receiver that takes a few seconds to answer 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(request.headers.get("webhook-id", ""))
        self.arrived.set()
        await asyncio.sleep(SLOW_RESPONSE_SECONDS)
        return web.Response(text="ok")


@pytest_asyncio.fixture(loop_scope="session")
async def slow_receiver() -> AsyncIterator[SlowReceiver]:
    receiver = SlowReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    yield receiver
    await runner.cleanup()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """`relay worker` with its stderr (the JSON log) kept in a file; killed after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "worker"],
            env=settings_env(settings),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log_path = Path(log.name)  # type: ignore[attr-defined]
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def log_entries(process: subprocess.Popen[bytes]) -> list[dict]:
    text = process.log_path.read_text()  # type: ignore[attr-defined]
    assert "Traceback" not in text, text
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def scrape(port: int) -> str:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.TransportError:
        return ""
    return response.text if response.status_code == 200 else ""


async def test_worker_serves_prometheus_metrics_and_drains_on_sigterm(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    worker_process: Callable[[Settings], subprocess.Popen[bytes]],
    slow_receiver: SlowReceiver,
) -> None:
    metrics_port = free_port()
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=temporal_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        worker_metrics_port=metrics_port,
        webhook_allowed_networks="127.0.0.0/8",
    )
    process = worker_process(settings)

    async def metrics_with_polls() -> str:
        text = await scrape(metrics_port)
        return text if "temporal_worker_task_slots_available{" in text else ""

    text = str(await eventually(metrics_with_polls, timeout=60, interval=0.5))
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert any(name.startswith("temporal_") for name in names)
    assert f'task_queue="{settings.temporal_task_queue}"' in text

    # The worker started Relay's long-lived dispatcher on its task queue.
    dispatcher = temporal_env.client.get_workflow_handle(
        dispatcher_workflow_id(settings.temporal_task_queue)
    )
    assert (await dispatcher.describe()).status == WorkflowExecutionStatus.RUNNING

    # A delivery in flight when SIGTERM arrives is finished and recorded, once.
    endpoint_id = create_endpoint(engine, keyring, slow_receiver.url, ["order.*"])
    await asyncio.to_thread(publish_event, engine, "order.created", {"orderId": "o-1"})
    await asyncio.wait_for(slow_receiver.arrived.wait(), timeout=30)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 60)

    assert code == 0
    [delivery] = deliveries_of(engine, endpoint_id)
    assert delivery.status == "DELIVERED"
    assert len(attempts_of(engine, delivery.id)) == 1
    assert len(slow_receiver.received) == 1
    messages = [entry["message"] for entry in log_entries(process)]
    assert any("shutting down" in message for message in messages)
    assert await scrape(metrics_port) == ""


async def test_idle_worker_without_metrics_stops_cleanly_on_sigterm(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    make_settings: Callable[..., Settings],
    worker_process: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=temporal_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
    )
    process = worker_process(settings)
    dispatcher = temporal_env.client.get_workflow_handle(
        dispatcher_workflow_id(settings.temporal_task_queue)
    )

    async def dispatcher_running() -> bool:
        try:
            return (await dispatcher.describe()).status == WorkflowExecutionStatus.RUNNING
        except Exception:
            return False

    await eventually(dispatcher_running, timeout=60, interval=0.5)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 60) == 0
    log_entries(process)
