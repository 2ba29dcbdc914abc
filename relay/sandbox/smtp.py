"""The SMTP sandbox: an aiosmtpd server that captures every mail in memory, and a small HTTP
interface over what it captured for the `/sandbox` page and the tests.

`relay dev` can run it when SMTP has no host in development (SANDBOX=auto), and the tests
run it in a thread (`SmtpSandbox(port=0, http_port=0).run_in_thread()`). Relay's SMTP path
reaches it as any SMTP server, by SMTP_HOST / SMTP_PORT with SMTP_TLS=false (plain SMTP on
loopback, no AUTH); SMTP_SANDBOX_URL names its HTTP interface for the page.

SMTP (aiosmtpd; SMTPUTF8 and 8BITMIME accepted, 10 MiB a message). Every accepted message is
parsed (headers, text and HTML parts, attachments by name) and kept. Magic recipients:

    reject@…     refused at RCPT TO with 550 5.1.1 (the mailbox does not exist)
    anyone else  accepted (250) and captured

HTTP (JSON, camelCase like Relay's own API):

    GET    /_sandbox/messages?limit=        {data: captured messages, newest first}
    GET    /_sandbox/messages/{id}          one message, with its raw source
    GET    /_sandbox/messages/{id}/html     the HTML part, served under a CSP that allows no
                                            script, no fetch and no form (a sandbox)
    DELETE /_sandbox/messages               forget everything captured
    POST   /_sandbox/faults                 {count}: the next `count` transactions are
                                            refused at MAIL FROM with 451 4.3.0 (transient)

State lives in memory for the life of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import importlib.util
import itertools
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import ConfigError
from relay.sandbox.server import PREVIEW_POLICY, free_port, port_open, wait_for_port
from relay.settings import Settings

if TYPE_CHECKING:
    # aiosmtpd comes with the dev and test extras only; nothing imports it until a server runs.
    from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger(__name__)

READY_SECONDS = 30
MESSAGES_LIMIT = 50
MAX_MESSAGES_LIMIT = 1000
DATA_SIZE_LIMIT = 10 * 1024 * 1024
HOSTNAME = "smtp.sandbox.local"
REJECTED_LOCAL_PART = "reject"


def _part(message: EmailMessage, kind: str) -> str | None:
    body = message.get_body(preferencelist=(kind,))
    if body is None:
        return None
    content = body.get_content()
    return content if isinstance(content, str) else None


@dataclass
class Captured:
    id: str
    received: float
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: str | None = None

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    def public(self, *, raw: bool = False) -> dict[str, Any]:
        message = self.parsed()
        attachments = [
            {
                "filename": part.get_filename(),
                "contentType": part.get_content_type(),
                "size": len(part.get_payload(decode=True) or b""),
            }
            for part in message.iter_attachments()
        ]
        shown: dict[str, Any] = {
            "id": self.id,
            "received": self.received,
            "mailFrom": self.mail_from,
            "rcptTos": list(self.rcpt_tos),
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "cc": str(message.get("Cc", "")),
            "replyTo": str(message.get("Reply-To", "")),
            "subject": str(message.get("Subject", "")),
            "messageId": str(message.get("Message-ID", "")),
            "headers": [[name, str(value)] for name, value in message.items()],
            "text": _part(message, "plain"),
            "html": _part(message, "html"),
            "attachments": attachments,
            "size": len(self.raw),
            "status": "captured",
        }
        if raw:
            shown["raw"] = self.raw.decode("utf-8", "replace")
        return shown


class SmtpCapture:
    """The captured mail, behind one lock (the SMTP server, the HTTP interface and a test
    read and write it at once); also aiosmtpd's handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Captured] = []
        self._ids = itertools.count(1)
        self._faults = 0

    # -- aiosmtpd's hooks -------------------------------------------------------------------

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self._lock:
            if self._faults > 0:
                self._faults -= 1
                return "451 4.3.0 Temporary failure, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.partition("@")[0].lower() == REJECTED_LOCAL_PART:
            return "550 5.1.1 Requested action not taken: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        with self._lock:
            captured = Captured(
                id=f"smtp-{next(self._ids)}",
                received=time.time(),
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                peer=peer,
            )
            self._messages.append(captured)
        return f"250 2.0.0 Ok: queued as {captured.id}"

    # -- queries ----------------------------------------------------------------------------

    def messages(self, limit: int = MAX_MESSAGES_LIMIT) -> list[dict[str, Any]]:
        """Captured messages, newest first, parsed."""
        with self._lock:
            newest = list(reversed(self._messages))[:limit]
        return [m.public() for m in newest]

    def message(self, message_id: str) -> Captured | None:
        with self._lock:
            return next((m for m in self._messages if m.id == message_id), None)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._faults = count


# --- HTTP ----------------------------------------------------------------------------------


def _capture(request: Request) -> SmtpCapture:
    capture: SmtpCapture = request.app.state.capture
    return capture


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status)


async def _messages(request: Request) -> Response:
    capture = _capture(request)
    if request.method == "DELETE":
        capture.clear()
        return Response(status_code=204)
    raw = request.query_params.get("limit", str(MESSAGES_LIMIT))
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_MESSAGES_LIMIT:
        return _error(400, f"limit must be between 1 and {MAX_MESSAGES_LIMIT}")
    return JSONResponse({"data": capture.messages(limit)})


async def _message(request: Request) -> Response:
    found = _capture(request).message(request.path_params["message_id"])
    if found is None:
        return _error(404, "no such message")
    return JSONResponse(found.public(raw=True))


async def _html(request: Request) -> Response:
    found = _capture(request).message(request.path_params["message_id"])
    html = _part(found.parsed(), "html") if found is not None else None
    if html is None:
        return Response("No HTML captured for this message.", 404, media_type="text/plain")
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": PREVIEW_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def _faults(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    count = body.get("count") if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return _error(400, "count must be a whole number")
    _capture(request).fail_next(count)
    return JSONResponse({"count": count})


def create_app(capture: SmtpCapture) -> Starlette:
    """The HTTP interface over `capture`."""
    routes = [
        Route("/_sandbox/messages", _messages, methods=["GET", "DELETE"]),
        Route("/_sandbox/messages/{message_id}", _message, methods=["GET"]),
        Route("/_sandbox/messages/{message_id}/html", _html, methods=["GET"]),
        Route("/_sandbox/faults", _faults, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.capture = capture
    return app


def require_aiosmtpd() -> None:
    if importlib.util.find_spec("aiosmtpd") is None:
        raise ConfigError(
            "aiosmtpd is not installed (pip install -e '.[dev]'); set SMTP_HOST or SANDBOX=off"
        )


def smtp_factory(capture: SmtpCapture) -> SMTP:
    from aiosmtpd.smtp import SMTP

    return SMTP(
        capture,
        hostname=HOSTNAME,
        data_size_limit=DATA_SIZE_LIMIT,
        enable_SMTPUTF8=True,
        decode_data=False,
    )


async def serve(
    capture: SmtpCapture,
    smtp_socket: socket.socket,
    http_socket: socket.socket,
    http_server: uvicorn.Server,
) -> None:
    """Both servers on this loop until `http_server.should_exit`."""
    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(lambda: smtp_factory(capture), sock=smtp_socket)
    try:
        await http_server.serve(sockets=[http_socket])
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no SMTP host: the sandbox captures Relay's mail."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.smtp_host is None
    )


def _bound(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class SmtpSandbox:
    """One SMTP sandbox: the SMTP port Relay sends to, the HTTP port the page reads, its
    command, and a way to run it in this process (tests; port 0 binds a free port)."""

    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The HTTP interface (SMTP_SANDBOX_URL)."""
        return f"http://{self.host}:{self.http_port}"

    def command(self) -> list[str]:
        require_aiosmtpd()
        return [
            sys.executable,
            "-m",
            "relay.sandbox.smtp",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--host",
            self.host,
        ]

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's SMTP path here."""
        return {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_TLS": "false",
            "SMTP_SANDBOX_URL": self.url,
        }

    def ready(self) -> bool:
        return port_open(self.host, self.port) and port_open(self.host, self.http_port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the SMTP sandbox", timeout)
        wait_for_port(self.host, self.http_port, "the SMTP sandbox's HTTP interface", timeout)

    def run_in_thread(self) -> SmtpServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return SmtpServer(self).start()


class SmtpServer:
    """Both servers on one event loop in a daemon thread; `capture` is there to inspect."""

    def __init__(self, sandbox: SmtpSandbox) -> None:
        require_aiosmtpd()
        self.sandbox = sandbox
        self.capture = SmtpCapture()
        self._smtp_socket = _bound(sandbox.host, sandbox.port)
        self._http_socket = _bound(sandbox.host, sandbox.http_port)
        sandbox.port = int(self._smtp_socket.getsockname()[1])
        sandbox.http_port = int(self._http_socket.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.capture), log_level="warning", lifespan="off", access_log=False
        )
        self._http = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(serve(self.capture, self._smtp_socket, self._http_socket, self._http))

    @property
    def url(self) -> str:
        return self.sandbox.url

    def start(self) -> SmtpServer:
        self._thread.start()
        deadline = time.monotonic() + READY_SECONDS
        while not self._http.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ConfigError("the SMTP sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._http.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._smtp_socket.close()
        self._http_socket.close()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> SmtpSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real server, or none)."""
    return SmtpSandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: SmtpSandbox | None) -> str:
    """The banner's line for SMTP."""
    if sandbox is not None:
        return f"sandboxed (capturing SMTP at {sandbox.host}:{sandbox.port}, mail at {sandbox.url})"
    if settings.smtp_host is not None:
        return f"real ({settings.smtp_host}:{settings.smtp_port or 25})"
    return "not configured (set SMTP_HOST, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.smtp", description="Relay's capturing SMTP sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="smtp-sandbox: %(message)s")
    capture = SmtpCapture()
    smtp_socket = _bound(args.host, args.port)
    http_socket = _bound(args.host, args.http_port)
    server = uvicorn.Server(uvicorn.Config(create_app(capture), log_level="info"))
    asyncio.run(serve(capture, smtp_socket, http_socket, server))


if __name__ == "__main__":
    main()
