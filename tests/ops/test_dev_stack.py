"""`relay dev` end to end, as `make dev` runs it: real processes on free ports, a temp DATA_DIR.

Proves the issue's done-when for the local stack: ready (and the Temporal UI served)
in time; /ready turns 503 while the Temporal server is down and back to 200 when the
supervisor has restarted it, with the API and worker untouched; a full stop leaves no
process behind; runs survive a full restart and are finished by the new worker; and
TEMPORAL_ADDRESS means no dev server at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from relay import search_attributes
from relay.crypto import Keyring
from relay.settings import Settings
from relay.temporal import connect
from tests.conftest import eventually, free_port

pytestmark = pytest.mark.e2e

# The bound for `make dev` on this machine.
READY_WITHIN_SECONDS = 120
USER_ID = "user-e2e"
STOP_WITHIN_SECONDS = 60


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below `pid`."""
    result: dict[int, str] = {}
    queue = _children(pid)
    while queue:
        child = queue.pop()
        try:
            result[child] = (
                Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            ).decode()
        except OSError:
            continue
        queue += _children(child)
    return result


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (each stack's unique DATA_DIR)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class DevStack:
    """One `relay dev` configuration; started and stopped as an operator would."""

    directory: Path
    keyring_spec: str
    temporal_address: str | None = None
    api_port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def env(self) -> dict[str, str]:
        fields = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k not in fields}
        env.update(
            API_PORT=str(self.api_port),
            TEMPORAL_PORT=str(self.temporal_port),
            TEMPORAL_UI_PORT=str(self.ui_port),
            DATA_DIR=str(self.data_dir),
            ENCRYPTION_KEYS=self.keyring_spec,
            LOG_LEVEL="WARNING",
            # An OAuth client, so the API can start a connection (nothing calls GitHub).
            GITHUB_CLIENT_ID="e2e-client",
            GITHUB_CLIENT_SECRET="e2e-secret",  # noqa: S106
        )
        if self.temporal_address:
            env["TEMPORAL_ADDRESS"] = self.temporal_address
        return env

    def settings(self) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            temporal_address=self.temporal_address or f"127.0.0.1:{self.temporal_port}",
            encryption_keys=self.keyring_spec,  # type: ignore[arg-type]
        )

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.directory.glob("dev-*.log"))
        )

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        output = (self.directory / f"dev-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "dev"],
            cwd=self.directory,
            env=self.env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_WITHIN_SECONDS)
        finally:
            self.process = None

    def relay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay.cli", *args],
            cwd=self.directory,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        async def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return (await http.get(f"{self.api}/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=READY_WITHIN_SECONDS, interval=0.25)
        # The supervisor prints its banner once it has seen the API's port open.
        await eventually(lambda: "relay is running" in self.log().split("relay: stopped")[-1])

    def children(self) -> dict[str, int]:
        """name -> pid of the supervisor's children (temporal, worker, api)."""
        assert self.process is not None
        named = {}
        for pid, command in descendants(self.process.pid).items():
            if "start-dev" in command:
                named["temporal"] = pid
            elif "relay.cli worker" in command:
                named["worker"] = pid
            elif "relay.cli api" in command:
                named["api"] = pid
        return named


@pytest.fixture
def dev_stacks(tmp_path: Path, keyring_spec: str) -> Iterator[list[DevStack]]:
    stacks: list[DevStack] = []
    yield stacks
    for stack in stacks:
        if stack.process is not None and stack.process.poll() is None:
            stack.process.kill()  # its children follow (PR_SET_PDEATHSIG)
            stack.process.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def assert_envelope_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "UNAUTHORIZED"


async def listed_runs(http: httpx.AsyncClient, stack: DevStack, key: str, **params: str) -> dict:
    response = await http.get(
        f"{stack.api}/v1/runs",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    return {run["workflowId"]: run for run in response.json()["data"]}


async def test_relay_dev_runs_recovers_stops_cleanly_and_keeps_runs(
    tmp_path: Path, keyring_spec: str, dev_stacks: list[DevStack], http: httpx.AsyncClient
) -> None:
    stack = DevStack(tmp_path, keyring_spec)
    dev_stacks.append(stack)

    # --- start: ready, the UI served with Relay's codec endpoint, URLs printed ----------
    started = time.monotonic()
    stack.start()
    await stack.wait_ready(http)
    ui = await http.get(stack.ui)
    assert ui.status_code == 200
    print(f"relay dev ready and UI served in {time.monotonic() - started:.1f}s")
    ui_settings = (await http.get(f"{stack.ui}/api/v1/settings")).json()
    assert ui_settings["Codec"]["Endpoint"] == f"http://localhost:{stack.api_port}/codec"
    # The UI sends the codec session's cookie with its decode calls (relay/dev_ui.py).
    assert ui_settings["Codec"]["IncludeCredentials"] is True
    banner = stack.log()
    assert f"http://localhost:{stack.api_port}/docs" in banner
    assert f"http://localhost:{stack.ui_port}" in banner
    assert "relay keys create" in banner  # no API key yet
    assert (stack.data_dir / "temporal.db").is_file()
    assert (stack.data_dir / "relay.db").is_file()

    client = await connect(stack.settings(), Keyring.parse(keyring_spec))
    registered = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert {key.name for key in search_attributes.ALL} <= set(registered.custom_attributes)

    # --- API keys: none or revoked → 401 with the envelope --------------------------------
    created = stack.relay("keys", "create", "e2e")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert_envelope_401(await http.get(f"{stack.api}/v1/runs"))
    throwaway = stack.relay("keys", "create", "revoked").stdout.strip().splitlines()[-1]
    assert stack.relay("keys", "revoke", "revoked").returncode == 0
    assert_envelope_401(
        await http.get(f"{stack.api}/v1/runs", headers={"Authorization": f"Bearer {throwaway}"})
    )

    # --- a run started through Relay's API: an OAuth connection awaiting its callback ----
    auth = {"Authorization": f"Bearer {key}"}
    initiated = await http.post(
        f"{stack.api}/v1/integrations/oauth/initiate",
        headers=auth,
        json={"userId": USER_ID, "provider": "github", "redirectUri": "http://localhost:3000/done"},
    )
    assert initiated.status_code == 201, initiated.text
    integration_id = initiated.json()["data"]["integrationId"]
    run_id = f"integration-{integration_id}"

    async def listed() -> dict | None:
        runs = await listed_runs(http, stack, key, userId=USER_ID)
        return runs if run_id in runs else None

    before = await eventually(listed, timeout=30)
    assert before[run_id]["status"] == "Running"
    assert before[run_id]["searchAttributes"]["RelayIntegrationId"] == integration_id
    dispatcher_before = await listed_runs(http, stack, key, workflowType="WebhookDispatchWorkflow")

    # --- the Temporal server dies: 503, then 200 once the supervisor restarted it -------
    children = stack.children()
    assert set(children) == {"temporal", "worker", "api"}
    os.kill(children["temporal"], signal.SIGKILL)

    async def ready_status() -> int:
        try:
            return (await http.get(f"{stack.api}/ready", timeout=5)).status_code
        except httpx.TransportError:
            return 0

    async def down() -> httpx.Response | None:
        response = await http.get(f"{stack.api}/ready", timeout=5)
        return response if response.status_code == 503 else None

    outage = await eventually(down, timeout=30, interval=0.05)
    assert outage.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
    assert outage.json()["error"]["details"] == {"database": "ok", "temporal": "down"}

    async def back() -> bool:
        return await ready_status() == 200

    await eventually(back, timeout=60, interval=0.25)
    after_outage = stack.children()
    assert after_outage["temporal"] != children["temporal"]
    assert after_outage["worker"] == children["worker"]
    assert after_outage["api"] == children["api"]
    assert "temporal exited" in stack.log()

    # --- a full stop leaves nothing behind --------------------------------------------------
    tree = descendants(stack.process.pid)  # type: ignore[union-attr]
    assert stack.stop() == 0
    assert "relay: stopped" in stack.log()
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert processes_with(f"DATA_DIR={stack.data_dir}") == []

    # --- start again: the runs are still there, and the new worker finishes ours --------
    stack.start()
    await stack.wait_ready(http)
    after = await listed_runs(http, stack, key, userId=USER_ID)
    assert after[run_id]["runId"] == before[run_id]["runId"]
    assert after[run_id]["status"] == "Running"
    # The worker found its dispatcher running and left it alone.
    dispatcher_after = await listed_runs(http, stack, key, workflowType="WebhookDispatchWorkflow")
    assert (
        dispatcher_after["webhook-dispatch"]["runId"]
        == dispatcher_before["webhook-dispatch"]["runId"]
    )

    disconnected = await http.delete(f"{stack.api}/v1/integrations/{integration_id}", headers=auth)
    assert disconnected.status_code == 200, disconnected.text

    async def finished() -> dict | None:
        response = await http.get(f"{stack.api}/v1/runs/{run_id}", headers=auth)
        data = response.json()["data"]
        return data if data["status"] == "Completed" else None

    run = await eventually(finished, timeout=60, interval=0.5)
    assert run["runId"] == before[run_id]["runId"]
    assert run["state"]["status"] == "DISCONNECTED"

    tree = descendants(stack.process.pid)  # type: ignore[union-attr]
    assert stack.stop(signal.SIGINT) == 0
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert processes_with(f"DATA_DIR={stack.data_dir}") == []
    assert "Traceback" not in stack.log()


async def test_relay_dev_with_temporal_address_starts_no_dev_server(
    tmp_path: Path,
    keyring_spec: str,
    dev_stacks: list[DevStack],
    http: httpx.AsyncClient,
    temporal_env: WorkflowEnvironment,
) -> None:
    target = temporal_env.client.service_client.config.target_host
    stack = DevStack(tmp_path, keyring_spec, temporal_address=target)
    dev_stacks.append(stack)
    stack.start()
    await stack.wait_ready(http)

    assert set(stack.children()) == {"worker", "api"}
    assert f"Temporal     {target}" in stack.log()
    assert not (stack.data_dir / "temporal.db").exists()
    tree = descendants(stack.process.pid)  # type: ignore[union-attr]
    assert stack.stop() == 0
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()]


async def test_relay_dev_refuses_a_port_in_use(
    tmp_path: Path, keyring_spec: str, dev_stacks: list[DevStack]
) -> None:
    import socket

    stack = DevStack(tmp_path, keyring_spec)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stack.api_port))
        busy.listen()
        result = stack.relay("dev")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"relay: port {stack.api_port} (API_PORT) is already in use; set API_PORT to another port"
    ]
    assert not (stack.data_dir / "temporal.db").exists()


async def test_a_killed_supervisor_takes_its_children_along(
    tmp_path: Path, keyring_spec: str, dev_stacks: list[DevStack], http: httpx.AsyncClient
) -> None:
    stack = DevStack(tmp_path, keyring_spec)
    dev_stacks.append(stack)
    stack.start()
    await stack.wait_ready(http)
    tree = descendants(stack.process.pid)  # type: ignore[union-attr]
    assert {"temporal", "worker", "api"} <= set(stack.children())

    # SIGKILL gives the supervisor no chance to clean up: PR_SET_PDEATHSIG does it.
    assert stack.stop(signal.SIGKILL) == -signal.SIGKILL

    def gone() -> bool:
        return not [pid for pid in tree if Path(f"/proc/{pid}").exists()]

    await eventually(gone, timeout=STOP_WITHIN_SECONDS)
    assert processes_with(f"DATA_DIR={stack.data_dir}") == []
