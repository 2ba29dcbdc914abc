"""IntegrationWorkflow: connect through a real authorization server, refresh now, read
credentials, disconnect (revoke and wipe), all through the API as an application would."""

from __future__ import annotations

import uuid

import httpx
import yaml
from temporalio.client import WorkflowExecutionStatus

from tests.histories.scenarios import Recording, scenario, until

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
