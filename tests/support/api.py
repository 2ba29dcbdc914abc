"""Helpers for API tests: keys, an address nothing listens on, a restartable dev server."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

from fastapi.routing import APIRoute
from sqlalchemy.engine import Engine
from temporalio.client import Client

from relay import search_attributes
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.temporal import data_converter
from tests.conftest import TEMPORAL_CLI, free_port


def new_key(engine: Engine, *scopes: str) -> str:
    """A new key with `scopes`; by default `admin`, so a test that is not about scopes
    can call every route (`relay keys create` defaults to `app`)."""
    _, raw = create_key(engine, f"test-{uuid.uuid4().hex[:8]}", scopes or ["admin"])
    return raw


def closed_address() -> str:
    """A loopback address with nothing listening: connections are refused at once."""
    return f"127.0.0.1:{free_port()}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class DevServer:
    """`temporal server start-dev` as a process of its own, stopped and restarted on one
    port with one database file, as an operator restarting Temporal would."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.db_file = data_dir / "temporal.db"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None, "already running"
        args = [
            str(TEMPORAL_CLI),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "error",
        ]
        for key in search_attributes.ALL:
            args += ["--search-attribute", f"{key.name}=Keyword"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def connect(self, keyring: Keyring) -> Client:
        """A client with Relay's data converter, once the server answers (up to 30 s)."""
        for _ in range(150):
            try:
                return await Client.connect(self.address, data_converter=data_converter(keyring))
            except RuntimeError:
                await asyncio.sleep(0.2)
        raise AssertionError("the dev server did not start")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def api_routes(app: object) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every APIRoute, including routes of included routers
    (recent FastAPI includes routers lazily, behind an internal wrapper)."""
    found: list[tuple[str, APIRoute]] = []

    def walk(routes: list[object], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append((prefix + route.path, route))
            elif hasattr(route, "original_router"):
                context = getattr(route, "include_context", None)
                walk(route.original_router.routes, prefix + getattr(context, "prefix", ""))

    walk(app.routes, "")  # type: ignore[attr-defined]
    return found
