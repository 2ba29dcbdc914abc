"""What Relay's own sandbox servers share: running a Starlette app on a thread or a port,
and sending their provider callbacks with retries without a sleeping thread per callback.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from relay.errors import ConfigError

logger = logging.getLogger(__name__)

READY_SECONDS = 30
DELIVERY_DELAYS: tuple[float, ...] = (0.0, 0.5, 2.0)
DELIVERY_TIMEOUT_SECONDS = 5.0
DELIVERY_THREADS = 4
# What the HTML preview may do: show itself and inline styles and images; nothing else.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
    "form-action 'none'; frame-ancestors 'self'"
)


class Scheduler:
    """Runs callables after a delay on a few threads. Waiting holds no thread: a bulk send's
    thousands of pending callbacks wait in a heap, not in sleeping threads."""

    def __init__(self, threads: int, name: str) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._closed = False
        self._timer = threading.Thread(target=self._run, name=f"{name}-timer", daemon=True)
        self._timer.start()

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), action))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._closed:
                    return
                _, _, action = heapq.heappop(self._heap)
            try:
                self._pool.submit(self._safely, action)
            except RuntimeError:  # shut down meanwhile
                return

    @staticmethod
    def _safely(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            logger.exception("a sandbox callback failed")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Delivery:
    """One callback POST to one URL and how it went."""

    url: str
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    response_status: int | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "responseStatus": self.response_status,
            "error": self.error,
        }


class Poster:
    """Sends the sandboxes' callbacks: each POST is tried after each of `delays` until it
    gets a 2xx, on a Scheduler; `done` runs once it is delivered or given up."""

    def __init__(
        self,
        name: str,
        delays: tuple[float, ...] = DELIVERY_DELAYS,
        threads: int = DELIVERY_THREADS,
    ) -> None:
        self.scheduler = Scheduler(threads, name)
        self.delays = delays or (0.0,)
        self._http = httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS)
        self._lock = threading.Lock()
        self._name = name

    def post(
        self,
        delivery: Delivery,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
        data: dict[str, str] | None = None,
        done: Callable[[], None] | None = None,
        now: bool = False,
    ) -> None:
        """`now`: the first attempt runs in the caller's thread before this returns (later
        ones on the scheduler), for a notice that must land before the caller answers."""

        def attempt(number: int) -> None:
            with self._lock:
                delivery.attempts += 1
            status: int | None = None
            error: str | None = None
            try:
                response = self._http.post(
                    delivery.url, headers=headers, content=content, data=data
                )
            except httpx.HTTPError as exc:
                ok, error = False, type(exc).__name__
            else:
                ok, status = response.is_success, response.status_code
                error = None if ok else f"HTTP {status}"
            with self._lock:
                delivery.response_status, delivery.error = status, error
                if ok:
                    delivery.status = "delivered"
                elif number + 1 >= len(self.delays):
                    delivery.status = "failed"
            if not ok and number + 1 < len(self.delays):
                self.scheduler.call_later(self.delays[number + 1], lambda: attempt(number + 1))
                return
            if not ok:
                logger.warning("%s: a callback to %s was not accepted", self._name, delivery.url)
            if done is not None:
                done()

        if now:
            attempt(0)
        else:
            self.scheduler.call_later(self.delays[0], lambda: attempt(0))

    def close(self) -> None:
        self.scheduler.close()
        self._http.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, what: str, timeout: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} did not open port {port} in {timeout}s")
        time.sleep(0.1)


class AppServer:
    """An ASGI app served by uvicorn in a daemon thread on (host, port); port 0 binds a free
    one, read back from `.port`. The sandboxes' `run_in_thread` share it."""

    def __init__(
        self, app: Any, host: str, port: int, name: str, on_stop: Callable[[], None]
    ) -> None:
        self._socket = socket.socket()
        self._socket.bind((host, port))
        self.port = int(self._socket.getsockname()[1])
        self._name = name
        self._on_stop = on_stop
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + READY_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ConfigError(f"the {self._name} sandbox did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()
        self._on_stop()
