"""Notifications fixtures: the provider sandboxes (SendGrid, SMTP, Twilio, FCM) in threads of
this process, and a stack (API + worker) pointed at them, whose public URL is known before
it starts so the sandboxes' signed callbacks reach it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.sandbox.fcm import FcmSandbox
from relay.sandbox.sendgrid import SendGridSandbox
from relay.sandbox.smtp import SmtpSandbox
from relay.sandbox.twilio import TwilioSandbox
from relay.settings import Settings
from tests.conftest import Stack, free_port, serving, task_queue


@dataclass
class NotificationStack(Stack):
    sendgrid: Any = None
    smtp: Any = None
    twilio: Any = None
    fcm: Any = None

    async def get(self, notification_id: str) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get(f"/v1/notifications/{notification_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


def _settings_from(environment: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in environment.items()}


@pytest_asyncio.fixture(loop_scope="session")
async def notifications_stack(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> AsyncIterator[Callable[..., contextlib.AbstractAsyncContextManager[NotificationStack]]]:
    """A factory: `async with notifications_stack(sendgrid=True, …, **settings) as stack`."""

    @contextlib.asynccontextmanager
    async def build(
        *,
        sendgrid: bool = True,
        smtp: bool = True,
        twilio: bool = True,
        fcm: bool = True,
        twilio_delay: float = 0.0,
        **overrides: Any,
    ) -> AsyncIterator[NotificationStack]:
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        with contextlib.ExitStack() as sandboxes:
            environment: dict[str, str] = {}
            servers: dict[str, Any] = {}
            if sendgrid:
                servers["sendgrid"] = sandboxes.enter_context(
                    SendGridSandbox(
                        port=0,
                        event_delay=0,
                        webhook_url=f"{api_url}/webhooks/sendgrid/events",
                        key_file=tmp_path / f"sendgrid-{uuid.uuid4().hex[:6]}.pem",
                    ).run_in_thread()
                )
                environment |= servers["sendgrid"].sandbox.environment()
            if smtp:
                servers["smtp"] = sandboxes.enter_context(
                    SmtpSandbox(port=0, http_port=0).run_in_thread()
                )
                environment |= servers["smtp"].sandbox.environment()
            if twilio:
                servers["twilio"] = sandboxes.enter_context(
                    TwilioSandbox(
                        port=0,
                        callback_delay=twilio_delay,
                        incoming_url=f"{api_url}/webhooks/twilio/incoming",
                    ).run_in_thread()
                )
                environment |= servers["twilio"].sandbox.environment()
            if fcm:
                servers["fcm"] = sandboxes.enter_context(
                    FcmSandbox(
                        port=0, credentials_file=tmp_path / f"fcm-{uuid.uuid4().hex[:6]}.json"
                    ).run_in_thread()
                )
                environment |= servers["fcm"].sandbox.environment()
            environment.setdefault("EMAIL_FROM", "relay@example.com")
            client = temporal_env.client
            settings = make_settings(
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
                yield NotificationStack(
                    settings,
                    engine,
                    keyring,
                    client,
                    url,
                    raw_key,
                    context,
                    sendgrid=servers.get("sendgrid"),
                    smtp=servers.get("smtp"),
                    twilio=servers.get("twilio"),
                    fcm=servers.get("fcm"),
                )

    yield build


async def sandbox_get(base: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.get(path)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def email_templates(tmp_path: Path) -> Path:
    """EMAIL_TEMPLATES_DIR with a `welcome` template."""
    folder = tmp_path / "templates" / "welcome"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Welcome, {{ name }}")
    (folder / "body.html").write_text("<p>Hello {{ name }}</p>")
    (folder / "body.txt").write_text("Hello {{ name }}")
    return folder.parent
