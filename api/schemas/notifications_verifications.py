"""Verification codes on the wire (camelCase). A code is never in a response."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from api.envelope import ApiModel
from relay.notifications.contracts import Channel, VerificationStatus
from relay.notifications.verification import CODE_DIGITS, normalize, normalize_any


class VerificationCreate(ApiModel):
    channel: Literal["sms", "whatsapp", "email"] = Field(
        description="How the code goes: `sms` and `whatsapp` share a number's limits."
    )
    to: str = Field(
        min_length=3,
        max_length=320,
        description="An E.164 number (`+14155550123`) for sms and whatsapp, an address for email.",
    )

    @field_validator("to")
    @classmethod
    def _destination(cls, value: str, info: ValidationInfo) -> str:
        channel = info.data.get("channel")
        if channel is None:
            return value  # the channel's own error names it
        # The message never repeats the value.
        return normalize(Channel(channel), value)[1]


class VerificationCheck(ApiModel):
    to: str = Field(min_length=3, max_length=320, description="Where the code was sent.")
    code: str = Field(
        pattern=rf"^[0-9]{{{CODE_DIGITS}}}$", description=f"The {CODE_DIGITS}-digit code."
    )

    @field_validator("to")
    @classmethod
    def _destination(cls, value: str) -> str:
        return normalize_any(value)[1]


class Verification(ApiModel):
    id: str = Field(description="Stable per destination: a keyed hash of it.")
    channel: Literal["sms", "whatsapp", "email"]
    status: VerificationStatus
    expires_at: datetime | None = Field(description="When the code sent stops checking.")
    sends_left: int = Field(description="Sends still allowed in the current 10 minutes.")


class VerificationChecked(ApiModel):
    valid: bool
    status: VerificationStatus
    checks_left: int = Field(description="Checks the current code still takes.")
