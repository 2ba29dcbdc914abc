"""The Stripe sandbox: localstripe (PyPI), a stateful fake Stripe server.

`relay dev` runs it when STRIPE_SECRET_KEY is unset in development (SANDBOX=auto) on a
free port, hands the worker and the API STRIPE_SECRET_KEY / STRIPE_API_BASE /
STRIPE_WEBHOOK_SECRET pointing at it, and registers Relay's `/webhooks/stripe` with it
(its `/_config/webhooks/{id}` route) under a generated webhook secret: localstripe then
sends its events signed like Stripe's, and Relay verifies them as it would Stripe's.
The tests start it the same way with `--from-scratch`.

localstripe speaks the legacy Plans API (Plans stand in for Prices), ignores
Idempotency-Key, never renews, and sends `customer.subscription.created/deleted` but
never `.updated` (TESTING.md). Without `--from-scratch` it loads its state from a fixed
/tmp/localstripe.pickle that every localstripe on the machine writes, and dies on start
when another one left it half-written; so Relay always starts it from scratch and the
sandbox's Stripe state lasts as long as one `relay dev`.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from relay.errors import ConfigError
from relay.settings import Settings

WEBHOOK_ID = "relay"
# localstripe accepts any key of this shape.
SANDBOX_API_KEY = "sk_test_relay_sandbox"
READY_SECONDS = 30


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no Stripe key: the sandbox stands in for Stripe."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.stripe_secret_key is None
    )


def localstripe_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "localstripe"
    found = str(candidate) if candidate.exists() else shutil.which("localstripe")
    if not found:
        raise ConfigError(
            "localstripe is not installed (pip install -e '.[dev]'); set STRIPE_SECRET_KEY "
            "or SANDBOX=off"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StripeSandbox:
    """One localstripe server: its command, the settings that point Relay at it, and the
    registration of Relay's webhook route with it."""

    port: int = field(default_factory=_free_port)
    webhook_secret: str = field(default_factory=lambda: f"whsec_{secrets.token_urlsafe(32)}")
    api_key: str = SANDBOX_API_KEY

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [localstripe_binary(), "--port", str(self.port), "--from-scratch"]

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's Stripe code here."""
        return {
            "STRIPE_SECRET_KEY": self.api_key,
            "STRIPE_API_BASE": self.api_base,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
        }

    def ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ConfigError(f"localstripe did not open port {self.port} in {timeout}s")
            time.sleep(0.1)

    def register_webhook(self, url: str, events: list[str] | None = None) -> None:
        """Have localstripe send every event (or `events`) to `url`, signed with our secret."""
        body: dict[str, object] = {"url": url, "secret": self.webhook_secret}
        if events is not None:
            body["events"] = events
        response = httpx.post(f"{self.api_base}/_config/webhooks/{WEBHOOK_ID}", json=body)
        response.raise_for_status()

    def register_when_ready(self, url: str) -> None:
        """In the background (the supervisor restarts localstripe, which forgets its
        webhooks): wait for the port, then register."""

        def run() -> None:
            try:
                self.wait_ready()
                self.register_webhook(url)
            except (ConfigError, httpx.HTTPError) as exc:
                print(f"relay: could not register the Stripe sandbox webhook: {exc}", flush=True)

        threading.Thread(target=run, daemon=True).start()


def plan(settings: Settings) -> StripeSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real Stripe, or none)."""
    return StripeSandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: StripeSandbox | None) -> str:
    """The banner's line for Stripe."""
    if sandbox is not None:
        return f"sandboxed (localstripe at {sandbox.api_base})"
    if settings.stripe_secret_key is not None:
        return f"real ({settings.stripe_api_base or 'api.stripe.com'})"
    return "not configured (set STRIPE_SECRET_KEY, or SANDBOX=auto in development)"
