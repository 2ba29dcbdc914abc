"""Instagram's and Facebook's long-lived tokens, through Relay's real flow against the OAuth
providers sandbox (relay/sandbox/oauth_providers.py): the code's short-lived token is
traded at connect (ig_exchange_token / fb_exchange_token), Instagram's is kept alive with
ig_refresh_token by the connection's workflow, Facebook's ends NEEDS_REAUTH at expiry,
and a refused exchange fails the connection with nothing stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.oauth import OAuthActivities
from relay.crypto import Keyring
from relay.models.oauth import IntegrationCredential
from relay.oauth.catalog import load_catalog
from relay.oauth.contracts import (
    AuthorizationCallback,
    IntegrationInput,
    IntegrationRef,
    IntegrationStatus,
)
from relay.oauth.flow import consume_state, create_authorization
from relay.oauth.tokens import TokenStore
from relay.sandbox.oauth_providers import (
    LONG_LIVED_SECONDS,
    SANDBOX_CLIENT_SECRET,
    OAuthProvidersSandbox,
    OAuthProvidersServer,
    client_id_for,
)
from relay.settings import Settings
from tests.conftest import Stack
from tests.oauth.conftest import APP_REDIRECT, events_of, integration_row, oauth_worker
from tests.oauth.test_api import _plaintext_of_history
from workflows.oauth import IntegrationWorkflow

pytestmark = pytest.mark.slow

StackFactory = Callable[[Settings], AbstractAsyncContextManager[Stack]]
SIXTY_DAYS = timedelta(seconds=LONG_LIVED_SECONDS)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[OAuthProvidersServer]:
    # Instagram's 24-hour minimum is the catalog's (Relay's own check); the sandbox's is
    # on the wall clock, which the time-skipping server does not move.
    box = OAuthProvidersSandbox(
        port=0, providers_file=tmp_path / "providers.yaml", refresh_min_age_seconds=0
    )
    with box.run_in_thread() as running:
        yield running


@pytest.fixture
def sandbox_settings(
    sandbox: OAuthProvidersServer,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    engine: Engine,
) -> Callable[..., Settings]:
    def build(edit: Callable[[dict[str, Any]], None] | None = None) -> Settings:
        """Settings pointing Relay at the sandbox; `edit` changes its PROVIDERS_FILE."""
        env = sandbox.sandbox.environment()
        providers_file = Path(env.pop("PROVIDERS_FILE"))
        if edit is not None:
            overlay = yaml.safe_load(providers_file.read_text())
            edit(overlay)
            providers_file.write_text(yaml.safe_dump(overlay))
        env_file = tmp_path / "sandbox.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return make_settings(
            providers_file=providers_file,
            _env_file=env_file,
            database_url=engine.url.render_as_string(hide_password=False),
        )

    return build


async def approve(authorization_url: str) -> str:
    """The user approves at the sandbox's page; returns where it sends the browser."""
    parts = urlsplit(authorization_url)
    form = dict(parse_qsl(parts.query)) | {"decision": "approve"}
    async with httpx.AsyncClient(timeout=30) as browser:
        answer = await browser.post(parts._replace(query="").geturl(), data=form)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def connect(stack: Stack, provider: str) -> tuple[str, dict[str, str]]:
    """initiate → the sandbox's approval → Relay's callback; (integration id, app query)."""
    async with stack.http() as http, stack.http(authenticated=False) as browser:
        started = await http.post(
            "/v1/integrations/oauth/initiate",
            json={"userId": "user-1", "provider": provider, "redirectUri": APP_REDIRECT},
        )
        assert started.status_code == 201, started.text
        data = started.json()["data"]
        landed = await browser.get(await approve(data["authorizationUrl"]))
        assert landed.status_code == 302, landed.text
        return data["integrationId"], dict(parse_qsl(urlsplit(landed.headers["location"]).query))


def long_lived_tokens(sandbox: OAuthProvidersServer, provider: str) -> list[dict[str, Any]]:
    return [t for t in sandbox.state.tokens() if t["provider"] == provider and t["longLived"]]


def stored_access_token(engine: Engine, keyring: Keyring, integration_id: str) -> str | None:
    tokens = TokenStore(engine, keyring).read(uuid.UUID(integration_id))
    return tokens.access_token if tokens else None


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_instagram_connects_with_its_long_lived_token(
    sandbox: OAuthProvidersServer,
    sandbox_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    async with oauth_stack(sandbox_settings()) as stack:
        integration_id, back = await connect(stack, "instagram")
        async with stack.http() as http:
            integration = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")
            # Younger than Instagram's 24 hours: Relay keeps the token rather than be refused.
            forced = await http.post(f"/v1/integrations/{integration_id}/refresh")
            after = await http.get(f"/v1/integrations/{integration_id}/credentials")
        history = await _plaintext_of_history(
            stack.client, f"integration-{integration_id}", keyring
        )

    assert back["status"] == "success"
    assert integration["status"] == "CONNECTED"
    assert integration["name"] == "Sandbox Instagram User"
    assert credentials.status_code == 200, credentials.text
    token = credentials.json()["data"]
    assert token["accessToken"].startswith("sbx-instagram-ll-")
    assert token.get("refreshToken") is None
    lifetime = parse_time(token["expiresAt"]) - datetime.now(UTC)
    assert SIXTY_DAYS - timedelta(minutes=5) < lifetime <= SIXTY_DAYS
    assert forced.status_code == 200, forced.text
    assert forced.json()["data"]["refreshed"] is False
    assert after.json()["data"]["accessToken"] == token["accessToken"]
    assert len(long_lived_tokens(sandbox, "instagram")) == 1
    assert events_of(engine, integration_id) == ["integration.connected"]
    # The exchange ran in activities: neither token nor the secret is in the history.
    assert integration_id.encode() in history
    for secret in (token["accessToken"], SANDBOX_CLIENT_SECRET):
        assert secret.encode() not in history


async def test_the_workflow_refreshes_instagrams_token_with_ig_refresh_token(
    time_skipping_env: WorkflowEnvironment,
    sandbox: OAuthProvidersServer,
    sandbox_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    settings = sandbox_settings()
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        integration_id, handle = await begin(time_skipping_env, settings, engine, keyring, worker)
        connected = await handle.query(IntegrationWorkflow.state)
        first = stored_access_token(engine, keyring, integration_id)
        # The daily refresh: the token is then 24 hours old, as Instagram requires.
        await time_skipping_env.sleep(timedelta(days=1, minutes=1))
        state = await handle.query(IntegrationWorkflow.state)
        second = stored_access_token(engine, keyring, integration_id)

    assert connected.status == IntegrationStatus.CONNECTED and connected.has_refresh_token
    assert first is not None and first.startswith("sbx-instagram-ll-")
    assert second is not None and second.startswith("sbx-instagram-ll-") and second != first
    assert state.status == IntegrationStatus.CONNECTED and state.refresh_count >= 1
    assert state.expires_at is not None and connected.expires_at is not None
    assert state.expires_at > connected.expires_at
    assert len(long_lived_tokens(sandbox, "instagram")) >= 2


async def test_facebook_gets_a_long_lived_token_and_needs_reauth_when_it_expires(
    time_skipping_env: WorkflowEnvironment,
    sandbox: OAuthProvidersServer,
    sandbox_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    settings = sandbox_settings()
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        integration_id, handle = await begin(
            time_skipping_env, settings, engine, keyring, worker, "facebook"
        )
        connected = await handle.query(IntegrationWorkflow.state)
        token = stored_access_token(engine, keyring, integration_id)
        await time_skipping_env.sleep(SIXTY_DAYS + timedelta(minutes=1))
        expired = await handle.query(IntegrationWorkflow.state)

    assert token is not None and token.startswith("sbx-facebook-ll-")
    assert connected.status == IntegrationStatus.CONNECTED
    assert not connected.has_refresh_token
    assert connected.expires_at is not None and connected.next_refresh_at == connected.expires_at
    assert expired.status == IntegrationStatus.NEEDS_REAUTH
    assert expired.last_error is not None and "reconnect" in expired.last_error
    row = integration_row(engine, integration_id)
    assert row.status == IntegrationStatus.NEEDS_REAUTH
    assert events_of(engine, integration_id) == ["integration.connected", "integration.error"]


async def test_a_refused_exchange_fails_the_connection_with_no_token_stored(
    sandbox: OAuthProvidersServer,
    sandbox_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    def wrong_grant(overlay: dict[str, Any]) -> None:
        overlay["instagram"]["exchange"]["grant_type"] = "ig_no_such_grant"

    settings = sandbox_settings(wrong_grant)
    async with oauth_stack(settings) as stack:
        integration_id, back = await connect(stack, "instagram")
        async with stack.http() as http:
            integration = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")

    assert back["status"] == "error"
    assert integration["status"] == "DISCONNECTED"
    assert "long-lived token exchange" in integration["lastError"]
    assert "unsupported_grant_type" in integration["lastError"]
    assert credentials.status_code != 200
    with Session(engine) as session:
        assert session.get(IntegrationCredential, uuid.UUID(integration_id)) is None
    assert events_of(engine, integration_id) == ["integration.error"]
    assert long_lived_tokens(sandbox, "instagram") == []


async def begin(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    keyring: Keyring,
    worker: Any,
    provider: str = "instagram",
) -> tuple[str, Any]:
    """What the initiate route does, the approval at the sandbox, then the callback."""
    entry = load_catalog(settings.providers_file).require(provider)
    pending = create_authorization(
        engine,
        keyring,
        entry,
        client_id=client_id_for(provider),
        user_id="user-1",
        organization_id=None,
        redirect_uri=APP_REDIRECT,
        scopes=entry.default_scopes,
        connection_config={},
        metadata={},
        callback="http://127.0.0.1:9/v1/integrations/oauth/callback/" + provider,
    )
    integration_id = str(pending.integration.id)
    handle = await env.client.start_workflow(
        IntegrationWorkflow.run,
        IntegrationInput(integration_id, "user-1", provider),
        id=f"integration-{integration_id}",
        task_queue=worker.queue,
    )
    worker.handles.append(handle)
    query = dict(parse_qsl(urlsplit(await approve(pending.authorization_url)).query))
    consumed = consume_state(
        engine, keyring, provider=provider, state=query["state"], code=query["code"], error=None
    )
    assert consumed is not None
    outcome = await handle.execute_update(
        IntegrationWorkflow.complete_authorization, AuthorizationCallback(str(consumed.state_id))
    )
    assert outcome.connected, outcome.message
    return integration_id, handle


async def test_a_retried_exchange_keeps_the_long_lived_token_it_stored(
    sandbox: OAuthProvidersServer,
    sandbox_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    # Temporal retries the exchange when its first attempt's answer is lost after it stored
    # the long-lived token: the retry must not send that token to be exchanged again
    # (Instagram refuses it, which would fail the connection).
    async with oauth_stack(sandbox_settings()) as stack:
        integration_id, back = await connect(stack, "instagram")
        stored = stored_access_token(engine, keyring, integration_id)
        activities = OAuthActivities.from_context(stack.context)
        info = await ActivityEnvironment().run(
            activities.exchange_long_lived_token, IntegrationRef(integration_id)
        )

    assert back["status"] == "success"
    assert stored is not None and stored.startswith("sbx-instagram-ll-")
    assert stored_access_token(engine, keyring, integration_id) == stored
    assert len(long_lived_tokens(sandbox, "instagram")) == 1
    assert info.expires_at is not None and info.has_refresh_token
