"""Files benchmark: a 12-megapixel JPEG end to end through Relay against a bare Pillow
script, 200 small images at once, and a worker's peak memory.

Starts the S3 sandbox (moto's server, `python -m relay.sandbox.s3`) and, as
bench/webhooks.py does, a Temporal dev server, `relay worker` and `relay api` as processes
of their own on free ports over a temporary SQLite database.

1. 12 MP: the same 4000x3000 JPEG, uploaded with the presigned POST (not timed), then
   timed from `POST /v1/files/{id}/complete` to the READY write (the read model's
   `updatedAt`; GET polled every 200 ms, so polling adds no load):
   S3 download, checks, decoding, four thumbnails and the compressed rendition, the S3
   uploads to moto, the copy of the original and the workflow's steps. In the same run,
   the bare script opens the same file from disk, decodes it in full and writes the same
   renditions (compressed 1600 px JPEG q80, thumbnails 512/256/128/64 JPEG q85) to disk
   with plain `Image.thumbnail` from a copy of the full image each time. Target: Relay
   ≤ 1.3 × the bare script (the goal: faster). Medians of `--runs` runs, first run of each
   dropped as a warm-up.
2. Burst: 200 small JPEGs (800x600) uploaded, then all completed at once (polled once a
   second, 10 at a time); reports throughput (files ÷ seconds from the first complete to
   the last READY write), the slowest file (complete → READY) and the worker's CPU use
   (its and its image processes' CPU seconds ÷ wall seconds ÷ cores: busy means near 1).
3. Memory: the peak resident set (VmHWM) of the worker and of each of its image
   processes after the 12 MP runs, and the worker's resident set before them.

Run with `python -m bench.files` (never part of the test suite). Every process it starts
is stopped at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from temporalio.client import Client

from bench.billing import register_search_attributes
from bench.webhooks import Stack
from relay.sandbox.s3 import S3Sandbox

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (512, 256, 128, 64)
DEADLINE_SECONDS = 300


def photo(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG that compresses like a photograph (gradients and grain), with EXIF."""
    base = Image.radial_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40 + seed % 7)
    image = Image.merge("RGB", (base, noise, Image.linear_gradient("L").resize((width, height))))
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def bare_script(path: Path, out_dir: Path) -> float:
    """The naive pipeline: open, decode in full, `thumbnail` a copy per rendition, save."""
    started = time.perf_counter()
    with Image.open(path) as image:
        image.load()
        compressed = image.copy()
        compressed.thumbnail((1600, 1600))
        compressed.save(out_dir / "compressed.jpg", "JPEG", quality=80, optimize=True)
        for size in SIZES:
            thumb = image.copy()
            thumb.thumbnail((size, size))
            thumb.save(out_dir / f"thumb-{size}.jpg", "JPEG", quality=85, optimize=True)
    return time.perf_counter() - started


def _proc(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    """The process's live descendants (the worker's image processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds of the process (and, asked, of its live children)."""
    pids = [pid, *(_children(pid) if with_children else [])]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in pids:
        parts = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(parts[11]) + int(parts[12])) / ticks
    return total


def _peak_rss(pid: int) -> dict[str, int]:
    """VmHWM of the worker and of each of its image processes."""
    return {"worker": _proc(pid, "VmHWM")} | {
        f"child-{child}": _proc(child, "VmHWM") for child in _children(pid)
    }


async def _steps(client: Client, file_id: str) -> list[str]:
    """The workflow's history as milliseconds since its first event: where time goes."""
    history = await client.get_workflow_handle(f"file-{file_id}").fetch_history()
    first = history.events[0].event_time.ToDatetime()
    steps = []
    for event in history.events:
        offset = (event.event_time.ToDatetime() - first).total_seconds() * 1000
        name = event.WhichOneof("attributes") or ""
        detail = ""
        if event.HasField("activity_task_scheduled_event_attributes"):
            detail = event.activity_task_scheduled_event_attributes.activity_type.name
        steps.append(f"{offset:8.1f} {name.removesuffix('_event_attributes')} {detail}")
    return steps


def _name(args: list[str]) -> str:
    return args[-1] if "relay.cli" in args else Path(args[0]).name


def _worker_pid(stack: Stack) -> int:
    for process in stack.processes:
        if isinstance(process.args, list) and process.args[-1] == "worker":
            return process.pid
    raise RuntimeError("no worker process")


class Api:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=50),
        )
        self.s3 = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=20))

    async def uploaded(self, data: bytes, name: str, message: str) -> str:
        created = await self.http.post(
            "/v1/files",
            json={
                "kind": "attachment",
                "userId": "bench",
                "conversationId": "bench",
                "messageId": message,
                "filename": name,
                "contentType": "image/jpeg",
                "size": len(data),
            },
        )
        if created.status_code != 201:
            raise RuntimeError(created.text)
        upload = created.json()["data"]
        posted = await self.s3.post(
            upload["uploadUrl"],
            data=upload["uploadFields"],
            files={"file": (name, data, "image/jpeg")},
        )
        posted.raise_for_status()
        return str(upload["id"])

    async def complete_until_ready(self, file_id: str, poll: float = 0.2) -> float:
        """Seconds from the complete request to the READY write (the read model's
        `updatedAt`, same machine clock): polling slowly keeps the API's load out of it."""
        started = datetime.now(UTC)
        (await self.http.post(f"/v1/files/{file_id}/complete")).raise_for_status()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(poll)
            answer = (await self.http.get(f"/v1/files/{file_id}")).json()["data"]
            if answer["status"] == "READY":
                ready = datetime.fromisoformat(answer["updatedAt"])
                return (ready - started).total_seconds()
            if answer["status"] == "REJECTED":
                raise RuntimeError(f"{file_id} rejected: {answer['reason']}")
        raise RuntimeError(f"{file_id} not READY in {DEADLINE_SECONDS}s")

    async def burst(self, ids: list[str], poll: float = 1.0) -> list[float]:
        """Complete every file at once, then wait for all; each duration from its
        complete request to its READY write. Polling is slow and bounded (10 at a time),
        so the bench's own load stays out of what it measures."""
        started: dict[str, datetime] = {}

        async def complete(file_id: str) -> None:
            started[file_id] = datetime.now(UTC)
            (await self.http.post(f"/v1/files/{file_id}/complete")).raise_for_status()

        await asyncio.gather(*(complete(file_id) for file_id in ids))
        ready: dict[str, float] = {}
        limit = asyncio.Semaphore(10)

        async def check(file_id: str) -> None:
            async with limit:
                answer = (await self.http.get(f"/v1/files/{file_id}")).json()["data"]
            if answer["status"] == "REJECTED":
                raise RuntimeError(f"{file_id} rejected: {answer['reason']}")
            if answer["status"] == "READY":
                at = datetime.fromisoformat(answer["updatedAt"])
                ready[file_id] = (at - started[file_id]).total_seconds()

        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(ready) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids) - len(ready)} files not READY in time")
            await asyncio.sleep(poll)
            await asyncio.gather(*(check(i) for i in ids if i not in ready))
        return [ready[file_id] for file_id in ids]

    async def close(self) -> None:
        await self.http.aclose()
        await self.s3.aclose()


async def run(runs: int, burst: int, database_url: str | None) -> dict[str, Any]:
    sandbox = S3Sandbox()
    s3_process = subprocess.Popen(  # noqa: S603
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stack = Stack(database_url, persist_temporal=False)
    stack.env.update(sandbox.environment())
    stack.env["FILE_MAX_BYTES"] = str(64 * 1024 * 1024)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "database": "sqlite" if database_url is None else database_url.split(":", 1)[0],
    }
    try:
        sandbox.wait_ready()
        key = stack.start()
        temporal = await Client.connect(stack.env["TEMPORAL_ADDRESS"])
        await register_search_attributes(temporal)
        api = Api(f"http://127.0.0.1:{stack.api_port}", key)
        worker = _worker_pid(stack)
        try:
            big = photo(4000, 3000)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "photo.jpg"
                path.write_bytes(big)
                bare = [bare_script(path, Path(tmp)) for _ in range(runs + 1)][1:]
            results["rss_before_bytes"] = _proc(worker, "VmRSS")
            relay: list[float] = []
            for index in range(runs + 1):
                file_id = await api.uploaded(big, f"photo-{index}.jpg", f"big-{index}")
                seconds = await api.complete_until_ready(file_id)
                if index:
                    relay.append(seconds)
                if index == runs:
                    results["twelve_mp_steps"] = await _steps(temporal, file_id)
            results["twelve_mp"] = {
                "bytes": len(big),
                "bare_script_seconds": [round(s, 3) for s in bare],
                "relay_seconds": [round(s, 3) for s in relay],
                "bare_median": round(statistics.median(bare), 3),
                "relay_median": round(statistics.median(relay), 3),
                "ratio": round(statistics.median(relay) / statistics.median(bare), 3),
            }
            results["peak_rss_bytes_after_12mp"] = _peak_rss(worker)

            small = [photo(800, 600, seed) for seed in range(burst)]
            ids = await asyncio.gather(
                *(api.uploaded(data, f"s{i}.jpg", f"burst-{i}") for i, data in enumerate(small))
            )
            everyone = {"s3-sandbox": s3_process.pid} | {
                _name(list(p.args)): p.pid  # type: ignore[arg-type]
                for p in stack.processes
            }
            before = {name: _cpu_seconds(pid) for name, pid in everyone.items()}
            cpu_before = _cpu_seconds(worker, with_children=True)
            started = time.perf_counter()
            durations = await api.burst(ids)
            # Throughput until the last READY write; CPU over the whole measured span.
            elapsed = time.perf_counter() - started
            wall = max(durations)
            cpu = _cpu_seconds(worker, with_children=True) - cpu_before
            results["burst_cpu_seconds_by_process"] = {
                name: round(_cpu_seconds(pid) - before[name], 2) for name, pid in everyone.items()
            } | {"worker+children": round(cpu, 2)}
            results["burst"] = {
                "files": burst,
                "seconds": round(wall, 3),
                "files_per_second": round(burst / wall, 1),
                "slowest_seconds": round(max(durations), 3),
                "median_seconds": round(statistics.median(durations), 3),
                "worker_cpu_seconds": round(cpu, 2),
                "worker_cpu_busy": round(cpu / elapsed / (os.cpu_count() or 1), 2),
            }
            slowest = ids[max(range(len(ids)), key=lambda i: durations[i])]
            results["burst_slowest_steps"] = await _steps(temporal, slowest)
            results["peak_rss_bytes_after_burst"] = _peak_rss(worker)
        finally:
            await api.close()
    finally:
        stack.stop()
        s3_process.terminate()
        s3_process.wait(timeout=10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--database-url", help="Relay's database (default: a temporary SQLite)")
    args = parser.parse_args()
    results = asyncio.run(run(args.runs, args.burst, args.database_url))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"files-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
