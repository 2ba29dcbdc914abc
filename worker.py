"""The worker: builds provider clients once, registers every workflow and activity, runs.

Several workers may poll one task queue; each keeps Relay's long-lived workflows running
(starting any that ends again within `LONG_LIVED_CHECK_INTERVAL`), shuts down gracefully
on SIGTERM (in-flight activities get `GRACEFUL_SHUTDOWN` to finish) and, when
WORKER_METRICS_PORT is set, serves the Temporal runtime's metrics in Prometheus format.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import timedelta
from types import ModuleType
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from relay.capabilities import CAPABILITIES
from relay.crypto import Keyring, load_keyring
from relay.db import make_engine
from relay.ledger import Ledger
from relay.settings import Settings
from relay.telemetry import configure_tracing
from relay.temporal import connect
from relay.worker_context import WorkerContext
from workflows.registry import all_workflows

log = logging.getLogger("relay.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=20)
# After SIGTERM the process exits by this deadline even if the graceful shutdown hangs
# (within `relay dev`'s STOP_GRACE_SECONDS plus its SIGKILL margin).
EXIT_DEADLINE = GRACEFUL_SHUTDOWN + timedelta(seconds=4)
CONNECT_ATTEMPTS = 60
# How often the worker checks that the long-lived workflows still run.
LONG_LIVED_CHECK_INTERVAL = timedelta(seconds=5)


def build_activities(context: WorkerContext) -> list[Callable[..., Any]]:
    """Every capability's activities, as bound methods of classes that hold their clients."""
    activities: list[Callable[..., Any]] = []
    for name in CAPABILITIES:
        provider = importlib.import_module(f"activities.{name}").ACTIVITIES
        activities += provider.from_context(context).activities()
    return activities


def build_dedicated_workers(context: WorkerContext) -> list[Worker]:
    """Workers a capability runs beside the main one, each on a task queue of its own with
    slots of its own (`DEDICATED_WORKERS` in its activities module): files' image
    processing, bounded by the image processes, so a burst waits in Temporal."""
    workers: list[Worker] = []
    for name in CAPABILITIES:
        module = importlib.import_module(f"activities.{name}")
        workers += [build(context) for build in getattr(module, "DEDICATED_WORKERS", ())]
    return workers


def _long_lived_clients() -> list[ModuleType]:
    """Each capability's client module that has workflows to keep running."""
    modules = []
    for name in CAPABILITIES:
        if importlib.util.find_spec(f"workflows.clients.{name}") is None:
            continue
        module = importlib.import_module(f"workflows.clients.{name}")
        if hasattr(module, "start_long_lived"):
            modules.append(module)
    return modules


async def start_long_lived_workflows(context: WorkerContext) -> None:
    """Workflows that must always run (idempotent: an existing run is left alone)."""
    for module in _long_lived_clients():
        await module.start_long_lived(context.client, context.settings)


async def _is_running(client: Client, workflow_id: str) -> bool:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


async def restart_ended_long_lived(context: WorkerContext) -> list[str]:
    """Start again each long-lived workflow that ended (an operator cancelled or terminated
    it in the Temporal UI, say); returns the ids it had to start."""
    restarted: list[str] = []
    for module in _long_lived_clients():
        declared = getattr(module, "long_lived_workflow_ids", None)
        if declared is None:  # nothing to check: re-running the idempotent start is enough
            await module.start_long_lived(context.client, context.settings)
            continue
        ended = [
            workflow_id
            for workflow_id in sorted(declared(context.settings))
            if not await _is_running(context.client, workflow_id)
        ]
        if ended:
            await module.start_long_lived(context.client, context.settings)
            for workflow_id in ended:
                log.warning("long-lived workflow %s had ended: started it again", workflow_id)
            restarted += ended
    return restarted


async def supervise_long_lived(
    context: WorkerContext, interval: timedelta = LONG_LIVED_CHECK_INTERVAL
) -> None:
    """Every `interval`, start again whatever long-lived workflow ended; runs until cancelled."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            await restart_ended_long_lived(context)
        except Exception as exc:  # Temporal unreachable, say: the next round tries again
            log.warning("could not check the long-lived workflows: %s", exc)


def build_worker(
    context: WorkerContext,
    *,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> Worker:
    """The worker; tests add their own workflows and activities beside Relay's."""
    return Worker(
        context.client,
        task_queue=context.settings.temporal_task_queue,
        workflows=[*all_workflows(), *extra_workflows],
        activities=[*build_activities(context), *extra_activities],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


def metrics_runtime(port: int | None) -> Runtime | None:
    if port is None:
        return None
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}"))
    )


async def connect_with_retry(
    settings: Settings, keyring: Keyring, runtime: Runtime | None = None
) -> Client:
    """The worker may start before the Temporal dev server answers: wait for it."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await connect(settings, keyring, runtime=runtime)
        except RuntimeError:
            if attempt == CONNECT_ATTEMPTS:
                raise
            if attempt == 1:
                log.info("waiting for Temporal at %s", settings.temporal_target)
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def run_worker(settings: Settings) -> None:
    settings.check()
    configure_tracing(settings)
    keyring = load_keyring(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.dev_keys_file,
    )
    engine = make_engine(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
    client = await connect_with_retry(
        settings, keyring, metrics_runtime(settings.worker_metrics_port)
    )
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    worker = build_worker(context)
    dedicated = build_dedicated_workers(context)

    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            # A shutdown that cannot finish (Temporal gone while an activity's completion
            # is retried, a task that will not cancel) must not keep the process alive.
            watchdog = threading.Timer(EXIT_DEADLINE.total_seconds(), os._exit, args=(1,))
            watchdog.daemon = True
            watchdog.start()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    log.info(
        "worker polling task queue %r (and %s)",
        settings.temporal_task_queue,
        ", ".join(repr(each.task_queue) for each in dedicated) or "no other",
    )
    run = asyncio.create_task(worker.run())
    runs = {run: worker} | {asyncio.create_task(other.run()): other for other in dedicated}
    await start_long_lived_workflows(context)
    supervisor = asyncio.create_task(supervise_long_lived(context))
    stopped = asyncio.create_task(stop.wait())
    # A worker that fails stops the process as a signal does (its supervisor restarts it).
    await asyncio.wait({*runs, stopped}, return_when=asyncio.FIRST_COMPLETED)
    supervisor.cancel()
    with suppress(asyncio.CancelledError):
        await supervisor
    running = [each for task, each in runs.items() if not task.done()]
    if running:
        log.info("shutting down: letting in-flight activities finish")
        await asyncio.gather(*(each.shutdown() for each in running))
    for task in runs:
        await task
    for close in context.closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    engine.dispose()
