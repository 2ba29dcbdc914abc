"""Publishing fixtures: the OAuth providers sandbox and the publishing platforms sandbox in
threads of this process, moto's S3 server for stored media, and a stack (API + worker on
the Temporal dev server) pointed at them.

- `publishing_stack_factory` yields `async with factory(**settings) as stack`;
  `publishing_stack` a stack with the default settings.
- `await stack.connect(provider, user_id)` connects a platform through Relay's real OAuth
  flow (initiate → the sandbox's approval page → Relay's callback); the OAuth sandbox tells
  the platforms sandbox (a token sink) which tokens it issued, so it accepts exactly those.
  No metadata by default: the account is what the provider tells (LinkedIn's `sub`,
  Instagram's `user_id`, the Facebook user's Page found at /me/accounts).
- `stack.platforms.state`: what the platforms received (posts, publish calls, requests).
- Every `<PROVIDER>_API_BASE` is set to the sandbox's scheme, host and port only, as
  ARCHITECTURE.md says: Graph's /v21.0 is Relay's to add.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.files import repository as files
from relay.files.contracts import FileKind, FileStatus, FileView
from relay.models.webhooks import WebhookEvent
from relay.oauth.tokens import TokenStore
from relay.publishing.contracts import publication_workflow_id
from relay.publishing.providers import PUBLISHING_PROVIDERS
from relay.sandbox.oauth_providers import OAuthProvidersSandbox, OAuthProvidersServer
from relay.sandbox.publishing import PublishingSandbox, PublishingServer
from relay.sandbox.s3 import S3Sandbox
from relay.settings import Settings
from tests.calendar.conftest import APP_REDIRECT, approve
from tests.conftest import Stack, eventually, free_port, serving, task_queue
from tests.files.conftest import s3, s3_server, s3_settings

__all__ = ["s3", "s3_server"]

PROCESSING_SECONDS = 0.3
# The account as an application may name it in the connection's metadata at initiate
# (`connect(..., metadata=ACCOUNT_METADATA)`); the Page is the one the publishing sandbox
# gives the user of SANDBOX_TOKENS["facebook"] (SANDBOX_PAGE_ID).
ACCOUNT_METADATA = {
    "pageId": "104857600123456",
    "authorUrn": "urn:li:person:8675309",
    "igUserId": "17841400000000001",
}
SETTLED = {"PUBLISHED", "PARTIAL", "FAILED", "CANCELED", "UNPUBLISHED"}
events_table = WebhookEvent.__table__  # type: ignore[attr-defined]


@dataclass
class PublishingStack(Stack):
    oauth: OAuthProvidersServer | None = None
    platforms: PublishingServer | None = None
    s3: S3Sandbox | None = None

    @property
    def platform(self) -> PublishingServer:
        assert self.platforms is not None
        return self.platforms

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
            landed = await browser.get(back_to_relay)
            assert landed.status_code == 302, landed.text
            assert "status=success" in landed.headers["location"], landed.headers["location"]
        return str(data["integrationId"])

    async def publish(self, **body: Any) -> httpx.Response:
        request = {"contentId": f"content-{uuid.uuid4().hex[:8]}", "userId": "user-1"} | body
        async with self.http() as http:
            return await http.post("/v1/publications", json=request)

    async def get(self, publication_id: str) -> dict[str, Any]:
        async with self.http() as http:
            answer = await http.get(f"/v1/publications/{publication_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    async def settled(self, publication_id: str, timeout: float = 60) -> dict[str, Any]:
        """The publication once its status is final."""

        async def done() -> dict[str, Any] | None:
            data = await self.get(publication_id)
            return data if data["status"] in SETTLED else None

        try:
            found = await eventually(done, timeout=timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(await self._stuck(publication_id)) from None
        assert isinstance(found, dict)
        return found

    async def _stuck(self, publication_id: str) -> str:
        """Where a publication that did not settle stands: its row and its run."""
        handle = self.client.get_workflow_handle(publication_workflow_id(publication_id))
        description = await handle.describe()
        pending = [
            (a.activity_type.name, a.attempt, a.state, a.last_failure.message)
            for a in description.raw_description.pending_activities
        ]
        return f"not settled: {await self.get(publication_id)} run={description.status} {pending}"

    def posts(self, provider: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.platform.state.posts()["data"][provider]
        return listed

    def publishes(self, provider: str) -> int:
        return int(self.platform.state.posts()["publishes"][provider])

    def fault(self, provider: str, count: int = 1, status: int = 503, retry_after: int = 1) -> None:
        """The next `count` API calls to `provider` answer `status`."""
        self.platform.state.fail_next(provider, count, status, retry_after)

    def access_token(self, integration_id: str) -> str:
        tokens = TokenStore(self.engine, self.keyring).read(uuid.UUID(integration_id))
        assert tokens is not None
        return tokens.access_token

    def events(self, event_type: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(events_table).where(events_table.c.type == event_type)
            ).all()
        return [dict(row._mapping) for row in rows]

    def stored_file(self, data: bytes, content_type: str, filename: str, user_id: str) -> str:
        """A READY file of the files capability, its object in the S3 sandbox."""
        assert self.s3 is not None
        file_id = f"file_{uuid.uuid4().hex[:24]}"  # the files capability's id shape
        key = f"files/{file_id}/{filename}"
        self.s3.client().put_object(
            Bucket=self.s3.bucket, Key=key, Body=data, ContentType=content_type
        )
        files.save_view(
            self.engine,
            FileView(
                id=file_id,
                kind=FileKind.ATTACHMENT,
                filename=filename,
                content_type=content_type,
                declared_size=len(data),
                user_id=user_id,
                status=FileStatus.READY,
                upload_key=f"uploads/{file_id}/{filename}",
                object_key=key,
                size=len(data),
                detected_type=content_type,
            ),
        )
        return file_id


@pytest_asyncio.fixture(loop_scope="session")
async def publishing_stack_factory(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    s3: S3Sandbox,
) -> AsyncIterator[Callable[..., contextlib.AbstractAsyncContextManager[PublishingStack]]]:
    """A factory: `async with publishing_stack_factory(**settings) as stack`."""

    @contextlib.asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[PublishingStack]:
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        tag = uuid.uuid4().hex[:6]
        with contextlib.ExitStack() as sandboxes:
            oauth = sandboxes.enter_context(
                OAuthProvidersSandbox(
                    port=0, providers_file=tmp_path / f"providers-{tag}.yaml"
                ).run_in_thread()
            )
            platforms = sandboxes.enter_context(
                PublishingSandbox(port=0, processing_seconds=PROCESSING_SECONDS).run_in_thread()
            )
            oauth.sandbox.register_token_sink(platforms.sandbox.token_sink)
            env_file = tmp_path / f"publishing-{tag}.env"
            env_file.write_text(
                "".join(f"{name}={value}\n" for name, value in oauth.sandbox.environment().items())
            )
            bases = {f"{p}_api_base": platforms.api_base for p in PUBLISHING_PROVIDERS}
            client = temporal_env.client
            settings = make_settings(
                _env_file=env_file,
                database_url=engine.url.render_as_string(hide_password=False),
                temporal_address=client.service_client.config.target_host,
                temporal_task_queue=task_queue(),
                public_base_url=api_url,
                webhook_allowed_networks="127.0.0.0/8",
                publish_poll_interval="200ms",
                **(bases | s3_settings(s3) | overrides),
            )
            async with serving(settings, engine, keyring, client, port=port) as (
                url,
                raw_key,
                context,
            ):
                yield PublishingStack(
                    settings,
                    engine,
                    keyring,
                    client,
                    url,
                    raw_key,
                    context,
                    oauth=oauth,
                    platforms=platforms,
                    s3=s3,
                )

    yield build


@pytest_asyncio.fixture(loop_scope="session")
async def publishing_stack(
    publishing_stack_factory: Callable[
        ..., contextlib.AbstractAsyncContextManager[PublishingStack]
    ],
) -> AsyncIterator[PublishingStack]:
    async with publishing_stack_factory() as stack:
        yield stack
