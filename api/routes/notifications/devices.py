"""Push devices: /v1/devices. A push to a userId goes to the tokens registered here; tokens
FCM reports dead (UNREGISTERED, SENDER_ID_MISMATCH, an invalid token) are removed by the
send pump. Tokens never come back in full: responses mask them."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from api.deps import EngineDep, KeyringDep, require_api_key
from api.envelope import DEFAULT_LIMIT, MAX_LIMIT, Envelope, Page, error_responses, ok
from api.pagination import page
from api.schemas.notifications_devices import DeviceCreate, DeviceOut
from relay.crypto import Keyring
from relay.db import as_utc
from relay.errors import ErrorCode, RelayError
from relay.models.notifications import Device
from relay.notifications import devices
from relay.notifications.devices import MAX_TOKEN_LENGTH, MAX_USER_ID_LENGTH

router = APIRouter(
    prefix="/v1/devices", tags=["notifications"], dependencies=[Depends(require_api_key)]
)

# The keyset cursor holds a token, so it is sealed rather than merely encoded.
_CURSOR_CONTEXT = "devices-cursor"


def _seal_cursor(keyring: Keyring, last: Device) -> str:
    moment = as_utc(last.created_at)
    assert moment is not None
    return keyring.seal(json.dumps([moment.isoformat(), last.token]), _CURSOR_CONTEXT)


def _open_cursor(keyring: Keyring, cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        moment, token = json.loads(keyring.open(cursor, _CURSOR_CONTEXT))
        return datetime.fromisoformat(moment), str(token)
    except Exception:  # noqa: BLE001 - any cursor Relay did not seal is the client's error
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "cursor is not valid",
            [{"field": "cursor", "in": "query", "message": "pass nextCursor unchanged"}],
        ) from None


@router.post(
    "",
    status_code=201,
    summary="Register a device's push token for a user",
    description="Registering a token again refreshes it; a token registered by another "
    "user moves to this one (a token reaches one device, and a device has one user). "
    "The token in the response is masked.",
    response_model=Envelope[DeviceOut],
    responses=error_responses(401, 422),
)
async def register_device(body: DeviceCreate, engine: EngineDep) -> dict[str, Any]:
    device = await asyncio.to_thread(
        devices.register, engine, body.user_id, body.token, body.platform
    )
    return ok(DeviceOut.of(device))


@router.get(
    "",
    summary="A user's devices",
    description="Newest registration first; tokens masked.",
    response_model=Page[DeviceOut],
    responses=error_responses(401, 422),
)
async def list_devices(
    engine: EngineDep,
    keyring: KeyringDep,
    user_id: Annotated[str, Query(alias="userId", min_length=1, max_length=MAX_USER_ID_LENGTH)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    after = _open_cursor(keyring, cursor)
    rows = await asyncio.to_thread(
        devices.list_devices, engine, user_id, limit=limit + 1, after=after
    )
    next_cursor = _seal_cursor(keyring, rows[limit - 1]) if len(rows) > limit else None
    return page([DeviceOut.of(row) for row in rows[:limit]], next_cursor)


@router.delete(
    "/{token}",
    status_code=204,
    summary="Forget a device's push token",
    description="404 NOT_FOUND when no device has that token.",
    responses=error_responses(401, 404, 422),
)
async def delete_device(
    engine: EngineDep,
    token: Annotated[str, Path(min_length=1, max_length=MAX_TOKEN_LENGTH)],
) -> Response:
    if not await asyncio.to_thread(devices.delete, engine, token):
        raise RelayError(ErrorCode.NOT_FOUND, "no device has that token")
    return Response(status_code=204)
