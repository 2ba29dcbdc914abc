"""Email end to end: the API queues, the pump sends through SendGrid's sandbox (or SMTP's),
the signed Event Webhook moves the notification to its final status."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.notifications.conftest import NotificationStack, sandbox_get

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _status(stack: NotificationStack, notification_id: str, wanted: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def check() -> dict[str, Any] | None:
        data = await stack.get(notification_id)
        seen[:] = [data]
        return data if data["status"] == wanted else None

    try:
        return await eventually(check, timeout=30)  # type: ignore[return-value]
    except AssertionError:
        raise AssertionError(f"not {wanted}: {seen}") from None


async def test_an_email_through_sendgrid_is_delivered_with_every_event_kept(
    notifications_stack: Any,
) -> None:
    async with notifications_stack() as stack:
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications/email",
                json={"to": "Ada@Example.com", "subject": "Hi", "text": "Hello", "userId": "u1"},
            )
        assert response.status_code == 202, response.text
        notification = response.json()["data"]
        done = await _status(stack, notification["id"], "DELIVERED")
        assert done["provider"] == "sendgrid"
        assert done["to"] == "ada@example.com"
        assert done["providerMessageId"]
        events = [(e["provider"], e["event"]) for e in done["events"]]
        assert ("relay", "send") in events
        assert ("sendgrid", "processed") in events and ("sendgrid", "delivered") in events
        captured = await sandbox_get(stack.sendgrid.api_base, "/_sandbox/messages")
        assert [m["subject"] for m in captured["data"]] == ["Hi"]


async def _webhook_event_types(stack: NotificationStack) -> list[str]:
    from sqlalchemy import select

    from relay.models.webhooks import WebhookEvent

    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    with stack.engine.connect() as connection:
        return list(connection.execute(select(table.c.type)).scalars())


async def test_a_bounce_suppresses_the_address_and_the_next_send_is_refused_unless_critical(
    notifications_stack: Any,
) -> None:
    address = "bounce@example.com"
    async with notifications_stack() as stack:
        async with stack.http() as http:
            first = await http.post(
                "/v1/notifications/email", json={"to": address, "subject": "s", "text": "t"}
            )
            bounced = await _status(stack, first.json()["data"]["id"], "BOUNCED")
            assert bounced["finalAt"]
            listed = await http.get("/v1/suppressions", params={"address": address})
            assert [(s["channel"], s["reason"]) for s in listed.json()["data"]] == [
                ("email", "bounce")
            ]
            again = await http.post(
                "/v1/notifications/email", json={"to": address, "subject": "s", "text": "t"}
            )
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "RECIPIENT_SUPPRESSED"
            critical = await http.post(
                "/v1/notifications/email",
                json={"to": address, "subject": "s", "text": "t", "critical": True},
            )
            assert critical.status_code == 202
            removed = await http.delete(
                "/v1/suppressions", params={"channel": "email", "address": address}
            )
            assert removed.status_code == 204
        assert "notification.bounced" in await eventually(lambda: _webhook_event_types(stack))  # type: ignore[operator]


async def test_sendgrid_failing_without_acting_hands_the_email_to_smtp(
    notifications_stack: Any,
) -> None:
    async with notifications_stack() as stack:
        async with httpx.AsyncClient(base_url=stack.sendgrid.api_base) as sandbox:
            (await sandbox.post("/_sandbox/faults", json={"count": 1})).raise_for_status()
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications/email",
                json={"to": "grace@example.com", "subject": "Fallback", "html": "<b>hi</b>"},
            )
        sent = await _status(stack, response.json()["data"]["id"], "SENT")
        assert sent["provider"] == "smtp"
        captured = await sandbox_get(stack.smtp.url, "/_sandbox/messages")
        assert [m["subject"] for m in captured["data"]] == ["Fallback"]
        nothing = await sandbox_get(stack.sendgrid.api_base, "/_sandbox/messages")
        assert nothing["data"] == []


async def test_templates_render_locally_for_smtp_and_an_unknown_template_is_refused(
    notifications_stack: Any, email_templates: Any
) -> None:
    async with notifications_stack(sendgrid=False, email_templates_dir=email_templates) as stack:
        async with stack.http() as http:
            unknown = await http.post(
                "/v1/notifications/email", json={"to": "a@example.com", "templateId": "nope"}
            )
            assert unknown.status_code == 400
            assert unknown.json()["error"]["code"] == "TEMPLATE_NOT_FOUND"
            response = await http.post(
                "/v1/notifications/email",
                json={
                    "to": "a@example.com",
                    "templateId": "welcome",
                    "templateData": {"name": "<script>x</script>"},
                },
            )
        assert response.status_code == 202
        await _status(stack, response.json()["data"]["id"], "SENT")
        captured = await sandbox_get(stack.smtp.url, "/_sandbox/messages")
        (message,) = captured["data"]
        assert message["subject"] == "Welcome, <script>x</script>"
        assert "&lt;script&gt;" in message["html"] and "<script>" not in message["html"]


async def test_bad_input_is_refused_before_anything_is_queued(notifications_stack: Any) -> None:
    async with notifications_stack(sendgrid=False, smtp=False) as stack:
        async with stack.http() as http:
            bad = await http.post(
                "/v1/notifications/email",
                json={"to": "not-an-address", "subject": "s", "text": "t"},
            )
            assert bad.status_code == 422
            assert "to" in str(bad.json()["error"]["details"])
            unconfigured = await http.post(
                "/v1/notifications/email", json={"to": "a@example.com", "subject": "s", "text": "t"}
            )
            assert unconfigured.status_code == 400
            assert unconfigured.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
            listed = await http.get("/v1/notifications")
            assert listed.json()["data"] == []


async def test_bulk_email_goes_out_as_one_sendgrid_request_per_thousand_recipients(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(smtp=False) as stack:
        recipients = [{"to": f"user{i}@example.com", "templateData": {"n": i}} for i in range(1200)]
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications/email/bulk",
                json={"recipients": recipients, "templateId": "d-welcome"},
            )
        assert response.status_code == 202, response.text
        result = response.json()["data"]
        assert result["queued"] == 1200 and result["refused"] == 0

        def captured() -> list[Any] | None:
            data = stack.sendgrid.state.messages()
            return data if len(data) == 1200 else None

        messages = await eventually(captured, timeout=60)
        assert len({m["messageId"] for m in messages}) == 2  # type: ignore[union-attr]

        async def delivered() -> bool:
            async with stack.http() as http:
                page = await http.get(
                    "/v1/notifications",
                    params={"batchId": result["batchId"], "status": "DELIVERED", "limit": 200},
                )
            return len(page.json()["data"]) == 200

        await eventually(delivered, timeout=60)


async def test_a_forged_event_webhook_is_refused_and_nothing_is_recorded(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(smtp=False, twilio=False, fcm=False) as stack:
        body = b'[{"email":"a@example.com","event":"delivered","sg_event_id":"x1","timestamp":1}]'
        async with stack.http(authenticated=False) as http:
            response = await http.post(
                "/webhooks/sendgrid/events",
                content=body,
                headers={
                    "X-Twilio-Email-Event-Webhook-Signature": "MEUCIQ==",
                    "X-Twilio-Email-Event-Webhook-Timestamp": "1",
                },
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "INVALID_SIGNATURE"
            events = await http.get(
                "/v1/inbound-events",
                params={"provider": "sendgrid"},
                headers={"Authorization": f"Bearer {stack.api_key}"},
            )
        assert events.json()["data"] == []


async def test_one_idempotency_key_is_one_request(notifications_stack: Any) -> None:
    key = f"welcome-{uuid.uuid4().hex}"
    body = {"to": "ada@example.com", "subject": "Hi", "text": "Hello", "idempotencyKey": key}
    async with notifications_stack(smtp=False, twilio=False, fcm=False) as stack:
        async with stack.http() as http:
            first = await http.post("/v1/notifications/email", json=body)
            again = await http.post("/v1/notifications/email", json=body)
            other = await http.post(
                "/v1/notifications/email", json={**body, "text": "Something else"}
            )
        assert first.status_code == 202 and again.status_code == 200
        assert again.json()["data"] == {
            **first.json()["data"],
            "duplicate": True,
            "status": again.json()["data"]["status"],
        }
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "CONFLICT"
        await _status(stack, first.json()["data"]["id"], "DELIVERED")
        assert len(stack.sendgrid.state.messages()) == 1
