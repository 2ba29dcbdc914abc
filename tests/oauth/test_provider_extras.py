"""Secrets outside the token columns, against the running stack: a provider whose token
response carries webhook URLs (Slack's `incoming_webhook.url`, Discord's `webhook.url`,
bearer secrets both) and the API, worker and database they pass through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from relay.crypto import Keyring
from relay.models.oauth import Integration, IntegrationCredential
from relay.oauth.tokens import token_context
from relay.settings import Settings
from tests.conftest import Stack
from tests.oauth.conftest import PROVIDER, connect, database_text
from tests.oauth.provider import AuthServer
from tests.oauth.test_api import _plaintext_of_history
from workflows.oauth import IntegrationWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

StackFactory = Callable[[Settings], AbstractAsyncContextManager[Stack]]

SLACK_URL = "https://hooks.slack.com/services/T1/B2/SECRET-slack-5f2c"
DISCORD_TOKEN = "SECRET-discord-9a7e"  # noqa: S105 (a test value)
DISCORD_URL = f"https://discord.com/api/webhooks/W1/{DISCORD_TOKEN}"
SECRETS = ("SECRET", SLACK_URL, DISCORD_URL, DISCORD_TOKEN)
TOKEN_EXTRAS = {
    "incoming_webhook": {
        "url": SLACK_URL,
        "channel": "#x",
        "configuration_url": "https://acme.slack.com/services/B2",
    },
    "webhook": {"id": "W1", "token": DISCORD_TOKEN, "url": DISCORD_URL, "channel_id": "C2"},
    "team": {"id": "T1", "name": "Acme HQ"},
}


def _clear_columns(engine: Engine, integration_id: str) -> str:
    """Every column of every OAuth table as text, the sealed ciphertexts left out."""
    from relay.models import metadata

    sealed = {
        ("integration_credentials", "access_token"),
        ("integration_credentials", "refresh_token"),
        ("integration_credentials", "extras"),
        ("oauth_states", "code_verifier"),
        ("oauth_states", "code"),
    }
    tables = [
        "integrations",
        "integration_credentials",
        "oauth_states",
        "integration_sync_logs",
        "integration_credential_access",
    ]
    chunks = []
    with engine.connect() as connection:
        for name in tables:
            table = metadata.tables[name]
            for row in connection.execute(table.select()):
                for column, value in row._mapping.items():
                    if (name, column) not in sealed:
                        chunks.append(f"{name}.{column}={value!r}")
    text = "\n".join(chunks)
    assert integration_id in text  # the scan sees the rows
    return text


async def test_webhook_urls_are_sealed_served_only_as_credentials_and_gone_on_disconnect(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
    keyring: Keyring,
) -> None:
    server = auth_server(token_extras=TOKEN_EXTRAS)
    entry = server.catalog_entry(
        public_extras=["team.id", "team.name", "incoming_webhook.channel", "webhook.channel_id"]
    )
    settings = oauth_settings({PROVIDER: entry})
    async with oauth_stack(settings) as stack:
        integration_id, back = await connect(stack, PROVIDER)
        assert back["status"] == "success"
        path = f"/v1/integrations/{integration_id}"
        async with stack.http() as http:
            one = await http.get(path)
            listed = await http.get("/v1/integrations", params={"userId": "user-1"})
            logs = await http.get(f"{path}/sync-logs")
            credentials = await http.get(f"{path}/credentials")
            refreshed = await http.post(f"{path}/refresh")
            after_refresh = await http.get(f"{path}/credentials")

        # In the clear: what the catalog allows, and not one secret.
        with Session(engine) as session:
            row = session.get(Integration, uuid.UUID(integration_id))
            sealed_row = session.get(IntegrationCredential, uuid.UUID(integration_id))
        assert row is not None and sealed_row is not None
        assert row.provider_data == {
            "team": {"id": "T1", "name": "Acme HQ"},
            "incoming_webhook": {"channel": "#x"},
            "webhook": {"channel_id": "C2"},
        }
        clear = _clear_columns(engine, integration_id)
        for secret in SECRETS:
            assert secret not in clear
            for response in (one, listed, logs):
                assert secret not in response.text
        assert one.json()["data"]["providerData"] == row.provider_data
        # Sealed with the tokens, under the keyring, bound to the row and column.
        assert sealed_row.extras is not None and SLACK_URL not in sealed_row.extras
        opened = json.loads(
            keyring.open(sealed_row.extras, token_context(sealed_row.integration_id, "extras"))
        )
        assert opened["incoming_webhook"]["url"] == SLACK_URL

        # Served only by GET credentials, and kept across refreshes.
        assert credentials.status_code == 200, credentials.text
        extras = credentials.json()["data"]["extras"]
        assert extras["incoming_webhook"]["url"] == SLACK_URL
        assert extras["webhook"] == TOKEN_EXTRAS["webhook"]
        assert refreshed.status_code == 200, refreshed.text
        assert after_refresh.json()["data"]["extras"] == extras
        assert (
            after_refresh.json()["data"]["accessToken"] != credentials.json()["data"]["accessToken"]
        )

        async with stack.http() as http:
            deleted = await http.delete(path)
            gone = (await http.get(path)).json()["data"]
        workflow_id = f"integration-{integration_id}"
        await stack.client.get_workflow_handle_for(IntegrationWorkflow.run, workflow_id).result()
        history = await _plaintext_of_history(stack.client, workflow_id, keyring)

    assert deleted.status_code == 200 and gone["status"] == "DISCONNECTED"
    assert gone["providerData"] == {}
    # Nothing of it anywhere in the database, sealed or not, nor in the workflow's history.
    everything = database_text(engine)
    assert integration_id in everything
    for secret in SECRETS:
        assert secret not in everything
        assert secret.encode() not in history
    with Session(engine) as session:
        assert session.get(IntegrationCredential, uuid.UUID(integration_id)) is None


async def test_nothing_is_in_the_clear_unless_the_catalog_lists_it(
    auth_server: Callable[..., AuthServer],
    oauth_settings: Callable[..., Settings],
    oauth_stack: StackFactory,
    engine: Engine,
) -> None:
    server = auth_server(token_extras=TOKEN_EXTRAS)
    settings = oauth_settings({PROVIDER: server.catalog_entry()})  # no public_extras
    async with oauth_stack(settings) as stack:
        integration_id, _ = await connect(stack, PROVIDER)
        async with stack.http() as http:
            one = (await http.get(f"/v1/integrations/{integration_id}")).json()["data"]
            credentials = await http.get(f"/v1/integrations/{integration_id}/credentials")
    assert one["providerData"] == {}
    for secret in SECRETS:
        assert secret not in _clear_columns(engine, integration_id)
    assert credentials.json()["data"]["extras"] == TOKEN_EXTRAS
