"""IntegrationWorkflow on the time-skipping server, against the real authlib-built provider.

Hours and days of token lifetimes pass in seconds; every exchange, refresh and
revocation is a real HTTP request to the provider on loopback, and every token a real
row in the database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.oauth.catalog import load_catalog
from relay.oauth.contracts import (
    AuthorizationCallback,
    DisconnectRequest,
    IntegrationInput,
    RefreshRequest,
)
from relay.oauth.flow import Confirmation, confirm_connection, consume_state, create_authorization
from relay.oauth.tokens import TokenStore
from relay.settings import Settings
from tests.oauth.conftest import (
    APP_REDIRECT,
    PROVIDER,
    OAuthWorker,
    authorize,
    begin_connection,
    events_of,
    integration_row,
    oauth_worker,
    query_of,
    sync_logs,
)
from tests.oauth.provider import CLIENT_ID, AuthServer
from workflows.oauth import IntegrationWorkflow

pytestmark = pytest.mark.slow


async def test_scheduled_refresh_stores_each_rotated_refresh_token(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(rotate_refresh_tokens=True, expires_in=3600)
    settings = oauth_settings({PROVIDER: server.catalog_entry(token_expiration_buffer=300)})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        assert connection.outcome is not None and connection.outcome.connected
        assert server.state.pkce_verified == 1

        # Tokens live an hour and are replaced 5 minutes before: 6 refreshes in 6 hours.
        await time_skipping_env.sleep(timedelta(hours=6, minutes=1))
        state = await connection.handle.query(IntegrationWorkflow.state)

    assert state.status == "CONNECTED"
    assert server.state.refresh_count == state.refresh_count >= 6
    # Each refresh rotated the refresh token; reusing a revoked one would have killed the
    # grant (the provider revokes everything on reuse), so every refresh used the latest.
    stored = TokenStore(engine, keyring).read(connection.integration_id)
    assert stored is not None
    assert [stored.refresh_token] == server.state.live_refresh_tokens()
    assert stored.access_token == server.state.tokens[-1].access_token
    refreshes = [
        log for log in sync_logs(engine, connection.integration_id) if log.action == "token_refresh"
    ]
    assert len(refreshes) == state.refresh_count
    assert all(log.status == "COMPLETED" and log.meta["refreshTokenRotated"] for log in refreshes)
    assert events_of(engine, connection.integration_id) == ["integration.connected"]


async def test_refresh_keeps_the_old_refresh_token_when_none_is_returned(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(rotate_refresh_tokens=False, expires_in=3600)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        original = TokenStore(engine, keyring).read(connection.integration_id)
        await time_skipping_env.sleep(timedelta(hours=3, minutes=1))
        state = await connection.handle.query(IntegrationWorkflow.state)

    assert state.refresh_count >= 3 and state.status == "CONNECTED"
    stored = TokenStore(engine, keyring).read(connection.integration_id)
    assert original is not None and stored is not None
    assert stored.refresh_token == original.refresh_token
    assert stored.access_token != original.access_token
    assert stored.version == original.version + state.refresh_count


async def test_idle_connection_is_refreshed_daily(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    # Tokens without expires_in never expire, but providers revoke unused refresh tokens.
    server = auth_server(expires_in=None)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        await time_skipping_env.sleep(timedelta(days=3, hours=1))
        state = await connection.handle.query(IntegrationWorkflow.state)

    assert state.expires_at is None
    assert server.state.refresh_count == state.refresh_count == 3
    reasons = [
        log.meta["reason"]
        for log in sync_logs(engine, connection.integration_id)
        if log.action == "token_refresh"
    ]
    assert reasons == ["idle", "idle", "idle"]


async def test_invalid_grant_marks_needs_reauth_and_publishes_an_error(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(expires_in=3600)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        server.state.fail_refresh.append("invalid_grant")
        await time_skipping_env.sleep(timedelta(hours=2))
        state = await connection.handle.query(IntegrationWorkflow.state)
        assert state.status == "NEEDS_REAUTH"
        assert "invalid_grant" in (state.last_error or "")
        # invalid_grant is not retried: one attempt at the provider.
        assert server.state.refresh_attempts == 1

        # Refresh-now reports the provider's reason; the workflow stays for a disconnect.
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await connection.handle.execute_update(
                IntegrationWorkflow.refresh, RefreshRequest(force=True)
            )
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == "REFRESH_FAILED"
        assert "invalid_grant" in failed.value.cause.message
        outcome = await connection.handle.execute_update(
            IntegrationWorkflow.disconnect, DisconnectRequest()
        )
        assert outcome.status == "DISCONNECTED"
        result = await connection.handle.result()

    assert result.status == "DISCONNECTED"
    row = integration_row(engine, connection.integration_id)
    assert row.status == "DISCONNECTED" and "invalid_grant" in (row.last_error or "")
    assert events_of(engine, connection.integration_id) == [
        "integration.connected",
        "integration.error",
        "integration.disconnected",
    ]
    failed_logs = [
        log for log in sync_logs(engine, connection.integration_id) if log.status == "FAILED"
    ]
    assert [log.action for log in failed_logs] == ["token_refresh"]


async def test_transient_refresh_failures_are_retried_with_backoff(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(expires_in=3600)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        server.state.fail_refresh.extend([503, 429, 502])
        await time_skipping_env.sleep(timedelta(hours=1))
        state = await connection.handle.query(IntegrationWorkflow.state)

    assert state.status == "CONNECTED" and state.last_error is None
    assert server.state.refresh_attempts == 4 and server.state.refresh_count == 1
    statuses = [
        log.status
        for log in sync_logs(engine, connection.integration_id)
        if log.action == "token_refresh"
    ]
    assert statuses == ["FAILED", "FAILED", "FAILED", "COMPLETED"]


async def test_no_callback_within_ten_minutes_expires(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER, callback=False
        )
        result = await connection.handle.result()

    assert result.status == "EXPIRED"
    row = integration_row(engine, connection.integration_id)
    assert row.status == "EXPIRED" and not row.is_active
    assert events_of(engine, connection.integration_id) == ["integration.error"]


async def test_a_callback_whose_update_was_lost_is_claimed_at_expiry(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER, callback=False
        )
        # The callback route consumed the state and stored the code, then died before
        # its update reached the workflow.
        query = query_of(await authorize(connection.authorization_url))
        consumed = consume_state(
            engine, keyring, provider=PROVIDER, state=query["state"], code=query["code"], error=None
        )
        assert consumed is not None and consumed.integration_id == connection.integration_id
        await time_skipping_env.sleep(timedelta(minutes=11))
        state = await connection.handle.query(IntegrationWorkflow.state)

    assert state.status == "CONNECTED"
    assert server.state.exchange_count == 1
    assert integration_row(engine, connection.integration_id).status == "CONNECTED"


async def test_continue_as_new_carries_the_state(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(rotate_refresh_tokens=True, expires_in=3600)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER, history_limit=60
        )
        first_run = (await connection.handle.describe()).run_id
        await time_skipping_env.sleep(timedelta(hours=8, minutes=1))
        latest = time_skipping_env.client.get_workflow_handle(connection.handle.id)
        state = await latest.query(IntegrationWorkflow.state)
        description = await latest.describe()

    assert description.run_id != first_run
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert state.status == "CONNECTED"
    assert state.refresh_count == server.state.refresh_count >= 8
    stored = TokenStore(engine, keyring).read(connection.integration_id)
    assert stored is not None and [stored.refresh_token] == server.state.live_refresh_tokens()


async def test_concurrent_refresh_requests_share_one_refresh(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(rotate_refresh_tokens=True, expires_in=3600, refresh_delay=0.5)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER
        )
        outcomes = await asyncio.gather(
            *(
                connection.handle.execute_update(
                    IntegrationWorkflow.refresh, RefreshRequest(force=True)
                )
                for _ in range(20)
            )
        )

    assert all(outcome.refreshed for outcome in outcomes)
    assert len({outcome.expires_at for outcome in outcomes}) == 1
    assert server.state.refresh_count == 1
    assert server.state.refresh_attempts == 1


async def test_disconnecting_a_pending_connection_refuses_its_callback(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        connection = await begin_connection(
            time_skipping_env, settings, engine, keyring, worker, PROVIDER, callback=False
        )
        outcome = await connection.handle.execute_update(
            IntegrationWorkflow.disconnect, DisconnectRequest()
        )
        result = await connection.handle.result()
        # The user comes back from the provider afterwards: the state is spent.
        query = query_of(await authorize(connection.authorization_url))
        late = consume_state(
            engine, keyring, provider=PROVIDER, state=query["state"], code=query["code"], error=None
        )

    assert outcome.status == result.status == "DISCONNECTED" and outcome.revoked is False
    assert late is None
    assert server.state.exchange_count == 0 and server.state.revoked == []
    assert events_of(engine, connection.integration_id) == ["integration.disconnected"]


async def _pending_confirmation(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    keyring: Keyring,
    worker: OAuthWorker,
) -> tuple[uuid.UUID, WorkflowHandle[Any, Any], str]:
    """A connection initiated with requireConfirmation, called back and exchanged: the
    integration id, its workflow and the confirmation code the application received."""
    entry = load_catalog(settings.providers_file).require(PROVIDER)
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
        callback="http://127.0.0.1:9/v1/integrations/oauth/callback/" + PROVIDER,
        require_confirmation=True,
    )
    integration_id = pending.integration.id
    handle = await env.client.start_workflow(
        IntegrationWorkflow.run,
        IntegrationInput(str(integration_id), "user-1", PROVIDER),
        id=f"integration-{integration_id}",
        task_queue=worker.queue,
    )
    worker.handles.append(handle)
    query = query_of(await authorize(pending.authorization_url))
    consumed = consume_state(
        engine, keyring, provider=PROVIDER, state=query["state"], code=query["code"], error=None
    )
    assert consumed is not None and consumed.confirmation_code
    outcome = await handle.execute_update(
        IntegrationWorkflow.complete_authorization, AuthorizationCallback(str(consumed.state_id))
    )
    assert outcome.status == "PENDING_CONFIRMATION" and not outcome.connected
    return integration_id, handle, consumed.confirmation_code


async def test_an_unconfirmed_connection_expires_after_ten_minutes(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        integration_id, handle, _ = await _pending_confirmation(
            time_skipping_env, settings, engine, keyring, worker
        )
        await time_skipping_env.sleep(timedelta(minutes=9))
        waiting = await handle.query(IntegrationWorkflow.state)
        result = await handle.result()

    assert waiting.status == "PENDING_CONFIRMATION"
    assert result.status == "EXPIRED"
    assert TokenStore(engine, keyring).read(integration_id) is None
    assert len(server.state.revoked) == 2
    assert events_of(engine, integration_id) == ["integration.error"]


async def test_a_confirmation_whose_message_was_lost_connects_at_the_deadline(
    time_skipping_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_worker(time_skipping_env, settings, engine, keyring) as worker:
        integration_id, handle, code = await _pending_confirmation(
            time_skipping_env, settings, engine, keyring, worker
        )
        # The confirm route checked the code, then died before its update reached the
        # workflow: at the deadline the workflow finds the confirmation and connects.
        assert confirm_connection(engine, integration_id, code).result == Confirmation.CONFIRMED
        await time_skipping_env.sleep(timedelta(minutes=11))
        state = await handle.query(IntegrationWorkflow.state)

    assert state.status == "CONNECTED"
    assert integration_row(engine, integration_id).status == "CONNECTED"
    assert TokenStore(engine, keyring).read(integration_id) is not None
    assert server.state.revoked == []
    assert events_of(engine, integration_id) == ["integration.connected"]
