"""Users' push devices (the `devices` table): registered by POST /v1/devices, read by a push
to a userId, and pruned when FCM reports a token dead.

A token is a device's address, so it belongs to one user at a time: registering a token
another user had moves it (a phone changed hands, or one app logged out and another
user in). Re-registering a token, as apps do on every launch, only refreshes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.notifications import Device

devices = Device.__table__  # type: ignore[attr-defined]

# PostgreSQL cannot index a key much longer than 2,700 bytes, and the token is the key;
# real tokens (FCM, APNs, web push) are a few hundred characters at most.
MAX_TOKEN_LENGTH = 2048
MAX_USER_ID_LENGTH = 255
# Rows deleted per statement: well under every driver's bound-parameter limit.
_DELETE_CHUNK = 500


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


def valid_token(token: str) -> bool:
    """1 to MAX_TOKEN_LENGTH printable ASCII characters, no spaces (every push token's
    alphabet: FCM's, APNs' hex, web push's)."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH and all("!" <= ch <= "~" for ch in token)


def _invalid(field_name: str, message: str) -> RelayError:
    return RelayError(
        ErrorCode.VALIDATION_ERROR,
        "the request is invalid",
        [{"field": field_name, "in": "body", "message": message}],
    )


def register(engine: Engine, user_id: str, token: str, platform: Platform | str) -> Device:
    """Record `token` as `user_id`'s device (insert, or move and refresh it)."""
    if not valid_token(token):
        raise _invalid("token", f"1 to {MAX_TOKEN_LENGTH} printable characters, no spaces")
    if not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
        raise _invalid("userId", f"1 to {MAX_USER_ID_LENGTH} characters")
    try:
        platform = Platform(platform)
    except ValueError:
        raise _invalid("platform", "one of ios, android, web") from None
    now = utcnow()
    values = {
        "token": token,
        "user_id": user_id,
        "platform": platform.value,
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as connection:
        insert = _insert_for(connection)(devices).values(**values)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=[devices.c.token],
                set_={"user_id": user_id, "platform": platform.value, "updated_at": now},
            )
        )
        row = connection.execute(select(devices).where(devices.c.token == token)).one()
    return Device.model_validate(row._mapping)


def _insert_for(connection: Connection):  # type: ignore[no-untyped-def]
    """The dialect's INSERT, which has ON CONFLICT on both databases Relay runs on."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def delete(engine: Engine, token: str) -> bool:
    """Forget one device; False when no device has that token."""
    with engine.begin() as connection:
        result = connection.execute(sql_delete(devices).where(devices.c.token == token))
        return bool(result.rowcount)


def tokens_for_user(engine: Engine, user_id: str) -> list[str]:
    """Every token of `user_id`'s devices, oldest registration first."""
    query = (
        select(devices.c.token)
        .where(devices.c.user_id == user_id)
        .order_by(devices.c.created_at, devices.c.token)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())


def remove_tokens(engine: Engine, tokens: Iterable[str]) -> int:
    """Delete the devices with these tokens (FCM reported them dead); how many went."""
    unique = list(dict.fromkeys(tokens))
    removed = 0
    with engine.begin() as connection:
        for start in range(0, len(unique), _DELETE_CHUNK):
            chunk = unique[start : start + _DELETE_CHUNK]
            result = connection.execute(sql_delete(devices).where(devices.c.token.in_(chunk)))
            removed += result.rowcount
    return removed


def list_devices(
    engine: Engine,
    user_id: str,
    *,
    limit: int = 50,
    after: tuple[datetime, str] | None = None,
) -> list[Device]:
    """`user_id`'s devices, newest registration first; `after` is the (created_at, token) of
    the last device of the previous page."""
    query = select(devices).where(devices.c.user_id == user_id)
    if after is not None:
        moment, token = after
        query = query.where(
            or_(
                devices.c.created_at < moment,
                and_(devices.c.created_at == moment, devices.c.token < token),
            )
        )
    query = query.order_by(devices.c.created_at.desc(), devices.c.token.desc()).limit(limit)
    with engine.connect() as connection:
        return [Device.model_validate(row._mapping) for row in connection.execute(query)]
