"""IntegrationWorkflow: connect through a real authorization server, refresh now, read
credentials, disconnect (revoke and wipe), all through the API as an application would;
and the requireConfirmation paths: confirmed, never confirmed (the window's timer
expires it), burnt by wrong codes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from temporalio.client import WorkflowExecutionStatus

from tests.histories.scenarios import Recording, RecordingStack, scenario, until

PROVIDER = "testauth"
APP_REDIRECT = "http://localhost:3000/integrations/done"


@scenario("IntegrationWorkflow", "connect-refresh-disconnect")
async def connect_refresh_disconnect(rec: Recording) -> list[str]:
    from tests.oauth.provider import CLIENT_ID, CLIENT_SECRET, AuthServer

    run_dir = rec.data_dir / f"oauth-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    with AuthServer() as auth:
        providers_file = run_dir / "providers.yaml"
        providers_file.write_text(yaml.safe_dump({PROVIDER: auth.catalog_entry()}))
        env_file = run_dir / "oauth.env"
        env_file.write_text(
            f"{PROVIDER.upper()}_CLIENT_ID={CLIENT_ID}\n"
            f"{PROVIDER.upper()}_CLIENT_SECRET={CLIENT_SECRET}\n"
        )
        async with rec.stack(providers_file=providers_file, _env_file=env_file) as stack:
            async with stack.http() as http, httpx.AsyncClient(timeout=30) as browser:  # type: ignore[attr-defined]
                started = await http.post(
                    "/v1/integrations/oauth/initiate",
                    json={"userId": "user-1", "provider": PROVIDER, "redirectUri": APP_REDIRECT},
                )
                started.raise_for_status()
                data = started.json()["data"]
                integration_id = data["integrationId"]
                # The user at the provider, then back through Relay's callback to the app.
                at_provider = await browser.get(data["authorizationUrl"])
                assert at_provider.status_code == 302, at_provider.text
                landed = await browser.get(at_provider.headers["location"])
                assert landed.status_code == 302, landed.text
                assert landed.headers["location"].startswith(APP_REDIRECT)

                (await http.post(f"/v1/integrations/{integration_id}/refresh")).raise_for_status()
                credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")
                credentials.raise_for_status()
                (await http.delete(f"/v1/integrations/{integration_id}")).raise_for_status()

            workflow_id = f"integration-{integration_id}"
            handle = stack.client.get_workflow_handle(workflow_id)

            async def finished() -> bool:
                status = (await handle.describe()).status
                return status != WorkflowExecutionStatus.RUNNING

            await until(finished)
    return [workflow_id]


@asynccontextmanager
async def _provider_stack(rec: Recording, **overrides: Any) -> AsyncIterator[RecordingStack]:
    from tests.oauth.provider import CLIENT_ID, CLIENT_SECRET, AuthServer

    run_dir = rec.data_dir / f"oauth-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    with AuthServer() as auth:
        providers_file = run_dir / "providers.yaml"
        providers_file.write_text(yaml.safe_dump({PROVIDER: auth.catalog_entry()}))
        env_file = run_dir / "oauth.env"
        env_file.write_text(
            f"{PROVIDER.upper()}_CLIENT_ID={CLIENT_ID}\n"
            f"{PROVIDER.upper()}_CLIENT_SECRET={CLIENT_SECRET}\n"
        )
        async with rec.stack(
            providers_file=providers_file, _env_file=env_file, **overrides
        ) as stack:
            yield stack


async def _connect_with_confirmation(stack: RecordingStack) -> tuple[str, str]:
    """initiate (requireConfirmation) → the user at the provider → Relay's callback;
    returns the integration id and the confirmation code the application received."""
    async with stack.http() as http, httpx.AsyncClient(timeout=30) as browser:  # type: ignore[attr-defined]
        started = await http.post(
            "/v1/integrations/oauth/initiate",
            json={
                "userId": "user-1",
                "provider": PROVIDER,
                "redirectUri": APP_REDIRECT,
                "requireConfirmation": True,
            },
        )
        started.raise_for_status()
        data = started.json()["data"]
        at_provider = await browser.get(data["authorizationUrl"])
        assert at_provider.status_code == 302, at_provider.text
        landed = await browser.get(at_provider.headers["location"])
        assert landed.status_code == 302, landed.text
    query = parse_qs(urlsplit(landed.headers["location"]).query)
    assert query["status"] == ["pending_confirmation"], query
    return data["integrationId"], query["relay_confirmation"][0]


async def _finished(stack: RecordingStack, workflow_id: str) -> None:
    handle = stack.client.get_workflow_handle(workflow_id)

    async def done() -> bool:
        return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

    await until(done)


@scenario("IntegrationWorkflow", "confirm-connect-disconnect")
async def confirm_connect_disconnect(rec: Recording) -> list[str]:
    async with _provider_stack(rec) as stack:
        integration_id, code = await _connect_with_confirmation(stack)
        path = f"/v1/integrations/{integration_id}"
        async with stack.http() as http:  # type: ignore[attr-defined]
            assert (await http.get(f"{path}/credentials")).status_code == 409
            assert (await http.post(f"{path}/confirm", json={"code": "wrong"})).status_code == 400
            (await http.post(f"{path}/confirm", json={"code": code})).raise_for_status()
            (await http.get(f"{path}/credentials")).raise_for_status()
            (await http.delete(path)).raise_for_status()
        workflow_id = f"integration-{integration_id}"
        await _finished(stack, workflow_id)
    return [workflow_id]


@scenario("IntegrationWorkflow", "unconfirmed-expires")
async def unconfirmed_expires(rec: Recording) -> list[str]:
    async with _provider_stack(rec, oauth_confirmation_window="2s") as stack:
        integration_id, _ = await _connect_with_confirmation(stack)
        workflow_id = f"integration-{integration_id}"
        await _finished(stack, workflow_id)
    return [workflow_id]


@scenario("IntegrationWorkflow", "confirmation-burnt")
async def confirmation_burnt(rec: Recording) -> list[str]:
    async with _provider_stack(rec) as stack:
        integration_id, _ = await _connect_with_confirmation(stack)
        async with stack.http() as http:  # type: ignore[attr-defined]
            for attempt in range(5):
                await http.post(
                    f"/v1/integrations/{integration_id}/confirm", json={"code": f"guess-{attempt}"}
                )
        workflow_id = f"integration-{integration_id}"
        await _finished(stack, workflow_id)
    return [workflow_id]


@scenario("IntegrationWorkflow", "instagram-long-lived")
async def instagram_long_lived(rec: Recording) -> list[str]:
    """Instagram through the OAuth providers sandbox: the code's short-lived token traded
    for a long-lived one at connect (ig_exchange_token), then kept alive by a refresh
    (ig_refresh_token), credentials read, and disconnected."""
    from relay.sandbox.oauth_providers import OAuthProvidersSandbox
    from tests.oauth.test_long_lived_tokens import approve

    run_dir = rec.data_dir / f"instagram-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    sandbox = OAuthProvidersSandbox(
        port=0, providers_file=run_dir / "providers.yaml", refresh_min_age_seconds=0
    )
    with sandbox.run_in_thread() as running:
        env = running.sandbox.environment()
        providers_file = Path(env.pop("PROVIDERS_FILE"))
        env_file = run_dir / "sandbox.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        async with rec.stack(providers_file=providers_file, _env_file=env_file) as stack:
            async with stack.http() as http, httpx.AsyncClient(timeout=30) as browser:  # type: ignore[attr-defined]
                started = await http.post(
                    "/v1/integrations/oauth/initiate",
                    json={"userId": "user-1", "provider": "instagram", "redirectUri": APP_REDIRECT},
                )
                started.raise_for_status()
                data = started.json()["data"]
                landed = await browser.get(await approve(data["authorizationUrl"]))
                assert landed.status_code == 302, landed.text
                assert "status=success" in landed.headers["location"], landed.headers
                integration_id = data["integrationId"]
                path = f"/v1/integrations/{integration_id}"
                (await http.post(f"{path}/refresh")).raise_for_status()
                (await http.get(f"{path}/credentials")).raise_for_status()
                (await http.delete(path)).raise_for_status()
            workflow_id = f"integration-{integration_id}"
            await _finished(stack, workflow_id)
    return [workflow_id]
