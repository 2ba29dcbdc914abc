"""Calendar fixtures: the OAuth providers sandbox, the Google Calendar sandbox and the Zoom
sandbox in threads of this process, and a stack (API + worker on the Temporal dev server)
pointed at them.

- `calendar_stack` (function-scoped) yields a running `CalendarStack`; `calendar_stack_factory`
  yields the factory behind it (`async with calendar_stack_factory(**settings) as stack`) for
  tests that need other settings.
- `await stack.connect_google(user_id)` connects a `google_calendar` integration through
  Relay's real OAuth flow (initiate → the sandbox's approval page → Relay's callback) and
  returns its id (`stack.connect(provider, user_id)` any catalog provider, `zoom` too). The
  OAuth sandbox tells the Google and Zoom sandboxes (token sinks) which access tokens it
  issued, so they accept exactly those as their users'.
- `stack.oauth.state`, `stack.google.state`, `stack.zoom.state`: what the providers received.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.oauth.tokens import TokenStore
from relay.sandbox.google_calendar import GoogleCalendarSandbox, GoogleCalendarServer
from relay.sandbox.oauth_providers import OAuthProvidersSandbox, OAuthProvidersServer
from relay.sandbox.zoom import ZoomSandbox, ZoomServer
from relay.settings import Settings
from tests.conftest import Stack, free_port, serving, task_queue

GOOGLE = "google_calendar"
APP_REDIRECT = "http://localhost:3000/integrations/done"


class _Forms(HTMLParser):
    """The forms of the OAuth sandbox's approval page, with their fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "data": {}})
        elif tag in ("input", "button") and self.forms and "name" in values:
            self.forms[-1]["data"][values["name"]] = values.get("value", "")


async def approve(authorization_url: str, decision: str = "approve") -> str:
    """Play the user on the sandbox's approval page; returns where it sends the browser."""
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorization_url)
        assert page.status_code == 200, page.text
        parser = _Forms()
        parser.feed(page.text)
        (form,) = [f for f in parser.forms if f["data"].get("decision") == decision]
        answer = await browser.post(urljoin(authorization_url, form["action"]), data=form["data"])
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


@dataclass
class CalendarStack(Stack):
    oauth: OAuthProvidersServer | None = None
    google: GoogleCalendarServer | None = None
    zoom: ZoomServer | None = None

    @property
    def oauth_server(self) -> OAuthProvidersServer:
        assert self.oauth is not None
        return self.oauth

    @property
    def google_server(self) -> GoogleCalendarServer:
        assert self.google is not None
        return self.google

    async def connect(self, provider: str, user_id: str = "user-1", **body: Any) -> str:
        """Connect `provider` for `user_id` through Relay's OAuth flow; the integration id."""
        async with self.http() as http, self.http(authenticated=False) as browser:
            started = await http.post(
                "/v1/integrations/oauth/initiate",
                json={"userId": user_id, "provider": provider, "redirectUri": APP_REDIRECT} | body,
            )
            assert started.status_code == 201, started.text
            data = started.json()["data"]
            back_to_relay = await approve(data["authorizationUrl"])
            assert back_to_relay.startswith(self.api_url), back_to_relay
            landed = await browser.get(back_to_relay)
            assert landed.status_code == 302, landed.text
            assert "status=success" in landed.headers["location"], landed.headers["location"]
            integration = await http.get(f"/v1/integrations/{data['integrationId']}")
            assert integration.json()["data"]["status"] == "CONNECTED", integration.text
        return str(data["integrationId"])

    async def connect_google(self, user_id: str = "user-1") -> str:
        return await self.connect(GOOGLE, user_id)

    def issued_tokens(self, provider: str = GOOGLE, kind: str = "access") -> list[dict[str, Any]]:
        """What the OAuth sandbox issued (masked), newest first."""
        return [
            token
            for token in self.oauth_server.state.tokens()
            if token["provider"] == provider and token["kind"] == kind
        ]

    def google_events(self) -> list[dict[str, Any]]:
        """Every event the Google sandbox holds: [{calendarId, event, updates}]."""
        return self.google_server.state.events()

    def google_fault(self, count: int = 1, status: int = 503, retry_after: int = 1) -> None:
        """The next `count` Google API calls answer `status` (429 with Retry-After)."""
        response = httpx.post(
            f"{self.google_server.api_base}/_sandbox/faults",
            json={"count": count, "status": status, "retryAfter": retry_after},
        )
        response.raise_for_status()

    def access_token(self, integration_id: str) -> str:
        """The integration's current access token, as Relay stores it."""
        tokens = TokenStore(self.engine, self.keyring).read(uuid.UUID(integration_id))
        assert tokens is not None
        return tokens.access_token

    def expire_at_zoom(self, integration_id: str) -> None:
        """Have the Zoom sandbox refuse the integration's current access token (a 401 next)
        while the OAuth sandbox still honours its refresh token."""
        assert self.zoom is not None
        self.zoom.state.revoke_user_token(self.access_token(integration_id))

    def expire_at_google(self, integration_id: str) -> None:
        """Have the Google sandbox refuse the integration's current access token (a 401 next)
        while the OAuth sandbox still honours its refresh token."""
        self.google_server.state.revoke_token(self.access_token(integration_id))


def _settings_from(environment: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in environment.items()}


@pytest_asyncio.fixture(loop_scope="session")
async def calendar_stack_factory(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> AsyncIterator[Callable[..., contextlib.AbstractAsyncContextManager[CalendarStack]]]:
    """A factory: `async with calendar_stack_factory(zoom=False, **settings) as stack`."""

    @contextlib.asynccontextmanager
    async def build(*, zoom: bool = True, **overrides: Any) -> AsyncIterator[CalendarStack]:
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        tag = uuid.uuid4().hex[:6]
        with contextlib.ExitStack() as sandboxes:
            oauth = sandboxes.enter_context(
                OAuthProvidersSandbox(
                    port=0, providers_file=tmp_path / f"providers-{tag}.yaml"
                ).run_in_thread()
            )
            google = sandboxes.enter_context(GoogleCalendarSandbox(port=0).run_in_thread())
            oauth.sandbox.register_token_sink(google.sandbox.token_sink)
            zoom_server = None
            environment = dict(google.sandbox.environment())
            if zoom:
                zoom_server = sandboxes.enter_context(
                    ZoomSandbox(port=0, webhook_url=f"{api_url}/webhooks/zoom").run_in_thread()
                )
                environment |= zoom_server.sandbox.environment()
                oauth.sandbox.register_token_sink(zoom_server.sandbox.token_sink)
            # Client ids and secrets are read from .env files (Settings.oauth_clients); the
            # Zoom sandbox's server-to-server ZOOM_CLIENT_ID goes in as a field, so the
            # catalog's `zoom` OAuth client (this file) and server-to-server Zoom coexist.
            env_file = tmp_path / f"calendar-{tag}.env"
            env_file.write_text(
                "".join(f"{name}={value}\n" for name, value in oauth.sandbox.environment().items())
            )
            client = temporal_env.client
            settings = make_settings(
                _env_file=env_file,
                database_url=engine.url.render_as_string(hide_password=False),
                temporal_address=client.service_client.config.target_host,
                temporal_task_queue=task_queue(),
                public_base_url=api_url,
                webhook_allowed_networks="127.0.0.0/8",
                **(_settings_from(environment) | overrides),
            )
            async with serving(settings, engine, keyring, client, port=port) as (
                url,
                raw_key,
                context,
            ):
                yield CalendarStack(
                    settings,
                    engine,
                    keyring,
                    client,
                    url,
                    raw_key,
                    context,
                    oauth=oauth,
                    google=google,
                    zoom=zoom_server,
                )

    yield build


@pytest_asyncio.fixture(loop_scope="session")
async def calendar_stack(
    calendar_stack_factory: Callable[..., contextlib.AbstractAsyncContextManager[CalendarStack]],
) -> AsyncIterator[CalendarStack]:
    """A running stack with every calendar sandbox (see the module docstring)."""
    async with calendar_stack_factory() as stack:
        yield stack
