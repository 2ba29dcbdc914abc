"""Issue 15's fault run: 1,000 events for one endpoint while the worker is SIGKILLed twice
(a replacement started within 2 s each time) and the Temporal dev server is killed once
and restarted on its database file.

Proves: every event arrives; a delivery whose attempt the killed worker never recorded is
sent again once, promptly (its 60 s lease never runs out here); every delivery lists every
attempt its count gave out; the recovery is logged as warnings and counted in the worker's
metrics. The resume times are printed (`-s`) and reported in docs/benchmarks.md; the bound
asserted here is generous because this 2-core machine is shared and loaded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.settings import Settings
from relay.webhooks.contracts import dispatcher_workflow_id
from relay.webhooks.outbox import LOST_ATTEMPT_ERROR
from relay.webhooks.publish import publish_event
from relay.webhooks.signing import message_id
from tests.conftest import eventually, free_port, settings_env, task_queue
from tests.support.api import DevServer
from tests.webhooks.conftest import Receiver
from tests.webhooks.helpers import A, D, create_endpoint

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EVENTS = 1000
# Slow enough that the run spans every fault with requests in flight at each kill.
RECEIVER_DELAY = 0.15
CONCURRENCY = 16
# Generous: the target is 5 s on a quiet machine (docs/benchmarks.md has the figures).
RESUME_BOUND_SECONDS = 15.0


class WorkerProcess:
    """`relay worker` as a process of its own, its log kept in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.metrics_port = settings.worker_metrics_port
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "worker"],
            env=settings_env(settings),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def polling_since(self) -> float | None:
        """When the worker logged that it polls (epoch seconds), once it has."""
        for line in self.log_text().splitlines():
            if "worker polling task queue" in line:
                return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
        return None


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def metric(text: str, name: str) -> float:
    """The value of a counter in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_worker_and_temporal_killed_mid_delivery_lose_nothing_and_resend_once(
    dev_server: DevServer,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    base = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "temporal_address": dev_server.address,
        "temporal_task_queue": task_queue(),
        "webhook_allowed_networks": "127.0.0.0/8",
        "webhook_concurrency": CONCURRENCY,
        "webhook_batch_size": CONCURRENCY,
        "webhook_timeout": "5s",
        # The default 60 s lease: recovery must not wait for it.
    }

    def start_worker() -> WorkerProcess:
        settings = make_settings(**base, worker_metrics_port=free_port())
        worker = WorkerProcess(settings, tmp_path / f"worker{len(workers)}.log")
        workers.append(worker)
        return worker

    receiver.delay["fault"] = RECEIVER_DELAY
    create_endpoint(engine, keyring, receiver.url("fault"), ["fault.*"])
    for n in range(EVENTS):
        publish_event(engine, "fault.created", {"n": n})
    with engine.connect() as connection:
        ids = {message_id(row.id) for row in connection.execute(select(D.c.id))}
    assert len(ids) == EVENTS

    async def kill_and_replace(worker: WorkerProcess) -> tuple[WorkerProcess, dict[str, float]]:
        worker.kill()
        killed = time.time()
        await asyncio.sleep(1.0)  # `relay dev` restarts a dead worker within two seconds
        replacement = start_worker()
        polling = await eventually(replacement.polling_since, timeout=60, interval=0.05)
        assert isinstance(polling, float)
        await eventually(
            lambda: any(r.at > killed + 0.05 for r in receiver.received), timeout=60, interval=0.05
        )
        resumed = min(r.at for r in receiver.received if r.at > killed + 0.05)
        return replacement, {
            "kill_to_resume": resumed - killed,
            "polling_to_resume": resumed - polling,
        }

    first = start_worker()
    await eventually(lambda: len(receiver.received) >= 150, timeout=60, interval=0.05)
    second, after_first = await kill_and_replace(first)
    await eventually(lambda: len(receiver.received) >= 400, timeout=60, interval=0.05)
    second_metrics = second.metrics()
    third, after_second = await kill_and_replace(second)
    await eventually(lambda: len(receiver.received) >= 600, timeout=60, interval=0.05)

    assert dev_server.process is not None
    dev_server.process.kill()  # Temporal dies too, and is back within two seconds
    dev_server.process.wait()
    dev_server.process = None
    temporal_killed = time.time()
    await asyncio.sleep(1.0)
    dev_server.start()

    await eventually(lambda: receiver.ids() >= ids, timeout=120, interval=0.25)
    done = time.time()

    def undelivered() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(D).where(D.c.status != "DELIVERED")
                ).scalar_one()
            )

    await eventually(lambda: undelivered() == 0, timeout=60)

    sends = Counter(r.headers["webhook-id"] for r in receiver.at("fault"))
    assert set(sends) == ids  # nothing unknown was sent
    assert max(sends.values()) <= 2, "a delivery was sent again more than once"
    duplicates = sum(n - 1 for n in sends.values())
    assert duplicates > 0, "no delivery was in flight at a kill; nothing was proven"

    with engine.connect() as connection:
        counts = {row.id: row.attempts for row in connection.execute(select(D.c.id, D.c.attempts))}
        listed: dict[object, list[int]] = {}
        lost = 0
        for row in connection.execute(select(A.c.delivery_id, A.c.attempt, A.c.error)):
            listed.setdefault(row.delivery_id, []).append(row.attempt)
            lost += row.error == LOST_ATTEMPT_ERROR
    for delivery_id, count in counts.items():
        assert sorted(listed[delivery_id]) == list(range(1, count + 1)), delivery_id
    # Every re-send follows an attempt listed with an unknown outcome (or a recorded one,
    # when the "lost" worker was alive after all, as across the Temporal restart).
    assert sum(counts.values()) - len(counts) >= duplicates

    for figures in (after_first, after_second):
        assert figures["polling_to_resume"] <= RESUME_BOUND_SECONDS, figures

    assert metric(second_metrics, "relay_webhook_pump_heartbeat_lost") >= 1
    assert metric(second_metrics, "relay_webhook_leases_reclaimed") >= 1
    assert metric(second_metrics, "relay_webhook_deliveries_resent") >= 1
    log = second.log_text()
    assert "lost its heartbeat" in log and "reclaimed" in log
    assert "whsec_" not in log and '"n":' not in log  # no secrets, no payloads

    print(
        f"\nfault run ({engine.dialect.name}): {EVENTS} events, "
        f"kill 1: resumed {after_first['kill_to_resume']:.1f}s after the kill, "
        f"{after_first['polling_to_resume']:.1f}s after the replacement polled; "
        f"kill 2: {after_second['kill_to_resume']:.1f}s / "
        f"{after_second['polling_to_resume']:.1f}s; "
        f"all delivered {done - temporal_killed:.1f}s after the Temporal kill; "
        f"re-sent {duplicates}, lost attempts listed {lost}, "
        f"max attempts {max(counts.values())}"
    )
    late = sum(w.log_text().count("webhook pump heartbeat") for w in workers)
    takeovers = third.log_text().count("reclaimed")
    gap = metric(third.metrics(), "relay_webhook_pump_heartbeat_gap_seconds")
    print(
        f"late pump heartbeats logged {late}; take-overs on the last worker {takeovers}; "
        f"longest heartbeat gap of its pump {gap:.2f}s"
    )
    third.kill()
    client = await dev_server.connect(keyring)
    await client.get_workflow_handle(
        dispatcher_workflow_id(base["temporal_task_queue"])
    ).terminate()
