"""Scenario registry for the history recorder (`python -m tests.histories.record`).

Each workflow's owner adds a module here with one or more scenarios:

    from tests.histories.scenarios import Recording, scenario

    @scenario("WebhookDispatchWorkflow", "delivery-retried")
    async def delivered_after_a_retry(rec: Recording) -> list[str]:
        async with rec.stack(webhook_retry_schedule="1s") as stack:
            ...                      # drive the workflow through the API, as a user would
            return [workflow_id]     # the runs whose histories to keep

A scenario returns the ids of the workflows to record while its stack still runs
(long-lived workflows are recorded mid-flight; a replay of a partial history is a
full determinism check of everything it contains). The recorder writes each one
to `tests/histories/<WorkflowType>/<scenario>.json`, encrypted with the test-only
keyring in `tests/histories/keys.txt`. Re-record after a deliberate, patched change
to a workflow only if the old histories still replay (keep the old files too).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.db import make_engine
from relay.ledger import Ledger
from relay.migrate import upgrade
from relay.settings import Settings
from relay.temporal import connect
from relay.worker_context import WorkerContext
from worker import build_dedicated_workers, build_worker, start_long_lived_workflows

HISTORIES = Path(__file__).resolve().parent.parent
KEYS_FILE = HISTORIES / "keys.txt"


@dataclass
class Recording:
    """What a scenario gets: the dev server's address and a way to run Relay against it."""

    temporal_address: str
    keyring_spec: str
    data_dir: Path
    # Test-only workflows and activities a scenario needs beside Relay's own.
    extra_workflows: list[type] = field(default_factory=list)
    extra_activities: list[Callable[..., object]] = field(default_factory=list)

    @property
    def keyring(self) -> Keyring:
        return Keyring.parse(self.keyring_spec)

    def settings(self, **overrides: object) -> Settings:
        run_dir = self.data_dir / uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "relay_env": "test",
            "data_dir": run_dir,
            "database_url": f"sqlite:///{run_dir / 'relay.db'}",
            "encryption_keys": self.keyring_spec,
            "temporal_address": self.temporal_address,
            "temporal_task_queue": f"record-{uuid.uuid4().hex[:8]}",
            "webhook_allowed_networks": "127.0.0.0/8",
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    @asynccontextmanager
    async def stack(self, **overrides: object) -> AsyncIterator[RecordingStack]:
        """Relay as `make dev` runs it: migrated database, worker, long-lived workflows, API."""
        from tests.conftest import ServerThread

        settings = self.settings(**overrides)
        upgrade(settings.sqlalchemy_url)
        engine = make_engine(settings.sqlalchemy_url)
        keyring = self.keyring
        client = await connect(settings, keyring)
        context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
        _, api_key = create_key(engine, "recorder", ["admin"])
        worker = build_worker(
            context,
            extra_workflows=self.extra_workflows,
            extra_activities=self.extra_activities,
        )
        from api.app import create_app

        app = create_app(
            settings, engine=engine, keyring=keyring, extra_workflows=self.extra_workflows
        )
        server = ServerThread(app)
        if "public_base_url" not in overrides:
            # Providers send the browser back to PUBLIC_BASE_URL's callback: this API.
            settings.public_base_url = server.url
        try:
            async with contextlib.AsyncExitStack() as workers:
                # The main worker and each capability's own (files' processing queue).
                for running in [worker, *build_dedicated_workers(context)]:
                    await workers.enter_async_context(running)
                await start_long_lived_workflows(context)
                with server:
                    yield RecordingStack(settings, client, server.url, api_key, context)
        finally:
            for close in context.closers:
                result = close()
                if hasattr(result, "__await__"):
                    await result  # type: ignore[misc]
            engine.dispose()


@dataclass
class RecordingStack:
    settings: Settings
    client: Client
    api_url: str
    api_key: str
    context: WorkerContext

    def http(self) -> object:
        import httpx

        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )


async def until(check: Callable[[], Awaitable[object]], *, timeout: float = 60) -> object:
    """Poll an async check until it returns something truthy."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"scenario condition not met within {timeout}s")


Scenario = Callable[[Recording], Awaitable[list[str]]]


@dataclass(frozen=True)
class Registered:
    workflow_type: str
    name: str
    run: Scenario
    # Test-only workflow classes the scenario records (not in all_workflows()).
    test_workflows: tuple[type, ...] = ()
    test_activities: tuple[Callable[..., object], ...] = ()


SCENARIOS: list[Registered] = []


def scenario(
    workflow_type: str,
    name: str,
    *,
    test_workflows: tuple[type, ...] = (),
    test_activities: tuple[Callable[..., object], ...] = (),
) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        if any(s.workflow_type == workflow_type and s.name == name for s in SCENARIOS):
            raise ValueError(f"scenario {workflow_type}/{name} is registered twice")
        SCENARIOS.append(Registered(workflow_type, name, run, test_workflows, test_activities))
        return run

    return register


def load_scenarios() -> list[Registered]:
    """Import every module of this package, which registers its scenarios."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__name__}.{module.name}")
    return list(SCENARIOS)


def recorded_test_workflows() -> list[type]:
    """Test-only workflows that have recorded histories (replayed beside Relay's own)."""
    found: dict[str, type] = {}
    for registered in load_scenarios():
        for cls in registered.test_workflows:
            found[cls.__name__] = cls
    return list(found.values())
