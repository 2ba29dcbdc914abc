"""The single registration point: every capability Relay runs, by name.

A capability has the same name in every layer (docs/adding-a-capability.md), and each
layer's module exports what the layer above reads:

    api/routes/<name>.py or api/routes/<name>/   `routers`: its FastAPI routers
    workflows/<name>.py                          `WORKFLOWS`: its workflow classes
    activities/<name>.py                         `ACTIVITIES`: its activity class, with
                                                 `from_context(WorkerContext)` and `activities()`;
                                                 optional `DEDICATED_WORKERS`: builders of workers
                                                 on task queues of their own (files' processing)
    workflows/clients/<name>.py                  optional `start_long_lived(client, settings)`:
                                                 workflows that must always run (the worker
                                                 starts them and restarts one that ends), and
                                                 `long_lived_workflow_ids(settings)`: their ids,
                                                 which /v1/runs refuses to cancel

The API app, the worker and the workflow registry iterate this tuple and import those
modules by name, so adding a capability is one line here and nothing in `relay/`
imports upward.
"""

from __future__ import annotations

CAPABILITIES: tuple[str, ...] = (
    "webhooks",
    "oauth",
    "inbound",
    "billing",
    "payments",
    "files",
    "notifications",
    "calendar",
    "publishing",
)
