"""API keys: created by `relay keys create`, stored only as a SHA-256 hash, with scopes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.platform import ApiKey, CodecSession

KEY_PREFIX = "rk_"


class Scope(StrEnum):
    """What a key may do. Routes declare the scope they need (`api.deps.require_scope`);
    a /v1 route that declares none needs `app`. `admin` may do everything."""

    ADMIN = "admin"
    APP = "app"
    CREDENTIALS_READ = "credentials:read"
    CODEC = "codec"


SCOPE_HELP: dict[Scope, str] = {
    Scope.ADMIN: "everything",
    Scope.APP: "every /v1 route except reading access tokens (the default)",
    Scope.CREDENTIALS_READ: "GET /v1/integrations/{id}/credentials (access tokens)",
    Scope.CODEC: "decrypt and encrypt payloads at /codec, open codec sessions",
}
DEFAULT_SCOPES: tuple[Scope, ...] = (Scope.APP,)


def parse_scopes(values: Iterable[str]) -> tuple[Scope, ...]:
    """Scopes from `--scope` values, each possibly comma-separated; in canonical order."""
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    if not names:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "a key needs at least one scope")
    unknown = sorted(names - {scope.value for scope in Scope})
    if unknown:
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            f"unknown scope {', '.join(map(repr, unknown))} "
            f"(scopes: {', '.join(scope.value for scope in Scope)})",
        )
    return tuple(scope for scope in Scope if scope.value in names)


def scopes_of(record: ApiKey) -> frozenset[str]:
    return frozenset(record.scopes.split())


def allows(record: ApiKey, scope: Scope) -> bool:
    """Whether the key may do what `scope` covers (`admin` covers every scope)."""
    held = scopes_of(record)
    return scope.value in held or Scope.ADMIN.value in held


def hash_key(raw: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is as good as a slow KDF here
    # and keeps authentication to one indexed lookup.
    return hashlib.sha256(raw.encode()).hexdigest()


def create_key(
    engine: Engine, name: str, scopes: Iterable[str] = DEFAULT_SCOPES
) -> tuple[ApiKey, str]:
    """Returns the stored record and the raw key, which is never stored or shown again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise RelayError(ErrorCode.VALIDATION_ERROR, "a key name is 1 to 100 characters")
    granted = parse_scopes(scopes)
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        key_hash=hash_key(raw),
        prefix=raw[:10],
        scopes=" ".join(scope.value for scope in granted),
    )
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
    """Revokes the key and every codec session it opened, in one transaction."""
    with Session(engine, expire_on_commit=False) as session:
        record = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if record is None:
            raise RelayError(ErrorCode.NOT_FOUND, f"no API key named {name!r}")
        now = utcnow()
        if record.revoked_at is None:
            record.revoked_at = now
            session.add(record)
        # A session is refused anyway once its key is revoked (see relay.codec_sessions);
        # marking them says so in the table too.
        session.exec(
            update(CodecSession)  # type: ignore[call-overload]
            .where(col(CodecSession.api_key_id) == record.id)
            .where(col(CodecSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        session.commit()
        return record


def authenticate(engine: Engine, raw: str) -> ApiKey | None:
    """The live key matching `raw`, or None. The lookup is by hash, never by the raw key."""
    with Session(engine) as session:
        record = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(raw))).first()
        if record is None or record.revoked_at is not None:
            return None
        return record
