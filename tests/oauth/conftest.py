"""OAuth test fixtures: real authorization servers on loopback, and a Relay stack
configured to use them (catalog entries through PROVIDERS_FILE, client credentials
through the settings' .env file).

- `auth_server(**knobs)` starts the authlib-built provider of `tests/oauth/provider.py`
  (PKCE required, rotation, invalid_grant on demand, RFC 7009 revocation, counters).
- `oidc_mock(token_max_age)` starts oidc-provider-mock (authorize form, code and refresh
  grants, userinfo, /users/{sub}/revoke-tokens).
- `oauth_settings(providers)` writes PROVIDERS_FILE and the client credentials.
- `oauth_stack(settings)` runs the API (uvicorn) and a worker on the dev server, with
  PUBLIC_BASE_URL pointing at the API so the providers redirect to its callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from oidc_provider_mock import run_server_in_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.oauth import OAuthActivities
from api.app import create_app
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.models.oauth import Integration, IntegrationSyncLog
from relay.models.webhooks import WebhookEvent
from relay.oauth.catalog import load_catalog
from relay.oauth.contracts import AuthorizationCallback, AuthorizationOutcome, IntegrationInput
from relay.oauth.flow import consume_state, create_authorization
from relay.settings import Settings
from relay.worker_context import WorkerContext
from tests.conftest import ServerThread, Stack, task_queue
from tests.oauth.provider import CLIENT_ID, CLIENT_SECRET, AuthServer
from worker import build_worker
from workflows.oauth import IntegrationWorkflow

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

PROVIDER = "testauth"  # the authlib-built provider's catalog key
MOCK = "mockoidc"  # oidc-provider-mock's catalog key
APP_REDIRECT = "http://localhost:3000/integrations/done"


@pytest.fixture
def auth_server() -> Iterator[Callable[..., AuthServer]]:
    with ExitStack() as stack:

        def start(**knobs: Any) -> AuthServer:
            return stack.enter_context(AuthServer(**knobs))

        yield start


@pytest.fixture
def oidc_mock() -> Iterator[Callable[..., str]]:
    with ExitStack() as stack:

        def start(token_max_age: timedelta = timedelta(hours=1)) -> str:
            server = stack.enter_context(run_server_in_thread(access_token_max_age=token_max_age))
            return f"http://localhost:{server.server_port}"

        yield start


def mock_entry(url: str, **overrides: Any) -> dict[str, Any]:
    entry = {
        "display_name": "OIDC mock",
        "auth_mode": "OAUTH2",
        "authorization_url": f"{url}/oauth2/authorize",
        "token_url": f"{url}/oauth2/token",
        "userinfo_url": f"{url}/userinfo",
        "account_name_field": "email",
        "default_scopes": ["openid", "profile", "email"],
        "pkce": True,
        # Its refresh grant accepts client_secret_basic only.
        "token_request_auth_method": "basic",
        "token_expiration_buffer": 300,
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def oauth_settings(
    make_settings: Callable[..., Settings], tmp_path: Path, engine: Engine
) -> Callable[..., Settings]:
    def build(providers: dict[str, dict[str, Any]], **overrides: Any) -> Settings:
        providers_file = tmp_path / "providers.yaml"
        providers_file.write_text(yaml.safe_dump(providers))
        env_file = tmp_path / "oauth.env"
        env_file.write_text(
            "".join(
                f"{key.upper()}_CLIENT_ID={CLIENT_ID}\n{key.upper()}_CLIENT_SECRET={CLIENT_SECRET}\n"
                for key in providers
            )
        )
        values: dict[str, Any] = {
            "providers_file": providers_file,
            "_env_file": env_file,
            "database_url": engine.url.render_as_string(hide_password=False),
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def oauth_stack(
    temporal_env: WorkflowEnvironment, engine: Engine, keyring: Keyring
) -> Callable[[Settings], AbstractAsyncContextManager[Stack]]:
    @asynccontextmanager
    async def run(settings: Settings) -> AsyncIterator[Stack]:
        client = temporal_env.client
        settings.temporal_address = client.service_client.config.target_host
        settings.temporal_task_queue = task_queue()
        _, raw_key = create_key(engine, f"oauth-{uuid.uuid4().hex[:8]}", ["admin"])
        context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
        worker = build_worker(context)
        app = create_app(settings, engine=engine, keyring=keyring)
        server = ServerThread(app)
        # Providers send the browser to PUBLIC_BASE_URL's callback: this API.
        settings.public_base_url = server.url
        async with worker:
            with server:
                yield Stack(settings, engine, keyring, client, server.url, raw_key, context)
            for close in context.closers:
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    return run


async def authorize(authorization_url: str, *, sub: str | None = None) -> str:
    """Play the user at the provider; returns where it sends the browser (Relay's callback)."""
    async with httpx.AsyncClient(timeout=30) as browser:
        if sub is not None:  # oidc-provider-mock shows a form
            response = await browser.post(authorization_url, data={"sub": sub})
        else:
            response = await browser.get(authorization_url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def connect(
    stack: Stack,
    provider: str,
    *,
    user_id: str = "user-1",
    sub: str | None = None,
    **body: Any,
) -> tuple[str, dict[str, str]]:
    """initiate → provider → callback; returns (integration id, the app's redirect query)."""
    async with stack.http() as http, stack.http(authenticated=False) as browser:
        started = await http.post(
            "/v1/integrations/oauth/initiate",
            json={"userId": user_id, "provider": provider, "redirectUri": APP_REDIRECT, **body},
        )
        assert started.status_code == 201, started.text
        data = started.json()["data"]
        back_to_relay = await authorize(data["authorizationUrl"], sub=sub)
        assert back_to_relay.startswith(stack.api_url)
        landed = await browser.get(back_to_relay)
        assert landed.status_code == 302, landed.text
        location = landed.headers["location"]
        assert location.startswith(APP_REDIRECT)
        return data["integrationId"], query_of(location)


# --- workflow-level helpers (no API): the time-skipping tests ------------------------------


@dataclass
class Connection:
    integration_id: uuid.UUID
    handle: WorkflowHandle[Any, Any]
    outcome: AuthorizationOutcome | None
    authorization_url: str


@dataclass
class OAuthWorker:
    queue: str
    handles: list[WorkflowHandle[Any, Any]]


@asynccontextmanager
async def oauth_worker(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, keyring: Keyring
) -> AsyncIterator[OAuthWorker]:
    """A worker with the integration workflow and the real OAuth activities.

    The workflows it ran are terminated on exit: the time-skipping server is shared by
    the session and does not skip time while a workflow without a worker has work due.
    """
    running = OAuthWorker(task_queue(), [])
    async with httpx.AsyncClient(timeout=30) as http:
        activities = OAuthActivities(settings=settings, engine=engine, keyring=keyring, http=http)
        async with Worker(
            env.client,
            task_queue=running.queue,
            workflows=[IntegrationWorkflow],
            activities=activities.activities(),
        ):
            try:
                yield running
            finally:
                for handle in running.handles:
                    with contextlib.suppress(RPCError):
                        await env.client.get_workflow_handle(handle.id).terminate("test over")


async def begin_connection(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    keyring: Keyring,
    worker: OAuthWorker,
    provider: str,
    *,
    history_limit: int | None = None,
    callback: bool = True,
) -> Connection:
    """What the initiate route does, then the user at the provider, then the callback."""
    entry = load_catalog(settings.providers_file).require(provider)
    pending = create_authorization(
        engine,
        keyring,
        entry,
        client_id=CLIENT_ID,
        user_id="user-1",
        organization_id=None,
        redirect_uri=APP_REDIRECT,
        scopes=entry.default_scopes,
        connection_config={},
        metadata={},
        callback="http://127.0.0.1:9/v1/integrations/oauth/callback/" + provider,
    )
    integration_id = pending.integration.id
    params = IntegrationInput(str(integration_id), "user-1", provider)
    if history_limit:
        params.history_limit = history_limit
    # No callback_deadline: the time-skipping server's clock runs ahead of the wall clock.
    handle = await env.client.start_workflow(
        IntegrationWorkflow.run,
        params,
        id=f"integration-{integration_id}",
        task_queue=worker.queue,
    )
    worker.handles.append(handle)
    outcome = None
    if callback:
        query = query_of(await authorize(pending.authorization_url))
        consumed = consume_state(
            engine, keyring, provider=provider, state=query["state"], code=query["code"], error=None
        )
        assert consumed is not None
        outcome = await handle.execute_update(
            IntegrationWorkflow.complete_authorization,
            AuthorizationCallback(str(consumed.state_id)),
        )
    return Connection(integration_id, handle, outcome, pending.authorization_url)


def integration_row(engine: Engine, integration_id: uuid.UUID | str) -> Integration:
    with Session(engine) as session:
        row = session.get(Integration, uuid.UUID(str(integration_id)))
    assert row is not None
    return row


def events_of(engine: Engine, integration_id: uuid.UUID | str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(WebhookEvent).order_by(col(WebhookEvent.created_at))).all()
    return [row.type for row in rows if row.data.get("integrationId") == str(integration_id)]


def sync_logs(engine: Engine, integration_id: uuid.UUID | str) -> list[IntegrationSyncLog]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(IntegrationSyncLog)
                .where(col(IntegrationSyncLog.integration_id) == uuid.UUID(str(integration_id)))
                .order_by(col(IntegrationSyncLog.started_at))
            ).all()
        )


def database_text(engine: Engine) -> str:
    """Every value of every table, as text: to search for secrets in the clear."""
    from relay.models import metadata

    chunks = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(table.select()):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)
