"""SMS, WhatsApp and push end to end: Twilio's signed status callbacks (out of order,
repeated), STOP replies, FCM's dead tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import eventually
from tests.notifications.conftest import NotificationStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def wait_status(
    stack: NotificationStack, notification_id: str, *wanted: str
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def check() -> dict[str, Any] | None:
        data = await stack.get(notification_id)
        seen[:] = [data]
        return data if data["status"] in wanted else None

    try:
        return await eventually(check, timeout=30)  # type: ignore[return-value]
    except AssertionError:
        raise AssertionError(f"not {wanted}: {seen}") from None


async def _post(stack: NotificationStack, path: str, body: dict[str, Any]) -> httpx.Response:
    async with stack.http() as http:
        return await http.post(path, json=body)


async def _signed_status(
    stack: NotificationStack, notification_id: str, params: dict[str, str]
) -> httpx.Response:
    """A status callback signed as Twilio signs it (the sandbox's auth token)."""
    path = f"/webhooks/twilio/status?notificationId={notification_id}"
    url = f"{stack.settings.base_url}{path}"
    token = stack.settings.twilio_auth_token
    assert token is not None
    signature = RequestValidator(token.get_secret_value()).compute_signature(url, params)
    async with stack.http(authenticated=False) as http:
        return await http.post(
            path,
            content=urlencode(params),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )


async def test_an_sms_is_delivered_and_late_or_repeated_callbacks_change_nothing(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, fcm=False) as stack:
        response = await _post(stack, "/v1/notifications/sms", {"to": "+14155550123", "body": "hi"})
        assert response.status_code == 202, response.text
        notification_id = response.json()["data"]["id"]
        delivered = await wait_status(stack, notification_id, "DELIVERED")
        sid = delivered["providerMessageId"]
        assert sid.startswith("SM") and delivered["provider"] == "twilio"
        events = len(delivered["events"])
        base = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": stack.settings.twilio_account_sid or "",
            "From": stack.settings.twilio_from_number or "",
            "To": "+14155550123",
        }
        # Twilio's "queued", arriving after "delivered" (callbacks carry no timestamp).
        late = await _signed_status(stack, notification_id, base | {"MessageStatus": "queued"})
        assert late.status_code == 200, late.text
        assert late.json()["data"]["duplicates"] == 0
        again = await _signed_status(stack, notification_id, base | {"MessageStatus": "delivered"})
        assert again.json()["data"]["duplicates"] == 1
        after = await stack.get(notification_id)
        assert after["status"] == "DELIVERED"
        # The late "queued" is kept as an event (it arrived), the repeat is not.
        assert len(after["events"]) == events + 1
        async with stack.http() as http:
            found = await http.get("/v1/notifications", params={"providerMessageId": sid})
        assert [n["id"] for n in found.json()["data"]] == [notification_id]


async def test_an_unreachable_number_ends_undelivered_with_twilios_code(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, fcm=False) as stack:
        response = await _post(stack, "/v1/notifications/sms", {"to": "+15005550010", "body": "x"})
        done = await wait_status(stack, response.json()["data"]["id"], "UNDELIVERED")
        assert done["errorCode"] == "TWILIO_30003"
        refused = await _post(stack, "/v1/notifications/sms", {"to": "+15005550001", "body": "x"})
        failed = await wait_status(stack, refused.json()["data"]["id"], "FAILED")
        assert failed["errorCode"] == "TWILIO_21211"


async def test_a_forged_status_callback_is_refused(notifications_stack: Any) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, fcm=False) as stack:
        async with stack.http(authenticated=False) as http:
            response = await http.post(
                "/webhooks/twilio/status?notificationId=x",
                content="MessageSid=SM1&MessageStatus=delivered",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": "forged",
                },
            )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_SIGNATURE"


async def test_a_stop_reply_suppresses_the_number_for_sms_and_whatsapp(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, fcm=False) as stack:
        number = "+14155550199"
        async with httpx.AsyncClient(base_url=stack.twilio.api_base) as sandbox:
            (await sandbox.post("/_sandbox/inbound", json={"from": number})).raise_for_status()

        async def suppressed() -> bool:
            async with stack.http() as http:
                listed = await http.get("/v1/suppressions", params={"channel": "phone"})
            return [s["address"] for s in listed.json()["data"]] == [number]

        await eventually(suppressed)
        refused = await _post(stack, "/v1/notifications/sms", {"to": number, "body": "x"})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "RECIPIENT_SUPPRESSED"
        whatsapp = await _post(stack, "/v1/notifications/whatsapp", {"to": number, "body": "x"})
        assert whatsapp.status_code == 409
        async with httpx.AsyncClient(base_url=stack.twilio.api_base) as sandbox:
            (
                await sandbox.post("/_sandbox/inbound", json={"from": number, "body": "START"})
            ).raise_for_status()

        async def lifted() -> bool:
            return (
                await _post(stack, "/v1/notifications/sms", {"to": number, "body": "x"})
            ).status_code == 202

        await eventually(lifted)


async def test_whatsapp_media_is_delivered_and_bad_numbers_are_422(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, fcm=False) as stack:
        response = await _post(
            stack,
            "/v1/notifications/whatsapp",
            {"to": "+14155550123", "mediaUrl": ["https://example.com/a.png"], "body": "look"},
        )
        assert response.status_code == 202, response.text
        await wait_status(stack, response.json()["data"]["id"], "DELIVERED")
        bad = await _post(stack, "/v1/notifications/sms", {"to": "4155550123", "body": "x"})
        assert bad.status_code == 422
        assert "to" in str(bad.json()["error"]["details"])


async def test_a_push_reaches_the_users_devices_and_dead_tokens_are_removed(
    notifications_stack: Any,
) -> None:
    async with notifications_stack(sendgrid=False, smtp=False, twilio=False) as stack:
        async with stack.http() as http:
            for token in ("good-device-token-1", "bad-device-token-2"):
                registered = await http.post(
                    "/v1/devices", json={"userId": "u7", "token": token, "platform": "android"}
                )
                assert registered.status_code == 201, registered.text
            response = await http.post(
                "/v1/notifications/push", json={"userId": "u7", "title": "T", "body": "B"}
            )
            sent = await wait_status(stack, response.json()["data"]["id"], "SENT")
            assert sent["provider"] == "fcm"
            assert sent["result"]["sent"] == 1 and sent["result"]["failed"] == 1
            assert sent["result"]["removedTokens"] == ["…-token-2"]
            devices = await http.get("/v1/devices", params={"userId": "u7"})
            assert len(devices.json()["data"]) == 1
            nobody = await http.post(
                "/v1/notifications/push", json={"userId": "nobody", "title": "T", "body": "B"}
            )
            failed = await wait_status(stack, nobody.json()["data"]["id"], "FAILED")
            assert failed["errorCode"] == "NO_DEVICES"
