"""API keys: created by `relay keys create`, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.platform import ApiKey

KEY_PREFIX = "rk_"


def hash_key(raw: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is as good as a slow KDF here
    # and keeps authentication to one indexed lookup.
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(engine: Engine, name: str) -> tuple[ApiKey, str]:
    """Returns the stored record and the raw key, which is never stored or shown again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "a key name is 1 to 100 characters")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(name=name, key_hash=hash_key(raw), prefix=raw[:10])
    with Session(engine, expire_on_commit=False) as session:
        session.add(record)
        try:
            session.commit()
        except IntegrityError:
            raise RelayError(ErrorCode.CONFLICT, f"an API key named {name!r} exists") from None
    return record, raw


def list_keys(engine: Engine) -> list[ApiKey]:
    with Session(engine) as session:
        return list(session.exec(select(ApiKey).order_by(ApiKey.created_at)))  # type: ignore[arg-type]


def revoke_key(engine: Engine, name: str) -> ApiKey:
    with Session(engine, expire_on_commit=False) as session:
        record = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if record is None:
            raise RelayError(ErrorCode.NOT_FOUND, f"no API key named {name!r}")
        if record.revoked_at is None:
            record.revoked_at = utcnow()
            session.add(record)
            session.commit()
        return record


def authenticate(engine: Engine, raw: str) -> ApiKey | None:
    """The live key matching `raw`, or None. The lookup is by hash, never by the raw key."""
    with Session(engine) as session:
        record = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(raw))).first()
        if record is None or record.revoked_at is not None:
            return None
        return record
