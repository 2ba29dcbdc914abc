"""A real HTTP provider on loopback that counts requests and answers as told."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    # When set, the reply waits for it: a test decides exactly when the provider answers.
    gate: asyncio.Event | None = None


class FakeProvider:
    """`POST|GET /{name}` answers the replies queued for `name` in order, then 200."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._plans: dict[str, list[Reply]] = {}
        self.url = ""

    def plan(self, name: str, *replies: Reply) -> None:
        self._plans.setdefault(name, []).extend(replies)

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        queued = self._plans.get(name)
        reply = queued.pop(0) if queued else Reply(body={"id": f"{name}-{self.hits[name]}"})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.gate is not None:
            await reply.gate.wait()
        body = reply.body if reply.body is not None else {"error": f"status {reply.status}"}
        return web.json_response(body, status=reply.status, headers=reply.headers)


@pytest_asyncio.fixture(loop_scope="session")
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_route("*", "/{name}", fake._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()
