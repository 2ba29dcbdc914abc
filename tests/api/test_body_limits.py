"""Request bodies are capped before anything reads, authenticates or parses them (api/limits.py).

The attacks run against `relay api` as a process of its own on loopback, so the resident
memory measured (`/proc/<pid>/status`) is the API server's alone: its peak while 50 MB
bodies stream in stays within a few MB of what it was before.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from starlette.types import Message

from api.limits import EVENT_ENVELOPE_HEADROOM, BodyLimit
from relay.settings import Settings
from tests.conftest import free_port, settings_env
from tests.support.api import bearer, closed_address, new_key

ATTACK_BYTES = 50 * 1024 * 1024
CHUNK = 64 * 1024
# How far above its baseline the server's peak resident memory may go during an attack.
MAX_GROWTH = 20 * 1024 * 1024
# The largest payload the Temporal server accepts by default (its blob-size error limit).
TEMPORAL_MAX_BLOB = 2 * 1024 * 1024


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and the other kB fields of /proc/<pid>/status, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return fields


class PeakRss:
    """The peak resident memory of a process while the block runs: its kernel high-water
    mark (VmHWM, reset on entry where /proc allows) and samples every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self.hwm_is_exact = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_status(self.pid)["VmRSS"])
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
            self.hwm_is_exact = True
        except OSError:
            pass
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        hwm = [_status(self.pid)["VmHWM"]] if self.hwm_is_exact else []
        return max([*self.samples, *hwm])


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    settings: Settings
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return _status(self.process.pid)["VmRSS"]

    def http(self, *, authenticated: bool = False) -> httpx.AsyncClient:
        headers = bearer(self.key) if authenticated else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def api_process(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[ApiProcess]:
    """`relay api` as a process of its own (Temporal unreachable: nothing here needs it)."""
    port = free_port()
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=closed_address(),
        api_host="127.0.0.1",
        api_port=port,
    )
    key = new_key(engine)
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "api"],
        env=settings_env(settings),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"relay api did not start:\n{log.name}")
            time.sleep(0.1)
        yield ApiProcess(process, settings, port, key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _stream(total: int) -> AsyncIterator[bytes]:
    """`total` bytes in chunks, as a generator: httpx sends it chunked, with no Content-Length."""
    chunk = b"x" * CHUNK
    for _ in range(total // CHUNK):
        yield chunk


def _assert_too_large(response: httpx.Response, cap: int) -> None:
    assert response.status_code == 413, response.text
    assert response.json() == {
        "success": False,
        "error": {
            "code": "PAYLOAD_TOO_LARGE",
            "message": f"the request body is over the {cap}-byte limit",
            "details": {"limitBytes": cap},
        },
    }


def _event_cap(settings: Settings) -> int:
    return settings.webhook_max_payload_bytes + EVENT_ENVELOPE_HEADROOM


def _payloads(data: bytes) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"binary/plain").decode()},
                "data": base64.b64encode(data).decode(),
            }
        ]
    }


async def _warm_up(api: ApiProcess) -> None:
    """Every code path the attacks take, once, so the baseline includes what they load."""
    async with api.http(authenticated=True) as http:
        accepted = await http.post("/v1/events", json={"type": "warm.up", "data": {}})
        assert accepted.status_code == 202, accepted.text
        encoded = await http.post("/codec/encode", json=_payloads(b"warm"))
        assert encoded.status_code == 200, encoded.text
    async with api.http() as http:
        for path, cap in (
            ("/v1/events", _event_cap(api.settings)),
            ("/codec/decode", api.settings.codec_max_body_bytes),
        ):
            _assert_too_large(await http.post(path, content=_stream(cap + 2 * CHUNK)), cap)


async def test_anonymous_50_mb_chunked_bodies_are_refused_in_flat_memory(
    api_process: ApiProcess,
) -> None:
    api = api_process
    await _warm_up(api)
    baseline = api.rss()
    with PeakRss(api.process.pid) as memory:
        async with api.http() as http:  # no API key
            for path, cap in (
                ("/v1/events", _event_cap(api.settings)),
                ("/codec/decode", api.settings.codec_max_body_bytes),
            ):
                response = await http.post(path, content=_stream(ATTACK_BYTES))
                assert response.request.headers["transfer-encoding"] == "chunked"
                assert "content-length" not in response.request.headers
                _assert_too_large(response, cap)
    growth = memory.peak - baseline
    print(f"\nRSS baseline {baseline / 2**20:.1f} MiB, peak growth {growth / 2**20:.2f} MiB")
    assert growth < MAX_GROWTH, f"the API grew {growth / 2**20:.1f} MiB"
    assert api.process.poll() is None


def _read_responses(sock: socket.socket, *, timeout: float = 15) -> tuple[list[int], bytes, bool]:
    """Read what the server answers: (statuses, raw bytes, whether it closed the connection).
    Stops at a close, or once a complete response is in and nothing more comes for a second."""
    sock.settimeout(1)
    received = b""
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if b"\r\n\r\n" in received:
                break
            continue
        except ConnectionResetError:
            closed = True
            break
        if not data:
            closed = True
            break
        received += data
    statuses = [
        int(line.split()[1])
        for line in received.split(b"\r\n")
        if line.startswith(b"HTTP/1.1 ") and len(line.split()) > 1
    ]
    return statuses, received, closed


def _json_body(raw: bytes) -> Any:
    _, _, body = raw.partition(b"\r\n\r\n")
    return json.loads(body)


async def test_a_content_length_over_the_cap_is_refused_before_the_body_is_read(
    api_process: ApiProcess,
) -> None:
    api = api_process
    cap = api.settings.codec_max_body_bytes
    for path, expected_cap in (("/codec/decode", cap), ("/v1/events", _event_cap(api.settings))):
        with socket.create_connection(("127.0.0.1", api.port), timeout=15) as sock:
            # Only the head: a server that waited for the declared 50 MB would never answer.
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                f"Content-Length: {ATTACK_BYTES}\r\n\r\n".encode()
            )
            statuses, raw, _ = _read_responses(sock)
        assert statuses == [413], raw[:300]
        assert _json_body(raw)["error"] == {
            "code": "PAYLOAD_TOO_LARGE",
            "message": f"the request body is over the {expected_cap}-byte limit",
            "details": {"limitBytes": expected_cap},
        }


async def test_a_lying_content_length_does_not_smuggle_a_big_body(
    api_process: ApiProcess,
) -> None:
    """A small Content-Length followed by 50 MB: the app gets the declared bytes only, the
    rest is refused as not HTTP and the connection closed, and memory stays flat."""
    api = api_process
    await _warm_up(api)
    baseline = api.rss()
    sent = 0
    with (
        PeakRss(api.process.pid) as memory,
        socket.create_connection(("127.0.0.1", api.port), timeout=15) as sock,
    ):
        sock.sendall(
            b"POST /codec/decode HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        chunk = b"x" * CHUNK
        try:
            while sent < ATTACK_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed the connection on us
            pass
        statuses, raw, closed = _read_responses(sock)
    growth = memory.peak - baseline
    print(
        f"\nlying Content-Length: {sent / 2**20:.1f} MiB sent before the server closed, "
        f"peak growth {growth / 2**20:.2f} MiB"
    )
    assert statuses, raw[:300]
    assert all(400 <= status < 500 for status in statuses), raw[:600]
    assert closed
    assert sent < ATTACK_BYTES
    assert growth < MAX_GROWTH, f"the API grew {growth / 2**20:.1f} MiB"
    assert api.process.poll() is None


async def test_bodies_within_the_caps_still_work(api_process: ApiProcess) -> None:
    api = api_process
    limit = api.settings.webhook_max_payload_bytes
    async with api.http(authenticated=True) as http:
        # An event just under WEBHOOK_MAX_PAYLOAD_BYTES is accepted.
        data = {"blob": "a" * (limit - 1024)}
        accepted = await http.post("/v1/events", json={"type": "order.created", "data": data})
        assert accepted.status_code == 202, accepted.text
        # Between the limit and the middleware's headroom, the route's own check answers.
        over = await http.post(
            "/v1/events", json={"type": "order.created", "data": {"blob": "a" * limit}}
        )
        assert over.status_code == 413
        assert over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert over.json()["error"]["message"] == f"the event is over {limit} bytes"

        # The largest payload Temporal accepts round-trips through the codec (base64 in
        # protobuf JSON: about 2.7 MiB each way, under CODEC_MAX_BODY_BYTES).
        blob = os.urandom(TEMPORAL_MAX_BLOB)
        request = json.dumps(_payloads(blob)).encode()
        assert len(request) < api.settings.codec_max_body_bytes
        encoded = await http.post(
            "/codec/encode", content=request, headers={"Content-Type": "application/json"}
        )
        assert encoded.status_code == 200, encoded.text[:300]
        assert len(encoded.content) > TEMPORAL_MAX_BLOB * 4 // 3
        decoded = await http.post("/codec/decode", json=encoded.json())
        assert decoded.status_code == 200, decoded.text[:300]
        assert base64.b64decode(decoded.json()["payloads"][0]["data"]) == blob

        # Over API_MAX_BODY_BYTES on any other route: 413 before the key or body is looked at.
        huge = await http.post(
            "/v1/webhooks", content=b"{" + b" " * api.settings.api_max_body_bytes
        )
        _assert_too_large(huge, api.settings.api_max_body_bytes)

    async with api.http() as http:
        # Without a key, a small body gets the usual 401.
        anonymous = await http.post("/v1/events", json={"type": "order.created", "data": {}})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"


async def test_bytes_past_a_lying_content_length_are_counted(
    make_settings: Callable[..., Settings],
) -> None:
    """uvicorn never hands an app more than Content-Length declares; should a server do so,
    the middleware counts what arrives, not what was declared, and the app never runs."""
    settings = make_settings(api_max_body_bytes=1000)
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3

    async def receive() -> Message:
        return chunks.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/runs",
        "headers": [(b"content-length", b"10")],
    }
    await BodyLimit(app, settings)(scope, receive, send)
    assert not called
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["details"] == {"limitBytes": 1000}
    assert len(chunks) == 1  # it stopped reading as soon as the count passed the cap
