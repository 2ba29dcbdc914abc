"""Webhook test fixtures: real HTTP receivers on loopback (aiohttp), recording every request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web
from temporalio.service import RPCError

from relay.webhooks.contracts import dispatcher_workflow_id
from tests.conftest import Stack


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


# A behaviour answers one request: (status, headers, body).
Behaviour = Callable[[int], tuple[int, dict[str, str], str]]


def always(status: int, headers: dict[str, str] | None = None, body: str = "ok") -> Behaviour:
    return lambda _n: (status, headers or {}, body)


def sequence(*statuses: int) -> Behaviour:
    """The n-th request to the path gets statuses[n] (the last one repeats)."""
    return lambda n: (statuses[min(n, len(statuses) - 1)], {}, "seq")


@dataclass
class Receiver:
    """A webhook receiver: `url(name)` is an endpoint whose answers `behave(name, …)` sets."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def url(self, name: str = "hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    def behave(self, name: str, behaviour: Behaviour) -> None:
        self.behaviours[name] = behaviour

    def at(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path == f"/{name}"]

    def ids(self, name: str | None = None) -> set[str]:
        items = self.received if name is None else self.at(name)
        return {r.headers["webhook-id"] for r in items}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        self.received.append(
            Received(
                request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
            )
        )
        if name in self.delay:
            await asyncio.sleep(self.delay[name])
        status, headers, text = self.behaviours.get(name, always(200))(n)
        if 300 <= status < 400:
            headers = {"Location": f"/redirected-{name}", **headers}
        return web.Response(status=status, headers=headers, text=text)


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


@pytest_asyncio.fixture(loop_scope="session")
async def stack(stack: Stack) -> AsyncIterator[Stack]:
    """The shared stack, with its webhook dispatcher terminated afterwards.

    Every stack has its own task queue and so its own dispatcher on the session's dev
    server; left running, each would keep a pump activity scheduled with no worker.
    """
    yield stack
    workflow_id = dispatcher_workflow_id(stack.settings.temporal_task_queue)
    with contextlib.suppress(RPCError):
        await stack.client.get_workflow_handle(workflow_id).terminate("test finished")
