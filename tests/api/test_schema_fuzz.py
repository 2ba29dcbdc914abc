"""Property-based requests over the whole OpenAPI schema (schemathesis) against a live API.

The API runs as in production: uvicorn on loopback, a migrated database (PostgreSQL when
TEST_DATABASE_URL is set, as in CI, else SQLite) and the Temporal dev server. Schemathesis
reads /openapi.json and sends each operation its schema's examples, boundary and negative
values (coverage phase) and random requests (fuzzing phase), with an admin API key, and
fails on:

- `not_a_server_error`: any 5xx. The contract allows 502 and 503 only for a provider or
  dependency outage, and here every dependency is up, so the run allows none;
- `status_code_conformance`: a status the schema does not document for that operation;
- `content_type_conformance`, `response_schema_conformance`: a body that is not what the
  schema documents for that status (the envelope for every error).

Seeded data (a webhook endpoint, a delivery, a run) is offered for path parameters half
of the time, so the fuzz reaches past "not found".

A worker runs the test suite's EchoWorkflow (the seeded run, so the runs routes see a live
workflow: its typed state, a real cancel) and Relay's webhook dispatcher with its real
activities, whose SSRF guard here refuses every URL: deliveries are claimed, attempted and
recorded as refused before any lookup or connection, and nothing leaves the machine. No other Relay workflow runs, so
no provider is called and no OAuth token is refreshed or revoked.

Excluded (`EXCLUDED`): routes whose contract is to act on the outside world in a way the
fuzz cannot set up.

- `POST /v1/subscriptions`: creates a Stripe customer and subscription through the
  subscription workflow; only Relay's worker runs that workflow, and it would call Stripe.
  Without it each request waits the route's 25 s for Stripe and answers 502, which would
  spend the whole budget on one operation. (Its cancel, change, pause and resume need a
  subscription, so the fuzz reaches their validation and their 404, never Stripe.)
- `POST /v1/payments`: the same for a Stripe PaymentIntent and the payment workflow (its
  confirm, capture, cancel and refunds need a payment: validation and 404 only).
- `POST /v1/invoices`: the same for a Stripe invoice and the invoice workflow (its void
  needs an invoice: validation and 404 only).
- `POST /v1/meetings`: the same for a Zoom meeting and the meeting workflow (its
  reschedule, cancel and recordings need a meeting: validation and 404 only).

The routes that call OAuth providers (an integration's refresh, credentials, disconnect)
and those acting with a connection (Google Calendar's events) stay in: they need an
integration only a real OAuth flow creates, so the fuzz reaches their validation and their
404, never a provider.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from api.app import create_app
from relay.crypto import Keyring
from relay.settings import Settings
from relay.webhooks.ssrf import IPAddress, SsrfGuard, UnsafeUrlError
from tests.conftest import ServerThread, task_queue, terminate_running
from tests.support.api import new_key
from tests.support.workflows import EchoInput, EchoWorkflow, echo_activity
from workflows.clients.webhooks import start_dispatchers
from workflows.webhooks import WORKFLOWS as WEBHOOK_WORKFLOWS

SCHEMATHESIS = Path(sys.prefix) / "bin" / "schemathesis"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# 90 operations (2026-11-27; 42 when this was first sized at 120 examples): 80 examples
# each keep the run near two minutes on this 2-core machine when it is quiet; RUN_TIMEOUT
# stops a run the machine slows, and on a timeout the test shows where the run had got to.
MAX_EXAMPLES = 80
RUN_TIMEOUT = 420
# Operations left out (schemathesis --exclude-name), each with its reason (see above).
EXCLUDED = {
    "POST /v1/subscriptions": "creates a Stripe subscription through Relay's worker",
    "POST /v1/payments": "creates a Stripe PaymentIntent through Relay's worker",
    "POST /v1/invoices": "creates a Stripe invoice through Relay's worker",
    "POST /v1/meetings": "books a Zoom meeting through Relay's worker",
}

# One database, not both: PostgreSQL when CI provides it (the production engine).
ONE_DATABASE = "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"


@dataclass
class FuzzApi:
    url: str
    key: str
    webhook_id: str
    delivery_id: str
    workflow_id: str


@pytest_asyncio.fixture(loop_scope="session")
async def fuzz_api(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[FuzzApi]:
    client = temporal_env.client
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        # The seeded endpoints' address; the dispatcher's guard refuses it (NothingLeaves).
        webhook_allowed_networks="127.0.0.1/32",
    )
    key = new_key(engine)
    app = create_app(settings, engine=engine, keyring=keyring, extra_workflows=[EchoWorkflow])
    workflow_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    await client.start_workflow(
        EchoWorkflow.run,
        EchoInput("fuzz", entity_id=workflow_id),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
    )
    webhooks = WebhookActivities(
        settings=settings, engine=engine, keyring=keyring, client=client, guard=NothingLeaves()
    )
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[*WEBHOOK_WORKFLOWS, EchoWorkflow],
        activities=[*webhooks.activities(), echo_activity],
    )
    try:
        async with worker:
            await start_dispatchers(client, settings)
            with ServerThread(app) as server:
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
                    # Two endpoints: the fuzz may delete the one it is offered, and the
                    # seeded delivery's endpoint must outlive that.
                    endpoints = []
                    for name in ("offered", "delivered"):
                        created = await http.post(
                            "/v1/webhooks",
                            json={"url": f"http://127.0.0.1:9/{name}", "events": [f"{name}.*"]},
                        )
                        assert created.status_code == 201, created.text
                        endpoints.append(created.json()["data"]["id"])
                    published = await http.post(
                        "/v1/events", json={"type": "delivered.seeded", "data": {}}
                    )
                    assert published.status_code == 202, published.text
                    deliveries = await http.get(f"/v1/webhooks/{endpoints[1]}/deliveries")
                    delivery_id = deliveries.json()["data"][0]["id"]
                yield FuzzApi(server.url, key, endpoints[0], delivery_id, workflow_id)
    finally:
        await terminate_running(client, settings.temporal_task_queue)
        await webhooks.close()


class NothingLeaves(SsrfGuard):
    """The dispatcher's guard in the fuzz: every URL and every address is refused, so an
    attempt is recorded as refused before any lookup or connection, whatever URL the fuzz
    registered."""

    def check_syntax(self, url: str) -> tuple[str, IPAddress | None]:
        raise UnsafeUrlError("the fuzz sends no webhook")

    def refusal(self, address: str | IPAddress) -> str | None:
        return f"{address}: the fuzz sends no webhook"


def _config(api: FuzzApi) -> str:
    """schemathesis.toml: seeded ids offered for path parameters half of the time."""
    return f"""
[dictionaries.webhooks]
values = ["{api.webhook_id}"]

[dictionaries.deliveries]
values = ["{api.delivery_id}"]

[dictionaries.runs]
values = ["{api.workflow_id}"]

[parameters]
"path.webhook_id" = {{ dictionary = "webhooks", probability = 0.5 }}
"path.delivery_id" = {{ dictionary = "deliveries", probability = 0.5 }}
"path.workflow_id" = {{ dictionary = "runs", probability = 0.5 }}
"""


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("database_url", [ONE_DATABASE], indirect=True)
async def test_no_request_breaks_the_http_contract(fuzz_api: FuzzApi, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(fuzz_api))
    args = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{fuzz_api.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {fuzz_api.key}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        "30",
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    for name in EXCLUDED:
        args += ["--exclude-name", name]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    lines: list[bytes] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line)
        await process.wait()

    try:
        await asyncio.wait_for(read(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        progress = b"".join(lines[-40:]).decode(errors="replace")
        raise AssertionError(
            f"schemathesis ran past {RUN_TIMEOUT}s; its last lines:\n{progress}"
        ) from None
    report = b"".join(lines).decode(errors="replace")
    elapsed = time.monotonic() - started
    print(f"schemathesis ran for {elapsed:.0f}s\n{report}")  # shown by pytest -rA / on failure
    assert process.returncode == 0, report
    # The run reached every operation (a schema the tool cannot load also exits non-zero).
    assert "Tested:" in report, report
