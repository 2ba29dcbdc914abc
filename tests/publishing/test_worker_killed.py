"""A worker killed (SIGKILL) in the middle of a publication: once a worker is back, the run
goes on where it was, and every platform got exactly one post (counted at the sandbox)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.models.oauth import Integration, IntegrationStatus
from relay.oauth.tokens import TokenStore
from relay.publishing import repository
from relay.publishing.providers import PUBLISHING_PROVIDERS
from relay.sandbox.publishing import SANDBOX_TOKENS, PublishingSandbox
from relay.settings import Settings
from relay.worker_context import WorkerContext
from tests.conftest import ServerThread, eventually, task_queue, terminate_running
from tests.publishing.conftest import ACCOUNT_METADATA, PublishingStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROVIDERS = ("twitter", "linkedin", "facebook")


def _connect(engine: Engine, keyring: Keyring, provider: str) -> str:
    integration = Integration(
        user_id="user-1",
        provider=provider,
        status=IntegrationStatus.CONNECTED,
        meta=dict(ACCOUNT_METADATA),
    )
    with Session(engine) as session:
        session.add(integration)
        session.flush()
        TokenStore(engine, keyring).put(session, integration.id, SANDBOX_TOKENS[provider], None)
        session.commit()
        return str(integration.id)


async def test_a_worker_killed_mid_publication_posts_each_target_once(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    run_worker_process: Callable[[Settings], Any],
) -> None:
    client = temporal_env.client
    with PublishingSandbox(port=0).run_in_thread() as platforms:
        settings = make_settings(
            database_url=engine.url.render_as_string(hide_password=False),
            temporal_address=client.service_client.config.target_host,
            temporal_task_queue=task_queue(),
            **{f"{p}_api_base": platforms.api_base for p in PUBLISHING_PROVIDERS},
        )
        for provider in PROVIDERS:
            _connect(engine, keyring, provider)
        # LinkedIn is down for a while: its target is still retrying when the worker dies.
        platforms.state.fail_next("linkedin", 2, 503, 2)
        _, raw_key = create_key(engine, f"test-{uuid.uuid4().hex[:8]}")
        context = WorkerContext(settings, engine, keyring, client, Ledger(engine))
        app = create_app(settings, engine=engine, keyring=keyring)
        with ServerThread(app) as server:
            stack = PublishingStack(
                settings, engine, keyring, client, server.url, raw_key, context, platforms=platforms
            )
            worker = run_worker_process(settings)
            created = await stack.publish(text="Survives a crash")
            assert created.status_code == 201, created.text
            publication_id = created.json()["data"]["id"]

            def midway() -> bool:
                rows = {r.provider: r for r in repository.targets(engine, publication_id)}
                return (
                    rows["twitter"].status == "PUBLISHED"
                    and rows["facebook"].status == "PUBLISHED"
                    and rows["linkedin"].attempts >= 1
                    and rows["linkedin"].status != "PUBLISHED"
                )

            await eventually(midway, timeout=60, interval=0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            run_worker_process(settings)
            done = await stack.settled(publication_id, timeout=120)
            await terminate_running(client, settings.temporal_task_queue)
        assert done["status"] == "PUBLISHED", done
        for provider in PROVIDERS:
            assert stack.publishes(provider) == 1, provider
        (linkedin,) = [t for t in done["targets"] if t["provider"] == "linkedin"]
        assert linkedin["attempts"] >= 2
