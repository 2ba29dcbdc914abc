"""Codec sessions: how a browser reads decrypted payloads in the Temporal UI.

`POST /codec/session` (with an API key that has the `codec` or `admin` scope) opens one:
the browser's cookie holds a random token, the database only its SHA-256 hash, the key
that opened it and when it expires (8 hours). A session decodes at /codec only (never a
bearer on /v1), and only while it is not revoked (`POST /codec/logout`), not expired,
and the key that opened it is neither revoked (`relay keys revoke`) nor without the scope.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from relay.api_keys import Scope, allows
from relay.db import utcnow
from relay.models.platform import ApiKey, CodecSession

SESSION_TTL = timedelta(hours=8)
# Ended sessions are deleted this long after they ended (when the next session opens).
_KEEP_ENDED = timedelta(days=7)


def hash_token(raw: str) -> str:
    # 256 random bits: a plain SHA-256 makes the lookup one indexed query.
    return hashlib.sha256(raw.encode()).hexdigest()


def open_session(engine: Engine, key: ApiKey) -> tuple[CodecSession, str]:
    """A new session for `key`; returns it and the raw token, which is never stored."""
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    record = CodecSession(
        token_hash=hash_token(raw), api_key_id=key.id, created_at=now, expires_at=now + SESSION_TTL
    )
    with Session(engine, expire_on_commit=False) as session:
        horizon = now - _KEEP_ENDED
        session.exec(
            delete(CodecSession).where(  # type: ignore[call-overload]
                or_(
                    col(CodecSession.expires_at) < horizon,
                    col(CodecSession.revoked_at) < horizon,
                )
            )
        )
        session.add(record)
        session.commit()
    return record, raw


def session_key(engine: Engine, raw: str, *, now: datetime | None = None) -> ApiKey | None:
    """The key behind a live session token that may still use the codec, or None."""
    now = now or utcnow()
    with Session(engine) as session:
        row = session.exec(
            select(CodecSession, ApiKey)
            .join(ApiKey, col(ApiKey.id) == col(CodecSession.api_key_id))
            .where(CodecSession.token_hash == hash_token(raw))
        ).first()
    if row is None:
        return None
    record, key = row
    if record.revoked_at is not None or record.expires_at <= now:
        return None
    if key.revoked_at is not None or not allows(key, Scope.CODEC):
        return None
    return key


def revoke_session(engine: Engine, raw: str) -> bool:
    """Revokes the session holding `raw`; False if there was no live one."""
    with Session(engine) as session:
        result = session.exec(
            update(CodecSession)  # type: ignore[call-overload]
            .where(col(CodecSession.token_hash) == hash_token(raw))
            .where(col(CodecSession.revoked_at).is_(None))
            .values(revoked_at=utcnow())
        )
        session.commit()
        return bool(result.rowcount)
