"""SubscriptionWorkflow and InboundForwarderWorkflow, against localstripe.

- create-event-change-cancel: POST /v1/subscriptions, a signed Stripe event and its
  duplicate, a plan change, cancel at the period's end, then cancel now (it ends).
- forward-pending: an event recorded while nobody forwarded it, sent by the forwarder.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from tests.histories.scenarios import Recording, scenario, until

WEBHOOK_SECRET = "whsec_recorded_" + "r" * 24


@contextmanager
def _localstripe() -> Iterator[object]:
    from relay.sandbox.stripe import StripeSandbox

    sandbox = StripeSandbox(webhook_secret=WEBHOOK_SECRET)
    process = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready()
        yield sandbox
    finally:
        process.terminate()
        process.wait(timeout=10)


def _stripe_settings(sandbox: object) -> dict[str, object]:
    return {
        "stripe_secret_key": sandbox.api_key,  # type: ignore[attr-defined]
        "stripe_api_base": sandbox.api_base,  # type: ignore[attr-defined]
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "inbound_poll_interval": "100ms",
    }


@scenario("SubscriptionWorkflow", "create-event-change-cancel")
async def create_event_change_cancel(rec: Recording) -> list[str]:
    from relay.billing.contracts import subscription_workflow_id
    from relay.stripe_api import stripe_client
    from tests.billing.helpers import ensure_plan, signed, subscription_event

    with _localstripe() as sandbox:
        async with rec.stack(**_stripe_settings(sandbox)) as stack:
            stripe = stripe_client(stack.settings)
            price = ensure_plan(stripe)
            bigger = ensure_plan(stripe, "max-monthly", 3000)
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post(
                    "/v1/subscriptions",
                    json={
                        "userId": "user-rec",
                        "priceId": price,
                        "paymentMethodId": "pm_card_visa",
                    },
                )
                created.raise_for_status()
                data = created.json()["data"]
                event = subscription_event(data["stripeSubscriptionId"])
                for _ in range(2):  # Stripe's duplicate is dropped by the inbox
                    body, headers = signed(event, secret=WEBHOOK_SECRET)
                    (
                        await http.post("/webhooks/stripe", content=body, headers=headers)
                    ).raise_for_status()
                handle = stack.client.get_workflow_handle(subscription_workflow_id(data["id"]))

                async def synced() -> bool:
                    state = await handle.query("state")
                    return bool(state.get("events_applied") if isinstance(state, dict) else False)

                await until(synced)
                sid = data["id"]
                for path, body_json in (
                    ("change", {"priceId": bigger}),
                    ("cancel", {"atPeriodEnd": True}),
                    ("cancel", {"atPeriodEnd": False}),
                ):
                    response = await http.post(f"/v1/subscriptions/{sid}/{path}", json=body_json)
                    response.raise_for_status()
                await handle.result()
            return [subscription_workflow_id(sid)]


@scenario("InboundForwarderWorkflow", "forward-pending")
async def forward_pending(rec: Recording) -> list[str]:
    from relay.billing.inbound import stripe_target
    from relay.db import make_engine, utcnow
    from relay.inbound import repository
    from relay.inbound.contracts import forwarder_workflow_id
    from relay.stripe_api import stripe_client
    from tests.billing.helpers import outside_subscription, subscription_event

    with _localstripe() as sandbox:
        async with rec.stack(**_stripe_settings(sandbox)) as stack:
            sid = outside_subscription(stripe_client(stack.settings))
            event = subscription_event(sid)
            target, object_id = stripe_target(event, lambda _: None)
            engine = make_engine(stack.settings.sqlalchemy_url)
            # Recorded, then the API died before forwarding it: its lease ran out.
            recorded = repository.record(
                engine,
                rec.keyring,
                provider="stripe",
                event_id=event["id"],
                type=event["type"],
                payload=json.dumps(event).encode(),
                target=target,
                object_id=object_id,
                now=utcnow() - timedelta(minutes=5),
            )

            async def forwarded() -> bool:
                return str(repository.load(engine, recorded.id).status) == "FORWARDED"

            await until(forwarded)
            engine.dispose()
            return [forwarder_workflow_id(stack.settings.temporal_task_queue)]


@scenario("StripeReconcileWorkflow", "feed-missing-events")
async def feed_missing_events(rec: Recording) -> list[str]:
    from relay.billing.contracts import ReconcileInput
    from relay.stripe_api import stripe_client
    from tests.billing.helpers import outside_subscription
    from workflows.billing import StripeReconcileWorkflow

    with _localstripe() as sandbox:
        async with rec.stack(**_stripe_settings(sandbox)) as stack:
            outside_subscription(stripe_client(stack.settings))  # its events were never sent
            workflow_id = "stripe-reconcile-recorded"
            await stack.client.execute_workflow(
                StripeReconcileWorkflow.run,
                ReconcileInput(),
                id=workflow_id,
                task_queue=stack.settings.temporal_task_queue,
            )
            return [workflow_id]
