"""A multi-channel notification falls back to the next channel when one fails, and when one
is not delivered within NOTIFICATION_FALLBACK_AFTER."""

from __future__ import annotations

from typing import Any

import pytest

from tests.notifications.test_sms_push import wait_status

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMAIL = {"to": "ada@example.com", "subject": "Your code", "text": "It is here"}


async def test_a_failed_sms_falls_back_to_email(notifications_stack: Any) -> None:
    async with notifications_stack(smtp=False, fcm=False) as stack:
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications",
                json={
                    "userId": "u1",
                    "channels": ["sms", "email"],
                    "sms": {"to": "+15005550011", "body": "hi"},
                    "email": EMAIL,
                },
            )
            assert response.status_code == 202, response.text
            parent_id = response.json()["data"]["id"]
            done = await wait_status(stack, parent_id, "DELIVERED", "FAILED")
            assert done["status"] == "DELIVERED"
            assert done["result"]["channel"] == "email"
            assert done["provider"] == "sendgrid"
            children = await http.get("/v1/notifications", params={"userId": "u1"})
        by_channel = {
            n["channel"]: n for n in children.json()["data"] if n["parentId"] == parent_id
        }
        assert by_channel["sms"]["status"] == "FAILED"
        assert by_channel["email"]["status"] == "DELIVERED"


async def test_an_sms_not_delivered_in_time_falls_back_and_push_without_devices_is_skipped(
    notifications_stack: Any,
) -> None:
    # Twilio's callbacks come a minute late: the SMS stays SENT past the 2 s deadline.
    async with notifications_stack(
        smtp=False, twilio_delay=60, notification_fallback_after="2s"
    ) as stack:
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications",
                json={
                    "userId": "u2",
                    "channels": ["push", "sms", "email"],
                    "push": {"title": "T", "body": "B"},
                    "sms": {"to": "+14155550123", "body": "hi"},
                    "email": EMAIL,
                },
            )
            parent_id = response.json()["data"]["id"]
            done = await wait_status(stack, parent_id, "DELIVERED", "FAILED")
        assert done["status"] == "DELIVERED"
        assert done["result"]["channel"] == "email"


async def test_every_channel_failing_fails_the_notification(notifications_stack: Any) -> None:
    async with notifications_stack(smtp=False, fcm=False) as stack:
        async with stack.http() as http:
            response = await http.post(
                "/v1/notifications",
                json={
                    "channels": ["sms", "email"],
                    "sms": {"to": "+15005550011", "body": "hi"},
                    "email": {**EMAIL, "to": "bounce@example.com"},
                },
            )
            done = await wait_status(stack, response.json()["data"]["id"], "DELIVERED", "FAILED")
        assert done["status"] == "FAILED"
        assert done["errorCode"] == "EMAIL_BOUNCED"
