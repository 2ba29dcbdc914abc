"""NotificationWorkflow, NotificationDispatchWorkflow and VerificationWorkflow, against the
SendGrid, Twilio and FCM sandboxes (in threads of this process).

- NotificationWorkflow sms-fails-email-delivers: POST /v1/notifications (sms, then email);
  the SMS fails at the carrier (Twilio's signed `failed` callback), the email is delivered
  (SendGrid's signed events): it ends DELIVERED by email.
- NotificationDispatchWorkflow send-and-replayed-event: an email and an SMS sent and
  delivered, one pump completed, then one of SendGrid's recorded events replayed through
  POST /v1/inbound-events/{id}/replay, which the dispatcher applies (`provider_event`,
  `apply_provider_events`). Long-lived: recorded mid-flight.
- VerificationWorkflow send-wrong-right: POST /v1/verifications (sms), a wrong check, then
  the code read from the queued message: VERIFIED. The run lives on for the send window,
  so it is recorded mid-flight.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from tests.histories.scenarios import Recording, RecordingStack, scenario, until

EMAIL = {"to": "ada@example.com", "subject": "Your order", "text": "It shipped"}


@contextmanager
def _providers(rec: Recording) -> Iterator[tuple[Any, dict[str, str]]]:
    """The sandboxes in threads: the SendGrid server (its webhook is registered once the
    stack's URL is known) and the settings pointing Relay at all three."""
    from relay.sandbox.fcm import FcmSandbox
    from relay.sandbox.sendgrid import SendGridSandbox
    from relay.sandbox.twilio import TwilioSandbox

    with ExitStack() as running:
        sendgrid = running.enter_context(SendGridSandbox(port=0, event_delay=0).run_in_thread())
        twilio = running.enter_context(TwilioSandbox(port=0, callback_delay=0).run_in_thread())
        credentials = rec.data_dir / f"fcm-{uuid.uuid4().hex[:8]}.json"
        fcm = running.enter_context(
            FcmSandbox(port=0, credentials_file=credentials).run_in_thread()
        )
        environment = (
            sendgrid.sandbox.environment()
            | twilio.sandbox.environment()
            | fcm.sandbox.environment()
        )
        yield sendgrid, {name.lower(): value for name, value in environment.items()}


def _hear_sendgrid(sendgrid: Any, stack: RecordingStack) -> None:
    # Twilio's callbacks follow PUBLIC_BASE_URL (the stack's URL); SendGrid's go where
    # its webhook settings say.
    sendgrid.state.add_webhook(f"{stack.api_url}/webhooks/sendgrid/events")


async def _status(http: Any, notification_id: str, *wanted: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        response = await http.get(f"/v1/notifications/{notification_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data if data["status"] in wanted else None

    found: dict[str, Any] = await until(settled)  # type: ignore[assignment]
    return found


@scenario("NotificationWorkflow", "sms-fails-email-delivers")
async def sms_fails_email_delivers(rec: Recording) -> list[str]:
    from relay.notifications.contracts import notification_workflow_id

    with _providers(rec) as (sendgrid, settings):
        async with rec.stack(**settings) as stack:
            _hear_sendgrid(sendgrid, stack)
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post(
                    "/v1/notifications",
                    json={
                        "userId": "user-rec",
                        "channels": ["sms", "email"],
                        # Twilio accepts it, then the carrier fails it (30008).
                        "sms": {"to": "+15005550011", "body": "Your order shipped"},
                        "email": EMAIL,
                    },
                )
                created.raise_for_status()
                notification_id = created.json()["data"]["id"]
                done = await _status(http, notification_id, "DELIVERED", "FAILED")
                if (done["status"], done["result"]["channel"]) != ("DELIVERED", "email"):
                    raise RuntimeError(f"expected DELIVERED by email, got {done['status']}")
            workflow_id = notification_workflow_id(notification_id)
            await stack.client.get_workflow_handle(workflow_id).result()
            return [workflow_id]


@scenario("NotificationDispatchWorkflow", "send-and-replayed-event")
async def send_and_replayed_event(rec: Recording) -> list[str]:
    from relay.notifications.contracts import dispatcher_workflow_id

    with _providers(rec) as (sendgrid, settings):
        async with rec.stack(**settings) as stack:
            _hear_sendgrid(sendgrid, stack)
            handle = stack.client.get_workflow_handle(
                dispatcher_workflow_id(stack.settings.temporal_task_queue)
            )

            async def dispatcher_state() -> dict[str, Any]:
                state = await handle.query("state")
                return state if isinstance(state, dict) else {}

            async with stack.http() as http:  # type: ignore[attr-defined]
                sent = [
                    await http.post("/v1/notifications/email", json=EMAIL),
                    await http.post(
                        "/v1/notifications/sms",
                        json={"to": "+14155550123", "body": "Your order shipped"},
                    ),
                ]
                for response in sent:
                    response.raise_for_status()
                    await _status(http, response.json()["data"]["id"], "DELIVERED")

                # A pump ends after its budget (a minute): wait for one, so the history
                # holds the loop starting the next.
                async def pumped() -> bool:
                    return (await dispatcher_state()).get("pumps", 0) >= 1

                await until(pumped, timeout=150)

                # An event the webhook route applied already, handed to the dispatcher
                # again by an operator's replay: it applies it (idempotently).
                events = await http.get("/v1/inbound-events", params={"provider": "sendgrid"})
                events.raise_for_status()
                replay = await http.post(
                    f"/v1/inbound-events/{events.json()['data'][0]['id']}/replay"
                )
                replay.raise_for_status()

                # A replayed duplicate changes nothing (`applied` stays 0): wait for the
                # dispatcher's apply activity itself to complete.
                async def applied() -> bool:
                    scheduled: set[int] = set()
                    async for event in handle.fetch_history_events():
                        attributes = event.activity_task_scheduled_event_attributes
                        if attributes.activity_type.name == "apply_provider_events":
                            scheduled.add(event.event_id)
                        completed = event.activity_task_completed_event_attributes
                        if completed.scheduled_event_id in scheduled:
                            return True
                    return False

                await until(applied)
            return [handle.id]


@scenario("VerificationWorkflow", "send-wrong-right")
async def send_wrong_right(rec: Recording) -> list[str]:
    import re

    from sqlalchemy import select

    from relay.notifications import repository
    from relay.notifications.contracts import verification_workflow_id

    to = "+14155550142"
    with _providers(rec) as (sendgrid, settings):
        async with rec.stack(**settings) as stack:
            _hear_sendgrid(sendgrid, stack)
            engine, keyring = stack.context.engine, stack.context.keyring
            async with stack.http() as http:  # type: ignore[attr-defined]
                created = await http.post("/v1/verifications", json={"channel": "sms", "to": to})
                created.raise_for_status()
                verification_id = created.json()["data"]["id"]

                # The code, read from the queued message as the send pump reads it.
                table = repository.notifications
                with engine.connect() as connection:
                    row = connection.execute(select(table).where(table.c.to_address == to)).one()
                content = repository.open_content(keyring, row.id, row.content)
                found = re.search(r"\b([0-9]{6})\b", content.get("body") or content["text"])
                if found is None:
                    raise RuntimeError("no code in the queued message")
                code = found.group(1)

                missed = await http.post(
                    "/v1/verifications/check",
                    json={"to": to, "code": f"{(int(code) + 1) % 10**6:06d}"},
                )
                missed.raise_for_status()
                hit = await http.post("/v1/verifications/check", json={"to": to, "code": code})
                hit.raise_for_status()
                if (missed.json()["data"]["valid"], hit.json()["data"]["valid"]) != (False, True):
                    raise RuntimeError("expected the wrong code refused and the right one valid")
                await _status(http, row.id, "DELIVERED")
            # It ends only when its send window closes (10 minutes): recorded mid-flight.
            return [verification_workflow_id(verification_id)]
