"""Verification codes: `POST /v1/verifications` sends one, `POST /v1/verifications/check`
checks one. Each destination has one `verification-{id}` workflow (the id is a keyed hash
of the destination), the single writer of its codes and limits.

A send records the destination (sealed) and then sends the workflow's `send` update by
update-with-start; the code is made and queued by the workflow's activity and never
reaches this process. A check turns the submitted code into its keyed digest here, so the
code never enters the workflow's history either.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from api.deps import EngineDep, KeyringDep, SettingsDep, TemporalDep, require_api_key
from api.envelope import Envelope, error_responses, ok
from api.schemas.notifications_verifications import (
    Verification,
    VerificationCheck,
    VerificationChecked,
    VerificationCreate,
)
from relay.errors import ErrorCode, RelayError
from relay.notifications import providers
from relay.notifications.contracts import Channel, VerificationStatus
from relay.notifications.verification import VerificationKey, destination_kind, save_destination
from workflows.clients import WorkflowClosed
from workflows.clients.notifications import check_verification, send_verification

router = APIRouter(
    prefix="/v1/verifications", tags=["verifications"], dependencies=[Depends(require_api_key)]
)


async def get_verification_key(request: Request) -> VerificationKey:
    """The process's verification key, derived once from the settings."""
    key = getattr(request.app.state, "verification_key", None)
    if key is None:
        key = VerificationKey.from_settings(request.app.state.settings)
        request.app.state.verification_key = key
    return key  # type: ignore[no-any-return]


VerificationKeyDep = Annotated[VerificationKey, Depends(get_verification_key)]


# --- routes ----------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    summary="Send a verification code by SMS, WhatsApp or email",
    description="201 when a new code was sent; 200 when the destination's code was still "
    "live and was sent again (the same code, valid 10 minutes from this send). A code "
    "takes 5 checks; a destination takes 5 sends in 10 minutes, then 429 "
    "TOO_MANY_ATTEMPTS with `retryAfterSeconds` in `details`. An invalid number (not "
    "E.164) or address is 422 naming `to`.",
    response_model=Envelope[Verification],
    responses=error_responses(400, 401, 422, 429, 502, 503),
)
async def send_code(
    body: VerificationCreate,
    response: Response,
    client: TemporalDep,
    settings: SettingsDep,
    engine: EngineDep,
    keyring: KeyringDep,
    key: VerificationKeyDep,
) -> dict[str, Any]:
    channel = Channel(body.channel)
    if not providers.configured(settings, channel):
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            f"no provider is configured for {channel.value}",
            {"channel": channel.value},
        )
    # The schema has normalized `to`.
    verification_id = key.verification_id(destination_kind(body.to), body.to)
    await asyncio.to_thread(save_destination, engine, keyring, verification_id, channel, body.to)
    try:
        view = await send_verification(client, settings, verification_id, channel)
    except WorkflowClosed:
        # The run ended between the server's choice and the update: the next send starts
        # a new one.
        view = await send_verification(client, settings, verification_id, channel)
    response.status_code = 201 if view.new_code else 200
    return ok(
        Verification(
            id=view.verification_id,
            channel=body.channel,
            status=VerificationStatus(view.status),
            expires_at=view.expires_at,
            sends_left=view.sends_left,
        )
    )


@router.post(
    "/check",
    summary="Check a verification code",
    description="`valid` is true once, for the right code while it is live; the code is "
    "then spent. A code past its 10 minutes, or a destination with no code, is "
    "`valid: false`. The sixth check of one code is 429 TOO_MANY_ATTEMPTS, even with the "
    "right code. Codes are compared in constant time.",
    response_model=Envelope[VerificationChecked],
    responses=error_responses(401, 422, 429, 503),
)
async def check_code(
    body: VerificationCheck, client: TemporalDep, key: VerificationKeyDep
) -> dict[str, Any]:
    verification_id = key.verification_id(destination_kind(body.to), body.to)
    result = await check_verification(
        client, verification_id, key.digest(verification_id, body.code)
    )
    return ok(
        VerificationChecked(
            valid=result.valid,
            status=VerificationStatus(result.status),
            checks_left=result.checks_left,
        )
    )
