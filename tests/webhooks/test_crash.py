"""A worker killed with SIGKILL mid fan-out loses nothing: a new worker delivers everything."""

from __future__ import annotations

import signal
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from relay.crypto import Keyring
from relay.settings import Settings
from relay.webhooks.contracts import dispatcher_workflow_id
from relay.webhooks.publish import publish_event
from relay.webhooks.signing import message_id
from tests.conftest import eventually, task_queue
from tests.webhooks.conftest import Receiver
from tests.webhooks.helpers import D, create_endpoint

ENDPOINTS = 10
EVENTS = 60


async def test_sigkill_mid_fan_out_then_every_delivery_arrives(
    temporal_env: WorkflowEnvironment,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
    run_worker_process: Callable[[Settings], object],
    receiver: Receiver,
) -> None:
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=temporal_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
        webhook_allowed_networks="127.0.0.0/8",
        webhook_lease="3s",
        webhook_timeout="2s",
        webhook_concurrency=32,
        webhook_batch_size=50,
    )
    names = [f"crash{n}" for n in range(ENDPOINTS)]
    for name in names:
        receiver.delay[name] = 0.25  # slow receivers: the fan-out takes a few seconds
        create_endpoint(engine, keyring, receiver.url(name), ["bulk.*"])
    for n in range(EVENTS):
        publish_event(engine, "bulk.created", {"n": n})
    with engine.connect() as connection:
        ids = {message_id(row.id) for row in connection.execute(select(D.c.id))}
    assert len(ids) == ENDPOINTS * EVENTS

    first = run_worker_process(settings)
    await eventually(lambda: len(receiver.received) >= 50, timeout=60)
    first.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    first.wait()  # type: ignore[attr-defined]
    at_kill = len(receiver.ids())
    assert at_kill < len(ids), "the fan-out finished before the kill; nothing was proven"

    second = run_worker_process(settings)
    await eventually(lambda: receiver.ids() >= ids, timeout=120, interval=0.5)

    def all_delivered() -> bool:
        with engine.connect() as connection:
            return (
                connection.execute(
                    select(func.count()).select_from(D).where(D.c.status != "DELIVERED")
                ).scalar_one()
                == 0
            )

    await eventually(all_delivered, timeout=30)
    assert receiver.ids() == ids  # nothing unknown was sent
    second.terminate()  # type: ignore[attr-defined]
    second.wait()  # type: ignore[attr-defined]
    await temporal_env.client.get_workflow_handle(
        dispatcher_workflow_id(settings.temporal_task_queue)
    ).terminate()
