"""The Stripe sandbox: localstripe (PyPI), a stateful fake Stripe server, run as Relay's
extension of it, `relay.sandbox.stripe_server`.

`relay dev` runs it when STRIPE_SECRET_KEY is unset in development (SANDBOX=auto) on a
free port, hands the worker and the API STRIPE_SECRET_KEY / STRIPE_API_BASE /
STRIPE_WEBHOOK_SECRET pointing at it, and registers Relay's `/webhooks/stripe` with it
(localstripe's `/_config/webhooks/{id}` route) under a generated webhook secret: it then
sends its events signed like Stripe's, and Relay verifies them as it would Stripe's.
The tests start it the same way (`StripeSandbox.command()`).

localstripe speaks the legacy Plans API (Plans stand in for Prices), ignores
Idempotency-Key and, on its own, lacks `pause_collection`, `/v1/subscriptions/{id}/resume`,
renewals and `customer.subscription.updated` events (TESTING.md). Relay's extension adds
those: `pause_collection` on subscriptions (honoured by renewals), `/resume` for a `paused`
subscription, `customer.subscription.updated` with `previous_attributes` whenever a request
changes a subscription, `invoice.paid`, and the sandbox controls the `/sandbox` page calls
(`POST /_sandbox/subscriptions/{id}/renew {"outcome": "paid"|"failed"}`,
`POST /_sandbox/subscriptions/{id}/trial_will_end`, `GET /_sandbox/events`). It keeps its
state in memory only (localstripe pickles it into one /tmp file that every localstripe on
the machine writes), so the sandbox's Stripe state lasts as long as one `relay dev`.
"""

from __future__ import annotations

import importlib.util
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

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


def require_localstripe() -> None:
    """The server extends the localstripe package, which only the dev extra installs."""
    if importlib.util.find_spec("localstripe") is None:
        raise ConfigError(
            "localstripe is not installed (pip install -e '.[dev]'); set STRIPE_SECRET_KEY "
            "or SANDBOX=off"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StripeSandbox:
    """One sandbox server (localstripe extended): its command, the settings that point
    Relay at it, and the registration of Relay's webhook route with it."""

    port: int = field(default_factory=_free_port)
    webhook_secret: str = field(default_factory=lambda: f"whsec_{secrets.token_urlsafe(32)}")
    api_key: str = SANDBOX_API_KEY

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """Relay's server (localstripe extended), always from scratch."""
        require_localstripe()
        return [sys.executable, "-m", "relay.sandbox.stripe_server", "--port", str(self.port)]

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
