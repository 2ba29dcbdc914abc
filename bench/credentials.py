"""Credential reads benchmark: `GET /v1/integrations/{id}/credentials` against `GET /health`.

Starts `relay api` as a process of its own (with a Temporal dev server in memory, which
the route connects to, and no worker: no read here is due a refresh) on free ports with a
temporary DATA_DIR, over SQLite, or over a fresh PostgreSQL database of its own
(`--postgres URL`, created on that server and dropped afterwards). One CONNECTED
integration holds a sealed token that expires in a day, and a key with the
`credentials:read` scope reads it.

At each concurrency (1 and 20 by default) the same aiohttp client first sends
`GET /health` (the reference: the HTTP layer alone) and then the credential reads, the
same number of requests each, after a warm-up of each; rates and p50/p99 latencies
(from the start of the request to its whole body) are printed and written as JSON to
`bench/results/`. Every read must answer 200 with the token, and the access log must
hold exactly one row per read, with the key, at the end.

`--api-processes N` starts N - 1 more `relay api` processes on ports of their own (same
database, same Temporal) and spreads the clients over them (client i talks to process
i mod N); "API CPU" is then the sum over the N processes.

Run with `make bench-credentials` (never part of the test suite). Bounded: a fixed number
of requests, every wait has a deadline, and every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from bench.webhooks import Stack, free_port
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.db import make_engine, utcnow
from relay.models.oauth import Integration, IntegrationCredentialAccess
from relay.oauth.contracts import IntegrationStatus as Status
from relay.oauth.tokens import TokenStore

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "bench-access-token-" + "x" * 40  # noqa: S105 (a benchmark's made-up token)
WARM_UP = 200
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Figure:
    path: str
    concurrency: int
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    api_cpu_ms: float = 0.0  # CPU time of the API process per request (user + system)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    sessions: list[aiohttp.ClientSession],
    path: str,
    *,
    concurrency: int,
    requests: int,
    expect: str | None = None,
    api_pids: list[int] | None = None,
) -> Figure:
    """`concurrency` clients share `requests`; client i talks to API process i mod N."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    def cpu() -> float:
        return sum(cpu_seconds(pid) for pid in api_pids or [])

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            started = time.perf_counter()
            async with session.get(path) as response:
                body = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200 or (expect is not None and expect.encode() not in body):
                raise RuntimeError(f"{path} answered {response.status}: {body[:200]!r}")

    cpu_before = cpu()
    started = time.perf_counter()
    await asyncio.gather(*(client(sessions[i % len(sessions)]) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    used = cpu() - cpu_before
    return Figure(
        path="/health" if path == "/health" else "credentials",
        concurrency=concurrency,
        requests=requests,
        seconds=round(seconds, 3),
        per_second=round(requests / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        api_cpu_ms=round(used / requests * 1000, 3),
    )


def seed(database_url: str, keyring: Keyring) -> tuple[str, str]:
    """A CONNECTED integration with a sealed token, and a `credentials:read` key."""
    engine = make_engine(database_url)
    _, raw_key = create_key(engine, "bench-credentials", ["credentials:read"])
    now = utcnow()
    integration = Integration(
        user_id="bench-user",
        provider="github",
        name="bench",
        status=Status.CONNECTED,
        token_type="bearer",  # noqa: S106 (a token type, not a secret)
        expires_at=now + timedelta(days=1),
        scope=["repo"],
        last_sync_at=now,
        connected_at=now,
    )
    with Session(engine) as session:
        session.add(integration)
        session.flush()
        TokenStore(engine, keyring).put(session, integration.id, TOKEN, "bench-refresh", {})
        session.commit()
        integration_id = str(integration.id)
    engine.dispose()
    return integration_id, raw_key


def access_rows(database_url: str) -> int:
    engine = make_engine(database_url)
    with Session(engine) as session:
        count = session.exec(
            select(func.count())
            .select_from(IntegrationCredentialAccess)
            .where(IntegrationCredentialAccess.api_key_id.is_not(None))  # type: ignore[union-attr]
        ).one()
    engine.dispose()
    return int(count)


def py_spy(out: str | None, stack: Stack, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording an API process (the last one started) until SIGINT,
    as collapsed stacks of the thread holding the GIL (`--py-spy DIR`; py-spy from PyPI, on PATH or
    given as PY_SPY)."""
    if out is None:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    command = [
        os.environ.get("PY_SPY", "py-spy"),
        "record",
        "--pid",
        str(stack.processes[-1].pid),
        "--rate",
        "250",
        "--gil",
        "--format",
        "raw",
        "--output",
        str(Path(out) / f"credentials-{name}.txt"),
    ]
    spy = subprocess.Popen(command)  # noqa: S603
    time.sleep(1.0)  # attached before the measured requests start
    return spy


def fresh_postgres(base: str) -> tuple[str, str]:
    name = f"relay_bench_{secrets.token_hex(4)}"
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_postgres(base: str, name: str) -> None:
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def start_more_apis(stack: Stack, count: int) -> list[int]:
    """`count` more `relay api` processes on ports of their own, sharing the stack's
    database and Temporal (stopped with the stack); their ports."""
    ports = []
    for _ in range(count):
        port = free_port()
        log = (stack.dir / f"api-{port}.log").open("ab")
        stack.processes.append(
            subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "relay.cli", "api", "--port", str(port)],
                env=stack.env,
                stdout=log,
                stderr=log,
            )
        )
        stack._wait_port(port)
        ports.append(port)
    return ports


async def main(args: argparse.Namespace) -> list[Figure]:
    database_url = None
    created = None
    if args.postgres:
        created, database_url = fresh_postgres(args.postgres)
    stack = Stack(database_url, persist_temporal=False, worker=False)
    figures: list[Figure] = []
    sessions: list[aiohttp.ClientSession] = []
    try:
        await asyncio.to_thread(stack.start)
        api_pids = [stack.processes[-1].pid]  # `relay api`, started last
        ports = [stack.api_port]
        if args.api_processes > 1:
            ports += await asyncio.to_thread(start_more_apis, stack, args.api_processes - 1)
            api_pids += [process.pid for process in stack.processes[-(args.api_processes - 1) :]]
        keyring = Keyring.parse(stack.env["ENCRYPTION_KEYS"])
        integration_id, raw_key = await asyncio.to_thread(seed, stack.database_url, keyring)
        path = f"/v1/integrations/{integration_id}/credentials"
        reads = 0
        sessions = [
            aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {raw_key}"},
                connector=aiohttp.TCPConnector(limit=max(args.concurrency)),
                timeout=REQUEST_TIMEOUT,
            )
            for port in ports
        ]
        for concurrency in args.concurrency:
            count = args.requests if concurrency > 1 else args.requests // 2
            for _ in range(args.rounds):
                await measure(sessions, "/health", concurrency=concurrency, requests=WARM_UP)
                await measure(
                    sessions, path, concurrency=concurrency, requests=WARM_UP, expect=TOKEN
                )
                reads += WARM_UP
                figures.append(
                    await measure(
                        sessions,
                        "/health",
                        concurrency=concurrency,
                        requests=count,
                        api_pids=api_pids,
                    )
                )
                spy = py_spy(args.py_spy, stack, f"c{concurrency}")
                figures.append(
                    await measure(
                        sessions,
                        path,
                        concurrency=concurrency,
                        requests=count,
                        expect=TOKEN,
                        api_pids=api_pids,
                    )
                )
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                reads += count
                for figure in figures[-2:]:
                    print(
                        f"c={concurrency:>3} {figure.path:<12} {figure.per_second:>8.1f}/s "
                        f"p50 {figure.p50_ms:6.2f} ms  p99 {figure.p99_ms:6.2f} ms  "
                        f"API CPU {figure.api_cpu_ms:.3f} ms/request",
                        flush=True,
                    )
        logged = await asyncio.to_thread(access_rows, stack.database_url)
        print(f"reads {reads}, access-log rows {logged}", flush=True)
        if logged != reads:
            raise RuntimeError(f"{reads} reads but {logged} access-log rows")
    finally:
        for session in sessions:
            await session.close()
        stack.stop()
        if created and args.postgres:
            drop_postgres(args.postgres, created)
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--requests", type=int, default=4000, help="per figure (half at c=1)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--py-spy", help="record the API with py-spy into this directory")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="`relay api` processes on ports of their own; the clients are spread over them",
    )
    parser.add_argument(
        "--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 20]
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    figures = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"credentials-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_average_start": load_before,
                "load_average": os.getloadavg(),
                "database": "postgresql" if args.postgres else "sqlite",
                "api_processes": args.api_processes,
                "figures": [asdict(f) for f in figures],
            },
            indent=2,
        )
    )
    print(f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}; written to {out}")


if __name__ == "__main__":
    cli()
