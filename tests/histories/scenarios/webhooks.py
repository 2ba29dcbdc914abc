"""WebhookDispatchWorkflow: a delivery, a failed attempt held on a timer and retried,
and a manual retry (an update), all driven through the API as an application would."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from tests.histories.scenarios import Recording, scenario, until


@asynccontextmanager
async def _receiver() -> AsyncIterator[tuple[str, Counter[str]]]:
    """`/ok` answers 200; `/flaky` answers 500 once, then 200."""
    hits: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name] += 1
        if name == "flaky" and hits[name] == 1:
            return web.Response(status=500, text="try later")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


@scenario("WebhookDispatchWorkflow", "deliver-retry-manual")
async def deliver_retry_manual(rec: Recording) -> list[str]:
    from relay.webhooks.contracts import dispatcher_workflow_id

    async with _receiver() as (base, hits), rec.stack(webhook_retry_schedule="1s,1s,1s") as stack:
        async with stack.http() as http:  # type: ignore[attr-defined]
            endpoints = {}
            for name in ("ok", "flaky"):
                response = await http.post(
                    "/v1/webhooks", json={"url": f"{base}/{name}", "events": ["order.*"]}
                )
                response.raise_for_status()
                endpoints[name] = response.json()["data"]["id"]
            published = await http.post(
                "/v1/events", json={"type": "order.created", "data": {"orderId": "ord_1"}}
            )
            published.raise_for_status()

            async def delivered() -> str | None:
                page = await http.get(f"/v1/webhooks/{endpoints['flaky']}/deliveries")
                rows = page.json()["data"]
                if rows and rows[0]["status"] == "DELIVERED" and hits["ok"] >= 1:
                    return str(rows[0]["id"])
                return None

            delivery_id = await until(delivered)
            manual = await http.post(f"/v1/deliveries/{delivery_id}/retry")
            manual.raise_for_status()
        return [dispatcher_workflow_id(stack.settings.temporal_task_queue)]
