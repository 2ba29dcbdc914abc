"""PublicationWorkflow, against the publishing platforms sandbox (in this process), with
connections written straight into the database (the sandbox's standing tokens).

- partial-unpublished: X publishes, LinkedIn refuses (403): PARTIAL; then DELETE after the
  run ended, so a second run of the same id (update-with-start) deletes the post. The
  latest run is recorded.
- partial: the first run itself (publish every target at once, a failure recorded).
- scheduled-canceled: scheduledAt a year ahead, canceled before the timer fires.
- skipped-at-post: text over X's limit, so X is SKIPPED by the API and never run; LinkedIn
  publishes.

The `*-finish-activity` files are runs from before `publication-local-finish` (PUBLISHING
written by the run, every target run, finish_publication a remote activity): kept, and
replayed, for the runs of that version still open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.histories.scenarios import Recording, scenario, until

_USER = "user-rec"


@contextmanager
def _platforms() -> Iterator[tuple[Any, dict[str, object]]]:
    from relay.publishing.providers import PUBLISHING_PROVIDERS
    from relay.sandbox.publishing import PublishingSandbox

    with PublishingSandbox(port=0, processing_seconds=0.2).run_in_thread() as server:
        yield server, {f"{p}_api_base": server.api_base for p in PUBLISHING_PROVIDERS}


def _connect(stack: Any, provider: str) -> str:
    from sqlmodel import Session

    from relay.models.oauth import Integration, IntegrationStatus
    from relay.oauth.tokens import TokenStore
    from relay.sandbox.publishing import SANDBOX_TOKENS

    engine = stack.context.engine
    integration = Integration(
        user_id=_USER,
        provider=provider,
        status=IntegrationStatus.CONNECTED,
        meta={"authorUrn": "urn:li:person:8675309", "username": "relayrec"},
    )
    with Session(engine) as session:
        session.add(integration)
        session.flush()
        TokenStore(engine, stack.context.keyring).put(
            session, integration.id, SANDBOX_TOKENS[provider], None
        )
        session.commit()
        return str(integration.id)


async def _publish(stack: Any, server: Any, **body: Any) -> dict[str, Any]:
    _connect(stack, "twitter")
    _connect(stack, "linkedin")
    server.state.fail_next("linkedin", 1, 403, 1)
    async with stack.http() as http:
        created = await http.post(
            "/v1/publications",
            json={"contentId": "rec-1", "userId": _USER, "text": "Recorded"} | body,
        )
        created.raise_for_status()
        publication: dict[str, Any] = created.json()["data"]
    return publication


async def _settled(stack: Any, publication_id: str, status: str) -> None:
    async with stack.http() as http:

        async def reached() -> bool:
            answer = (await http.get(f"/v1/publications/{publication_id}")).json()["data"]
            return bool(answer["status"] == status)

        await until(reached)


@scenario("PublicationWorkflow", "partial")
async def partial(rec: Recording) -> list[str]:
    from relay.publishing.contracts import publication_workflow_id

    with _platforms() as (server, settings):
        async with rec.stack(**settings) as stack:
            publication = await _publish(stack, server)
            workflow_id = publication_workflow_id(publication["id"])
            await stack.client.get_workflow_handle(workflow_id).result()
            return [workflow_id]


@scenario("PublicationWorkflow", "partial-unpublished")
async def partial_unpublished(rec: Recording) -> list[str]:
    from relay.publishing.contracts import publication_workflow_id

    with _platforms() as (server, settings):
        async with rec.stack(**settings) as stack:
            publication = await _publish(stack, server)
            workflow_id = publication_workflow_id(publication["id"])
            await stack.client.get_workflow_handle(workflow_id).result()
            async with stack.http() as http:
                (await http.delete(f"/v1/publications/{publication['id']}")).raise_for_status()
            await _settled(stack, publication["id"], "UNPUBLISHED")
            await stack.client.get_workflow_handle(workflow_id).result()
            return [workflow_id]


@scenario("PublicationWorkflow", "scheduled-canceled")
async def scheduled_canceled(rec: Recording) -> list[str]:
    from relay.publishing.contracts import publication_workflow_id

    with _platforms() as (server, settings):
        async with rec.stack(**settings) as stack:
            publication = await _publish(stack, server, scheduledAt="2031-01-01T09:00:00Z")
            async with stack.http() as http:
                canceled = await http.post(f"/v1/publications/{publication['id']}/cancel")
                canceled.raise_for_status()
            workflow_id = publication_workflow_id(publication["id"])
            await stack.client.get_workflow_handle(workflow_id).result()
            return [workflow_id]


@scenario("PublicationWorkflow", "skipped-at-post")
async def skipped_at_post(rec: Recording) -> list[str]:
    from relay.publishing.contracts import publication_workflow_id

    with _platforms() as (_server, settings):
        async with rec.stack(**settings) as stack:
            _connect(stack, "twitter")
            _connect(stack, "linkedin")
            async with stack.http() as http:
                created = await http.post(
                    "/v1/publications",
                    json={"contentId": "rec-2", "userId": _USER, "text": "x" * 300},
                )
                created.raise_for_status()
                publication: dict[str, Any] = created.json()["data"]
            workflow_id = publication_workflow_id(publication["id"])
            await stack.client.get_workflow_handle(workflow_id).result()
            return [workflow_id]
