"""A scheduled publication's durable timer on the time-skipping server, with the real
activities against the publishing platforms sandbox and the real database: nothing is
posted before scheduledAt and the post goes out once it passes; a cancel before then posts
nothing, and a cancel after it has run is refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.publishing import PublishingActivities
from relay.crypto import Keyring
from relay.errors import RelayError
from relay.ledger import Ledger
from relay.models.oauth import Integration, IntegrationStatus
from relay.oauth.tokens import TokenStore
from relay.publishing import repository
from relay.publishing.contracts import (
    PublicationInput,
    PublicationState,
    PublicationStatus,
    TargetRef,
    publication_workflow_id,
)
from relay.publishing.providers import PUBLISHING_PROVIDERS
from relay.publishing.repository import NewPublication
from relay.sandbox.publishing import SANDBOX_TOKENS, PublishingSandbox, PublishingServer
from relay.settings import Settings
from tests.conftest import task_queue
from workflows.clients.publishing import cancel_publication
from workflows.publishing import PublicationWorkflow

DAY = timedelta(days=1)


@dataclass
class Timers:
    env: WorkflowEnvironment
    settings: Settings
    platforms: PublishingServer
    engine: Engine
    keyring: Keyring

    def connection(self, provider: str = "twitter") -> str:
        """A CONNECTED integration holding the sandbox's standing token for `provider`."""
        integration = Integration(
            user_id="user-1",
            provider=provider,
            status=IntegrationStatus.CONNECTED,
            meta={"username": "relaysandbox"},
        )
        with Session(self.engine) as session:
            session.add(integration)
            session.flush()
            TokenStore(self.engine, self.keyring).put(
                session, integration.id, SANDBOX_TOKENS[provider], None
            )
            session.commit()
            return str(integration.id)

    async def schedule(
        self, integration_id: str, at: datetime
    ) -> tuple[str, WorkflowHandle[Any, PublicationState]]:
        publication_id = str(uuid.uuid4())
        repository.insert_publication(
            self.engine,
            publication_id,
            NewPublication(
                content_id="post-1",
                user_id="user-1",
                text="Scheduled",
                link=None,
                media_file_ids=[],
                scheduled_at=at,
                idempotency_key=None,
                targets=[(integration_id, "twitter")],
            ),
        )
        # Started as workflows.clients.publishing does, less its search attributes (the
        # time-skipping server has none registered).
        handle = await self.env.client.start_workflow(
            PublicationWorkflow.run,
            PublicationInput(
                publication_id=publication_id,
                targets=[TargetRef(integration_id, "twitter")],
                scheduled_at=at.isoformat(),
            ),
            id=publication_workflow_id(publication_id),
            task_queue=self.settings.temporal_task_queue,
        )
        return publication_id, handle

    def publishes(self) -> int:
        return int(self.platforms.state.posts()["publishes"]["twitter"])

    async def now(self) -> datetime:
        return (await self.env.get_current_time()).astimezone(UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def timers(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Timers]:
    queue = task_queue()
    with PublishingSandbox(port=0).run_in_thread() as platforms:
        bases = {f"{p}_api_base": platforms.api_base for p in PUBLISHING_PROVIDERS}
        settings = make_settings(temporal_task_queue=queue, **bases)
        activities = PublishingActivities(
            settings=settings,
            engine=engine,
            keyring=keyring,
            client=time_skipping_env.client,
            ledger=Ledger(engine),
        )
        async with Worker(
            time_skipping_env.client,
            task_queue=queue,
            workflows=[PublicationWorkflow],
            activities=activities.activities(),
        ):
            yield Timers(time_skipping_env, settings, platforms, engine, keyring)
        await activities.aclose()


async def test_a_scheduled_publication_waits_for_its_time_then_publishes(timers: Timers) -> None:
    integration = timers.connection()
    publication_id, handle = await timers.schedule(integration, await timers.now() + 3 * DAY)
    await timers.env.sleep(DAY)
    assert (await handle.query(PublicationWorkflow.state)).status == "SCHEDULED"
    assert timers.publishes() == 0
    state = await handle.result()
    assert state.status == PublicationStatus.PUBLISHED
    assert timers.publishes() == 1
    row = repository.load(timers.engine, publication_id)
    assert row.status == PublicationStatus.PUBLISHED
    with pytest.raises(RelayError) as refused:
        await cancel_publication(timers.env.client, publication_id)
    assert refused.value.code == "CONFLICT"


async def test_a_canceled_publication_posts_nothing(timers: Timers) -> None:
    integration = timers.connection()
    publication_id, handle = await timers.schedule(integration, await timers.now() + 2 * DAY)
    await timers.env.sleep(timedelta(hours=1))
    state = await cancel_publication(timers.env.client, publication_id)
    assert state.status == PublicationStatus.CANCELED
    assert (await handle.result()).status == PublicationStatus.CANCELED
    await timers.env.sleep(3 * DAY)
    assert timers.publishes() == 0
    row = repository.load(timers.engine, publication_id)
    assert row.status == PublicationStatus.CANCELED
    (target,) = repository.targets(timers.engine, publication_id)
    assert target.status == "CANCELED"
