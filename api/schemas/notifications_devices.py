"""Push devices on the wire (camelCase). A token is credential-like (whoever holds it can
push to the device), so responses show only its last characters."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.envelope import ApiModel
from relay.models.notifications import Device
from relay.notifications.devices import MAX_TOKEN_LENGTH, MAX_USER_ID_LENGTH, Platform

# Printable ASCII without spaces: the alphabet of FCM, APNs and web push tokens.
TOKEN_PATTERN = r"^[!-~]+$"  # noqa: S105 - a pattern
# How much of a token a response shows; shorter tokens show nothing.
VISIBLE_TOKEN_CHARS = 8
MASK = "…"


def mask_token(token: str) -> str:
    if len(token) <= 2 * VISIBLE_TOKEN_CHARS:
        return MASK
    return MASK + token[-VISIBLE_TOKEN_CHARS:]


class DeviceCreate(ApiModel):
    user_id: str = Field(min_length=1, max_length=MAX_USER_ID_LENGTH, examples=["user-42"])
    token: str = Field(
        min_length=1,
        max_length=MAX_TOKEN_LENGTH,
        pattern=TOKEN_PATTERN,
        description="The push token the platform's SDK gave the app (FCM registration token).",
    )
    platform: Platform = Field(description="`ios`, `android` or `web`.")


class DeviceOut(ApiModel):
    token: str = Field(
        description=f"Masked: only the last {VISIBLE_TOKEN_CHARS} characters are shown.",
        examples=[MASK + "Xb7fQ2kZ"],
    )
    user_id: str
    platform: Platform
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            token=mask_token(device.token),
            user_id=device.user_id,
            platform=Platform(device.platform),
            created_at=device.created_at,
            updated_at=device.updated_at,
        )
