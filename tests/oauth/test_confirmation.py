"""Connection fixation (RFC 9700 section 4.7), attacked and defended against the running
stack: the real API (uvicorn), a worker on the Temporal dev server, the authlib-built
authorization server on loopback.

The attack: user A of an application starts a connection for their own userId and sends
the authorization URL to user B; B approves at the provider, and without a defence B's
account ends up connected under A's id. With `requireConfirmation` the callback hands
the application a one-time code and nothing is served until the application, having
checked that its own session is A's, confirms with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from relay.crypto import Keyring
from relay.models.oauth import IntegrationCredential, OAuthState
from relay.settings import Settings
from tests.conftest import Stack
from tests.oauth.conftest import (
    APP_REDIRECT,
    PROVIDER,
    authorize,
    database_text,
    events_of,
    integration_row,
    query_of,
)
from tests.oauth.provider import AuthServer
from tests.oauth.test_api import _plaintext_of_history
from workflows.oauth import IntegrationWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

StackFactory = Callable[[Settings], AbstractAsyncContextManager[Stack]]


async def _start(stack: Stack, user_id: str, **body: Any) -> dict[str, Any]:
    """The application initiates a connection for its user `user_id`."""
    async with stack.http() as http:
        started = await http.post(
            "/v1/integrations/oauth/initiate",
            json={"userId": user_id, "provider": PROVIDER, "redirectUri": APP_REDIRECT, **body},
        )
    assert started.status_code == 201, started.text
    return started.json()["data"]  # type: ignore[no-any-return]


async def _approve(stack: Stack, server: AuthServer, authorization_url: str, user: str) -> str:
    """`user` opens the authorization URL, approves at the provider, and their browser
    follows the redirect through Relay's callback; returns where it lands at the app."""
    server.state.user = user
    back_to_relay = await authorize(authorization_url)
    async with stack.http(authenticated=False) as browser:
        landed = await browser.get(back_to_relay)
    assert landed.status_code == 302, landed.text
    location = landed.headers["location"]
    assert location.startswith(APP_REDIRECT)
    return location


def _state_row(engine: Engine, integration_id: str) -> OAuthState:
    with Session(engine) as session:
        return session.exec(
            select(OAuthState).where(col(OAuthState.integration_id) == uuid.UUID(integration_id))
        ).one()


def _credentials_row(engine: Engine, integration_id: str) -> IntegrationCredential | None:
    with Session(engine) as session:
        return session.get(IntegrationCredential, uuid.UUID(integration_id))


async def test_fixation_attack_leaves_the_initiator_without_credentials_and_expires(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()}, oauth_confirmation_window="10s")
    async with oauth_stack(settings) as stack:
        # A starts a connection for their own id and sends the URL to B, who approves.
        data = await _start(stack, "user-a", requireConfirmation=True)
        integration_id = data["integrationId"]
        assert data["requireConfirmation"] is True
        landed = query_of(await _approve(stack, server, data["authorizationUrl"], "bob"))
        code = landed["relay_confirmation"]
        # B's browser lands at the application, whose session is not A's: it never confirms.

        async with stack.http() as http:
            pending = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            refused = await http.get(f"/v1/integrations/{integration_id}/credentials")
            refresh = await http.post(f"/v1/integrations/{integration_id}/refresh")
        # The code was spent at the provider at once, B's tokens are stored...
        assert server.state.exchange_count == 1
        stored = _credentials_row(engine, integration_id)
        assert stored is not None
        # ...but A's application gets none of them.
        assert landed["status"] == "pending_confirmation"
        assert landed["integrationId"] == integration_id
        assert pending["status"] == "PENDING_CONFIRMATION" and pending["userId"] == "user-a"
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "CONFLICT"
        assert refused.json()["error"]["details"] == {"status": "PENDING_CONFIRMATION"}
        assert "accessToken" not in refused.text
        assert refresh.status_code == 409
        # The code is random (256 bits) and only its SHA-256 is stored.
        assert len(code) >= 43
        assert _state_row(engine, integration_id).confirmation_hash == (
            hashlib.sha256(code.encode()).hexdigest()
        )
        assert code not in database_text(engine)

        # The window closes: the workflow's timer revokes, wipes and expires it.
        handle = stack.client.get_workflow_handle_for(
            IntegrationWorkflow.run, f"integration-{integration_id}"
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)
        async with stack.http() as http:
            after = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            still_refused = await http.get(f"/v1/integrations/{integration_id}/credentials")
            late = await http.post(
                f"/v1/integrations/{integration_id}/confirm", json={"code": code}
            )
        decrypted = await _plaintext_of_history(stack.client, handle.id, keyring)

    assert result.status == "EXPIRED"
    assert after["status"] == "EXPIRED" and after["isActive"] is False
    assert "did not confirm" in after["lastError"]
    assert still_refused.status_code == 409
    # Even the right code is refused once the window has closed.
    assert late.status_code == 409 and late.json()["error"]["details"]["reason"] == "EXPIRED"
    # B's grant is revoked at the provider and nothing of it is left at Relay.
    tokens = server.state.tokens[0]
    assert ("refresh_token", tokens.refresh_token) in server.state.revoked
    assert ("access_token", tokens.access_token) in server.state.revoked
    assert _credentials_row(engine, integration_id) is None
    assert _state_row(engine, integration_id).confirmation_hash is None
    assert integration_row(engine, integration_id).provider_data == {}
    assert events_of(engine, integration_id) == ["integration.error"]  # never "connected"
    # The workflow never held the code, not even encrypted.
    assert code.encode() not in decrypted


async def test_the_application_confirms_with_the_code_once(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        data = await _start(stack, "user-a", requireConfirmation=True)
        integration_id = data["integrationId"]
        path = f"/v1/integrations/{integration_id}"
        # A approves their own account and comes back to the application in A's session.
        code = query_of(await _approve(stack, server, data["authorizationUrl"], "alice"))[
            "relay_confirmation"
        ]
        async with stack.http() as http:
            before = await http.get(f"{path}/credentials")
            wrong = await http.post(f"{path}/confirm", json={"code": "not-" + code})
            confirmed = await http.post(f"{path}/confirm", json={"code": code})
            credentials = await http.get(f"{path}/credentials")
            again = await http.post(f"{path}/confirm", json={"code": code})
            after = (await http.get(path)).json()["data"]

    assert before.status_code == 409
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "INVALID_CONFIRMATION_CODE"
    assert wrong.json()["error"]["details"] == {"attemptsLeft": 4}
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["data"]["status"] == "CONNECTED"
    assert confirmed.json()["data"]["name"] == "alice-login"
    assert credentials.status_code == 200, credentials.text
    assert credentials.json()["data"]["accessToken"] == server.state.tokens[-1].access_token
    # Single use: the same code again confirms nothing.
    assert again.status_code == 409
    assert again.json()["error"]["details"] == {
        "status": "CONNECTED",
        "reason": "ALREADY_CONFIRMED",
    }
    assert after["status"] == "CONNECTED" and after["connectedAt"]
    assert events_of(engine, integration_id) == ["integration.connected"]
    row = _state_row(engine, integration_id)
    assert row.confirmed_at is not None and row.confirmation_hash is None


async def test_five_wrong_codes_burn_the_confirmation(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        data = await _start(stack, "user-a", requireConfirmation=True)
        integration_id = data["integrationId"]
        path = f"/v1/integrations/{integration_id}"
        code = query_of(await _approve(stack, server, data["authorizationUrl"], "bob"))[
            "relay_confirmation"
        ]
        async with stack.http() as http:
            # Eight guesses at once: each is counted exactly once, the fifth burns it.
            guesses = await asyncio.gather(
                *(http.post(f"{path}/confirm", json={"code": f"guess-{i}"}) for i in range(8))
            )
            right = await http.post(f"{path}/confirm", json={"code": code})
            credentials = await http.get(f"{path}/credentials")
        handle = stack.client.get_workflow_handle_for(
            IntegrationWorkflow.run, f"integration-{integration_id}"
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)

    statuses = sorted(response.status_code for response in guesses)
    assert statuses == [400] * 4 + [429] * 4
    left = sorted(
        r.json()["error"]["details"]["attemptsLeft"] for r in guesses if r.status_code == 400
    )
    assert left == [1, 2, 3, 4]
    assert {r.json()["error"]["code"] for r in guesses if r.status_code == 429} == {
        "TOO_MANY_ATTEMPTS"
    }
    assert right.status_code == 429 and right.json()["error"]["code"] == "TOO_MANY_ATTEMPTS"
    assert credentials.status_code == 409
    # Burnt: ended at once rather than at the deadline, revoked and wiped.
    assert result.status == "DISCONNECTED"
    row = integration_row(engine, integration_id)
    assert row.status == "DISCONNECTED" and "too many wrong codes" in (row.last_error or "")
    assert _credentials_row(engine, integration_id) is None
    assert _state_row(engine, integration_id).confirmation_attempts == 5
    assert len(server.state.revoked) == 2
    assert events_of(engine, integration_id) == ["integration.error"]


async def test_without_confirmation_nothing_changes_and_the_setting_sets_the_default(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    server = auth_server()
    async with oauth_stack(oauth_settings({PROVIDER: server.catalog_entry()})) as stack:
        data = await _start(stack, "user-a")
        landed = query_of(await _approve(stack, server, data["authorizationUrl"], "alice"))
        async with stack.http() as http:
            path = f"/v1/integrations/{data['integrationId']}"
            credentials = await http.get(f"{path}/credentials")
            confirm = await http.post(f"{path}/confirm", json={"code": "anything"})
    assert data["requireConfirmation"] is False
    assert landed == {
        "status": "success",
        "integrationId": data["integrationId"],
        "provider": PROVIDER,
    }
    assert credentials.status_code == 200
    assert confirm.status_code == 409
    assert confirm.json()["error"]["details"]["reason"] == "NOT_REQUIRED"

    # OAUTH_REQUIRE_CONFIRMATION=true makes it the default; the request may still opt out.
    settings = oauth_settings({PROVIDER: server.catalog_entry()}, oauth_require_confirmation=True)
    async with oauth_stack(settings) as stack:
        by_default = await _start(stack, "user-a")
        opted_out = await _start(stack, "user-a", requireConfirmation=False)
        defaulted = query_of(await _approve(stack, server, by_default["authorizationUrl"], "a"))
        plain = query_of(await _approve(stack, server, opted_out["authorizationUrl"], "a"))
    assert by_default["requireConfirmation"] is True
    assert defaulted["status"] == "pending_confirmation" and defaulted["relay_confirmation"]
    assert plain["status"] == "success" and "relay_confirmation" not in plain
