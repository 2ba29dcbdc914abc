"""OAuth connections end to end: the real API (uvicorn), a worker on the Temporal dev server,
and real authorization servers on loopback (the authlib-built one and oidc-provider-mock).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.codec import EncryptionCodec
from relay.crypto import Keyring
from relay.db import utcnow
from relay.models.oauth import (
    IntegrationCredential,
    IntegrationCredentialAccess,
    OAuthState,
)
from relay.oauth.tokens import TokenStore
from relay.settings import Settings
from tests.conftest import ServerThread, Stack, eventually
from tests.oauth.conftest import (
    APP_REDIRECT,
    MOCK,
    PROVIDER,
    authorize,
    connect,
    database_text,
    events_of,
    integration_row,
    mock_entry,
    query_of,
    sync_logs,
)
from tests.oauth.provider import CLIENT_SECRET, AuthServer
from workflows.oauth import IntegrationWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

StackFactory = Callable[[Settings], AbstractAsyncContextManager[Stack]]


async def _initiate(stack: Stack, **body: Any) -> httpx.Response:
    payload = {"userId": "user-1", "provider": PROVIDER, "redirectUri": APP_REDIRECT, **body}
    async with stack.http() as http:
        return await http.post("/v1/integrations/oauth/initiate", json=payload)


async def _settled_history(handle: WorkflowHandle[Any, Any]) -> int:
    """The history length once the workflow has gone idle (its task done, its timer set)."""
    last = -1
    while True:
        length = (await handle.describe()).history_length
        if length == last:
            return length
        last = length
        await asyncio.sleep(0.5)


def _credentials_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(IntegrationCredential)).all())


async def test_connect_through_the_http_callback(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        started = await _initiate(stack, metadata={"source": "settings"})
        assert started.status_code == 201, started.text
        data = started.json()["data"]
        params = query_of(data["authorizationUrl"])
        assert data["authorizationUrl"].startswith(f"{server.url}/authorize?")
        assert params["client_id"] == "relay-test-client"
        assert (
            params["redirect_uri"] == f"{stack.api_url}/v1/integrations/oauth/callback/{PROVIDER}"
        )
        assert params["response_type"] == "code"
        assert params["scope"] == "profile email"
        assert params["state"] == data["state"] and len(data["state"]) >= 43  # 256 bits
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43

        back_to_relay = await authorize(data["authorizationUrl"])
        async with stack.http(authenticated=False) as browser:
            landed = await browser.get(back_to_relay)
        assert landed.status_code == 302
        assert landed.headers["referrer-policy"] == "no-referrer"
        back = query_of(landed.headers["location"])
        assert back == {
            "status": "success",
            "integrationId": data["integrationId"],
            "provider": PROVIDER,
        }

        async with stack.http() as http:
            body = (await http.get(f"/v1/integrations/{data['integrationId']}")).json()["data"]
            runs = (
                await http.get("/v1/runs", params={"integrationId": data["integrationId"]})
            ).json()
        assert body["status"] == "CONNECTED" and body["isActive"] is True
        assert body["name"] == "alice-login"
        assert body["metadata"] == {"source": "settings"}
        assert body["scope"] == ["profile", "email"]
        assert "accessToken" not in body and "refreshToken" not in body
        assert server.state.pkce_verified == 1  # the provider checked our S256 verifier
        assert runs["data"][0]["workflowId"] == f"integration-{data['integrationId']}"
        assert runs["data"][0]["searchAttributes"]["RelayProvider"] == PROVIDER

    with Session(engine) as session:
        state_row = session.exec(select(OAuthState)).one()
    assert state_row.state_hash == hashlib.sha256(data["state"].encode()).hexdigest()
    assert state_row.used_at and state_row.exchanged_at
    assert state_row.code is None and state_row.code_verifier is None  # spent, not kept
    assert events_of(engine, data["integrationId"]) == ["integration.connected"]
    actions = [log.action for log in sync_logs(engine, data["integrationId"])]
    assert actions == ["token_exchange", "account_lookup"]


async def test_connect_with_oidc_provider_mock_and_use_the_token(
    oidc_mock: Callable[..., str],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    url = oidc_mock()
    settings = oauth_settings({MOCK: mock_entry(url)})
    async with oauth_stack(settings) as stack:
        integration_id, back = await connect(stack, MOCK, sub="bob@example.test")
        assert back["status"] == "success"
        async with stack.http() as http:
            integration = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")
    assert integration["name"] == "bob@example.test"
    assert credentials.status_code == 200
    assert credentials.headers["cache-control"] == "no-store"
    token = credentials.json()["data"]
    assert token["tokenType"] == "Bearer" and token["expiresAt"]
    # The token Relay hands out works at the provider.
    async with httpx.AsyncClient() as client:
        userinfo = await client.get(
            f"{url}/userinfo", headers={"Authorization": f"Bearer {token['accessToken']}"}
        )
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == "bob@example.test"


async def test_a_provider_error_travels_back_to_the_app(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        data = (await _initiate(stack)).json()["data"]
        back_to_relay = await authorize(data["authorizationUrl"] + "&deny=1")
        assert query_of(back_to_relay)["error"] == "access_denied"
        async with stack.http(authenticated=False) as browser:
            landed = await browser.get(back_to_relay)
        back = query_of(landed.headers["location"])
        handle = stack.client.get_workflow_handle_for(
            IntegrationWorkflow.run, f"integration-{data['integrationId']}"
        )
        result = await handle.result()
    assert landed.status_code == 302
    assert back["status"] == "error" and back["code"] == "OAUTH_FAILED"
    assert "access_denied" in back["message"]
    assert back["integrationId"] == data["integrationId"]
    assert result.status == "DISCONNECTED"
    row = integration_row(engine, data["integrationId"])
    assert row.status == "DISCONNECTED" and "access_denied" in (row.last_error or "")
    assert events_of(engine, data["integrationId"]) == ["integration.error"]
    assert server.state.exchange_count == 0


async def test_replayed_forged_or_expired_state_is_refused_without_touching_a_workflow(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        data = (await _initiate(stack)).json()["data"]
        back_to_relay = await authorize(data["authorizationUrl"])
        handle = stack.client.get_workflow_handle(f"integration-{data['integrationId']}")
        async with stack.http(authenticated=False) as browser:
            first = await browser.get(back_to_relay)
            assert query_of(first.headers["location"])["status"] == "success"
            history = await _settled_history(handle)

            replayed = await browser.get(back_to_relay)
            forged = await browser.get(
                f"/v1/integrations/oauth/callback/{PROVIDER}",
                params={"code": "stolen", "state": "A" * 43},
            )
            missing = await browser.get(
                f"/v1/integrations/oauth/callback/{PROVIDER}", params={"code": "x"}
            )

            # A fresh flow whose state outlived its 10 minutes.
            late = (await _initiate(stack)).json()["data"]
            with Session(engine) as session:
                session.execute(
                    update(OAuthState)
                    .where(col(OAuthState.integration_id) == uuid.UUID(late["integrationId"]))
                    .values(expires_at=utcnow() - timedelta(seconds=1))
                )
                session.commit()
            late_history = await _settled_history(
                stack.client.get_workflow_handle(f"integration-{late['integrationId']}")
            )
            expired = await browser.get(await authorize(late["authorizationUrl"]))
            # The right state on another provider's callback path.
            other = (await _initiate(stack)).json()["data"]
            other_query = query_of(await authorize(other["authorizationUrl"]))
            wrong_path = await browser.get(
                "/v1/integrations/oauth/callback/github", params=other_query
            )

        for response in (replayed, forged, missing, expired, wrong_path):
            assert response.status_code == 400, response.text
            assert response.json()["success"] is False
            assert response.json()["error"]["code"] == "OAUTH_FAILED"
        assert (await handle.describe()).history_length == history
        late_handle = stack.client.get_workflow_handle(f"integration-{late['integrationId']}")
        assert (await late_handle.describe()).history_length == late_history
    assert server.state.exchange_count == 1


async def test_initiate_refuses_bad_input_and_writes_nothing(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        unknown = await _initiate(stack, provider="myspace")
        not_configured = await _initiate(stack, provider="github")
        outside = [
            await _initiate(stack, redirectUri=uri)
            for uri in (
                "https://evil.example/callback",
                "http://localhost.evil.example/callback",
                "http://localhost@evil.example/callback",
                "http://localhost:3000/done#fragment",
                "javascript:alert(1)",
            )
        ]
        shop_missing = await _initiate(stack, provider="shopify")
        async with stack.http() as http:
            listed = (await http.get("/v1/integrations")).json()["data"]

    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "INVALID_PROVIDER"
    assert not_configured.status_code == 400
    assert not_configured.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "GITHUB_CLIENT_ID" in not_configured.json()["error"]["message"]
    for response in outside:
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == "redirectUri"
    # Shopify is not configured here either: configuration is checked first.
    assert shop_missing.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
    assert listed == []


async def test_connection_config_is_validated_and_interpolated(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    server = auth_server()
    entry = server.catalog_entry(
        authorization_url=f"{server.url}/authorize?tenant=${{connectionConfig.tenant}}",
        connection_config=["tenant"],
    )
    settings = oauth_settings({PROVIDER: entry, "shopify": {}})
    async with oauth_stack(settings) as stack:
        missing = await _initiate(stack)
        hostile = await _initiate(stack, connectionConfig={"tenant": "a/../b@evil"})
        extra = await _initiate(stack, connectionConfig={"tenant": "acme", "other": "x"})
        good = await _initiate(stack, connectionConfig={"tenant": "acme"})
        shop = await _initiate(stack, provider="shopify", connectionConfig={"shop": "acme-store"})

    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "connectionConfig.tenant"
    assert hostile.status_code == 422 and extra.status_code == 422
    assert good.status_code == 201
    assert query_of(good.json()["data"]["authorizationUrl"])["tenant"] == "acme"
    assert shop.status_code == 201, shop.text
    shop_url = shop.json()["data"]["authorizationUrl"]
    assert shop_url.startswith("https://acme-store.myshopify.com/admin/oauth/authorize?")
    assert query_of(shop_url)["scope"] == "read_products,write_products,read_orders,read_inventory"


async def test_providers_are_listed_with_their_configuration(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        async with stack.http() as http:
            response = await http.get("/v1/providers")
            anonymous = await httpx.AsyncClient(base_url=stack.api_url).get("/v1/providers")
    providers = {item["key"]: item for item in response.json()["data"]}
    assert anonymous.status_code == 401
    builtin = {
        "tiktok", "instagram", "facebook", "youtube", "twitter", "linkedin", "hubspot",
        "salesforce", "shopify", "mailchimp", "meta_ads", "google_ads", "tiktok_ads",
        "slack", "discord", "google_calendar", "github", "zoom",
    }  # fmt: skip
    assert builtin | {PROVIDER} == set(providers)
    assert providers[PROVIDER] == {
        "key": PROVIDER,
        "displayName": "Test Provider",
        "authMode": "OAUTH2",
        "scopes": ["profile", "email"],
        "configured": True,
        "connectionConfig": [],
    }
    assert providers["github"]["configured"] is False
    assert providers["shopify"]["connectionConfig"] == ["shop"]


async def test_list_get_patch_and_sync_logs(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        first, _ = await connect(stack, PROVIDER, user_id="user-a")
        second, _ = await connect(stack, PROVIDER, user_id="user-a")
        await connect(stack, PROVIDER, user_id="user-b")
        async with stack.http() as http:
            mine = (await http.get("/v1/integrations", params={"userId": "user-a"})).json()
            page = (
                await http.get("/v1/integrations", params={"userId": "user-a", "limit": 1})
            ).json()
            rest = (
                await http.get(
                    "/v1/integrations",
                    params={"userId": "user-a", "limit": 1, "cursor": page["nextCursor"]},
                )
            ).json()
            patched = await http.patch(
                f"/v1/integrations/{first}",
                json={"name": "@acme", "metadata": {"team": "growth"}, "isActive": False},
            )
            inactive = (await http.get("/v1/integrations", params={"isActive": "false"})).json()
            blocked = await http.get(f"/v1/integrations/{first}/credentials")
            empty = await http.patch(f"/v1/integrations/{first}", json={})
            missing = await http.get(f"/v1/integrations/{uuid.uuid4()}")
            await http.delete(f"/v1/integrations/{second}")
            reactivate = await http.patch(f"/v1/integrations/{second}", json={"isActive": True})
            logs = (
                await http.get(f"/v1/integrations/{second}/sync-logs", params={"limit": 2})
            ).json()
            more_logs = (
                await http.get(
                    f"/v1/integrations/{second}/sync-logs", params={"cursor": logs["nextCursor"]}
                )
            ).json()
            bad_cursor = await http.get("/v1/integrations", params={"cursor": "nope"})

    assert {item["id"] for item in mine["data"]} == {first, second}
    assert mine["nextCursor"] is None
    assert len(page["data"]) == 1 and len(rest["data"]) == 1
    assert {page["data"][0]["id"], rest["data"][0]["id"]} == {first, second}
    assert patched.status_code == 200
    assert patched.json()["data"]["name"] == "@acme"
    assert patched.json()["data"]["metadata"] == {"team": "growth"}
    assert [item["id"] for item in inactive["data"]] == [first]
    assert blocked.status_code == 409
    assert empty.status_code == 422
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"
    assert reactivate.status_code == 409
    actions = [log["action"] for log in logs["data"] + more_logs["data"]]
    assert actions == ["token_revocation", "account_lookup", "token_exchange"]
    assert bad_cursor.status_code == 422


async def test_refresh_now_then_refresh_failed_with_the_providers_reason(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server(rotate_refresh_tokens=True)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        async with stack.http() as http:
            before = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            refreshed = await http.post(f"/v1/integrations/{integration_id}/refresh")
            server.state.fail_refresh.append("invalid_grant")
            failed = await http.post(f"/v1/integrations/{integration_id}/refresh")
            after = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")

    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["data"]["refreshed"] is True
    assert refreshed.json()["data"]["expiresAt"] > before["expiresAt"]
    assert failed.status_code == 401
    assert failed.json()["error"]["code"] == "REFRESH_FAILED"
    assert "invalid_grant" in failed.json()["error"]["message"]
    assert after["status"] == "NEEDS_REAUTH" and "invalid_grant" in after["lastError"]
    assert credentials.status_code == 401
    assert credentials.json()["error"]["code"] == "REFRESH_FAILED"
    assert events_of(engine, integration_id) == ["integration.connected", "integration.error"]
    assert server.state.refresh_count == 1


async def test_invalid_grant_from_oidc_provider_mock_after_revoking_the_users_tokens(
    oidc_mock: Callable[..., str],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    url = oidc_mock()
    settings = oauth_settings({MOCK: mock_entry(url)})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, MOCK, sub="carol")
        async with httpx.AsyncClient() as client:
            revoked = await client.post(f"{url}/users/carol/revoke-tokens")
        assert revoked.status_code == 204
        async with stack.http() as http:
            failed = await http.post(f"/v1/integrations/{integration_id}/refresh")
            state = (await http.get(f"/v1/runs/integration-{integration_id}")).json()["data"]
    assert failed.status_code == 401
    assert failed.json()["error"]["code"] == "REFRESH_FAILED"
    assert "invalid_grant" in failed.json()["error"]["message"]
    assert state["state"]["status"] == "NEEDS_REAUTH"


async def test_twenty_concurrent_credentials_requests_cause_one_refresh(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    # Four-second tokens with rotation. The background refresh at half-life is refused
    # (invalid_client: the workflow keeps the connection and retries in 15 minutes), so
    # the token then sits within its buffer until the applications ask for it, all at once.
    server = auth_server(rotate_refresh_tokens=True, expires_in=4, refresh_delay=0.3)
    server.state.fail_refresh.append("invalid_client")
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        await eventually(lambda: server.state.refresh_attempts == 1)
        await eventually(
            lambda: any(log.status == "FAILED" for log in sync_logs(engine, integration_id))
        )
        # The one refresh to come issues an hour-long token: no background refresh follows.
        server.state.expires_in = 3600
        # Two API processes' worth of callers: each process coalesces its own, and the
        # workflow (the single writer) lets the second process's update share the refresh.
        second_api = ServerThread(create_app(stack.settings, engine=engine, keyring=keyring))
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        with second_api:
            async with (
                stack.http() as first,
                httpx.AsyncClient(base_url=second_api.url, headers=headers, timeout=30) as second,
            ):
                path = f"/v1/integrations/{integration_id}/credentials"
                responses = await asyncio.gather(
                    *(client.get(path) for client in [first, second] * 10)
                )

    assert [response.status_code for response in responses] == [200] * 20
    tokens = {response.json()["data"]["accessToken"] for response in responses}
    assert server.state.refresh_count == 1  # one refresh at the provider for twenty callers
    assert server.state.refresh_attempts == 2  # the refused one, then that one
    assert tokens == {server.state.tokens[-1].access_token}
    reasons = [
        (log.meta["reason"], log.status)
        for log in sync_logs(engine, integration_id)
        if log.action == "token_refresh"
    ]
    assert reasons == [("expiring", "FAILED"), ("credentials", "COMPLETED")]
    with Session(engine) as session:
        accesses = session.exec(
            select(IntegrationCredentialAccess).where(
                col(IntegrationCredentialAccess.integration_id) == uuid.UUID(integration_id)
            )
        ).all()
    assert len(accesses) == 20 and all(access.api_key_id for access in accesses)
    assert any(access.refreshed for access in accesses)


async def test_disconnect_revokes_at_the_provider_and_wipes_the_tokens(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        stored = TokenStore(engine, keyring).read(uuid.UUID(integration_id))
        assert stored is not None
        async with stack.http() as http:
            deleted = await http.delete(f"/v1/integrations/{integration_id}")
            again = await http.delete(f"/v1/integrations/{integration_id}")
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")
        handle = stack.client.get_workflow_handle_for(
            IntegrationWorkflow.run, f"integration-{integration_id}"
        )
        result = await handle.result()

    assert deleted.status_code == 200 and deleted.json()["data"]["status"] == "DISCONNECTED"
    assert again.status_code == 200
    assert credentials.status_code == 409
    assert result.status == "DISCONNECTED"
    assert server.state.revoked == [
        ("refresh_token", stored.refresh_token),
        ("access_token", stored.access_token),
    ]
    async with httpx.AsyncClient() as client:
        userinfo = await client.get(
            f"{server.url}/userinfo", headers={"Authorization": f"Bearer {stored.access_token}"}
        )
    assert userinfo.status_code == 401
    assert TokenStore(engine, keyring).read(uuid.UUID(integration_id)) is None
    assert events_of(engine, integration_id) == [
        "integration.connected",
        "integration.disconnected",
    ]


async def test_deleting_a_user_disconnects_all_their_integrations(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server()
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        one, _ = await connect(stack, PROVIDER, user_id="leaving", metadata={"k": "v"})
        two, _ = await connect(stack, PROVIDER, user_id="leaving")
        other, _ = await connect(stack, PROVIDER, user_id="staying")
        async with stack.http() as http:
            response = await http.delete("/v1/users/leaving/integrations")
            staying = (await http.get(f"/v1/integrations/{other}")).json()["data"]
    body = response.json()["data"]
    assert response.status_code == 200
    assert body["disconnected"] == 2 and set(body["integrationIds"]) == {one, two}
    for integration_id in (one, two):
        row = integration_row(engine, integration_id)
        assert row.status == "DISCONNECTED" and row.name is None and row.meta == {}
    assert staying["status"] == "CONNECTED"
    assert _credentials_rows(engine) == 1
    assert len(server.state.revoked) == 4


async def test_scheduled_refresh_end_to_end_on_the_dev_server(
    oidc_mock: Callable[..., str],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    url = oidc_mock(token_max_age=timedelta(seconds=4))
    settings = oauth_settings({MOCK: mock_entry(url)})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, MOCK, sub="dave")
        async with stack.http() as http:
            first = (await http.get(f"/v1/integrations/{integration_id}/credentials")).json()
            await eventually(
                lambda: any(
                    log.action == "token_refresh" and log.status == "COMPLETED"
                    for log in sync_logs(engine, integration_id)
                ),
                timeout=30,
            )
            second = (await http.get(f"/v1/integrations/{integration_id}/credentials")).json()
    assert first["data"]["accessToken"] != second["data"]["accessToken"]
    assert second["data"]["expiresAt"] > first["data"]["expiresAt"]
    refresh = next(
        log for log in sync_logs(engine, integration_id) if log.action == "token_refresh"
    )
    assert refresh.meta["reason"] == "expiring"
    # oidc-provider-mock returns no new refresh token: the old one is kept and still works.
    assert refresh.meta["refreshTokenRotated"] is False
    async with httpx.AsyncClient() as client:
        userinfo = await client.get(
            f"{url}/userinfo", headers={"Authorization": f"Bearer {second['data']['accessToken']}"}
        )
    assert userinfo.status_code == 200


async def test_a_terminated_workflow_is_resumed_from_the_database(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
) -> None:
    server = auth_server(rotate_refresh_tokens=True)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        handle = stack.client.get_workflow_handle(f"integration-{integration_id}")
        await handle.terminate("operator mistake")
        async with stack.http() as http:
            refreshed = await http.post(f"/v1/integrations/{integration_id}/refresh")
        state = await stack.client.get_workflow_handle(handle.id).query(IntegrationWorkflow.state)
        description = await stack.client.get_workflow_handle(handle.id).describe()
    assert refreshed.status_code == 200, refreshed.text
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert state.status == "CONNECTED" and state.refresh_count == 1
    assert server.state.refresh_count == 1


async def _plaintext_of_history(client: Client, workflow_id: str, keyring: Keyring) -> bytes:
    """Every payload of the history, decrypted: what the history holds at all."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    payloads: list[Payload] = []

    def walk(message: Message) -> None:
        for _, value in message.ListFields():
            items = (
                value if isinstance(value, list | tuple) or hasattr(value, "extend") else [value]
            )
            for item in items:
                if isinstance(item, Payload):
                    payloads.append(item)
                elif isinstance(item, Message):
                    walk(item)

    for event in history.events:
        walk(event)
    decoded = await EncryptionCodec(keyring).decode(payloads)
    return b"".join(payload.data for payload in decoded)


async def test_no_plaintext_token_in_the_database_or_the_temporal_history(
    temporal_env: WorkflowEnvironment,
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(rotate_refresh_tokens=True)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        async with stack.http() as http:
            await http.post(f"/v1/integrations/{integration_id}/refresh")
            await http.get(f"/v1/integrations/{integration_id}/credentials")
            await http.delete(f"/v1/integrations/{integration_id}")
        workflow_id = f"integration-{integration_id}"
        await stack.client.get_workflow_handle(workflow_id).result()

        # A client without Relay's codec sees the history as stored by the server.
        raw_client = await Client.connect(
            temporal_env.client.service_client.config.target_host,
            namespace=temporal_env.client.namespace,
        )
        raw = await raw_client.get_workflow_handle(workflow_id).fetch_history()
        stored = b"".join(event.SerializeToString() for event in raw.events)
        stored += raw.to_json().encode()
        decrypted = await _plaintext_of_history(raw_client, workflow_id, keyring)

    secrets = [*server.state.issued(), CLIENT_SECRET]
    assert len(secrets) >= 6  # a code, two access tokens, two refresh tokens, the secret
    assert b"integration-" in stored or integration_id.encode() in decrypted
    for secret in secrets:
        assert secret.encode() not in stored
        # Not even encrypted: the workflow never holds a token or a code.
        assert secret.encode() not in decrypted
    text = database_text(engine)
    assert integration_id in text
    for secret in secrets:
        assert secret not in text
