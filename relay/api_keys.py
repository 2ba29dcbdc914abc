"""API keys: created by `relay keys create`, stored only as a SHA-256 hash, with scopes;
looked up through a per-process `KeyCache` that a revocation empties within a second."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.platform import ApiKey, CodecSession

KEY_PREFIX = "rk_"

log = logging.getLogger(__name__)


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
    # Other processes see it within REVOCATION_BOUND (their caches' fingerprint checks).
    for cache in list(_caches):
        cache.forget()
    return record


def authenticate(engine: Engine, raw: str) -> ApiKey | None:
    """The live key matching `raw`, or None. The lookup is by hash, never by the raw key
    (uncached: the API's `require_api_key` goes through the process's `KeyCache`)."""
    return lookup(engine, hash_key(raw))


# --- the per-process cache of key lookups ---------------------------------------------------
#
# Every /v1 request authenticates, so the lookup is cached in each API process. A revoked
# key must stop working in every process within REVOCATION_BOUND, which a TTL alone cannot
# give without making the cache useless: each process re-reads a revocation fingerprint
# (one aggregate row over api_keys) every CHECK_INTERVAL and empties its cache when it
# changed, and trusts the cache only while its last completed check started less than
# TRUST_WINDOW ago; otherwise every request looks its key up in the database, as without a
# cache. So a request served at time t used a cache checked against the database as it was
# after t - TRUST_WINDOW: a key revoked before then is refused.

CHECK_INTERVAL = 0.25
TRUST_WINDOW = 0.75
REVOCATION_BOUND = 1.0  # what the README promises; TRUST_WINDOW stays below it
CACHE_SIZE = 10_000


def revocation_fingerprint(engine: Engine) -> tuple[Any, ...]:
    """Changes whenever a key is revoked or a row is deleted (or added): the number of
    keys, of revoked keys, the latest revocation and the latest creation."""
    with engine.connect() as connection:
        row = connection.execute(
            select(  # type: ignore[call-overload]
                func.count(),
                func.count(col(ApiKey.revoked_at)),
                func.max(col(ApiKey.revoked_at)),
                func.max(col(ApiKey.created_at)),
            ).select_from(ApiKey)
        ).one()
    return tuple(row)


# Every KeyCache of this process, so a revocation made here empties them at once.
_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()


class KeyCache:
    """Key hash -> a snapshot of the live key, bounded (least recently used out), for one
    process. Misses are never cached (an unknown key always costs a lookup, so a key
    created a moment ago works at once). Used from one event loop; `check` and `lookup`
    run in threads and touch only their own locals and the engine."""

    def __init__(self, engine: Engine, *, size: int = CACHE_SIZE) -> None:
        self._engine = engine
        self._size = size
        self._keys: OrderedDict[str, ApiKey] = OrderedDict()
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked_at = float("-inf")  # monotonic start of the last completed check
        self._forgotten_at = float("-inf")
        self._generation = 0
        _caches.add(self)

    def trusted(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - self._checked_at < TRUST_WINDOW

    def get(self, key_hash: str) -> ApiKey | None:
        """The cached live key, or None (not cached, or the cache is not trusted now)."""
        if not self.trusted():
            return None
        record = self._keys.get(key_hash)
        if record is not None:
            with contextlib.suppress(KeyError):  # emptied by `forget` from another thread
                self._keys.move_to_end(key_hash)
        return record

    def generation(self) -> int:
        """Taken before a database lookup and handed to `put`: a lookup that overlapped an
        invalidation may have read a key revoked since, so it is not cached."""
        return self._generation

    def put(self, key_hash: str, record: ApiKey, generation: int) -> None:
        if generation != self._generation:
            return
        self._keys[key_hash] = record
        self._keys.move_to_end(key_hash)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def apply(self, fingerprint: tuple[Any, ...], started: float) -> None:
        """The result of a check that started at `started` (monotonic)."""
        if fingerprint != self._fingerprint:
            self._keys.clear()
            self._generation += 1
            self._fingerprint = fingerprint
        if started > self._forgotten_at:  # a check begun before `forget` proves nothing
            self._checked_at = max(self._checked_at, started)

    def forget(self) -> None:
        """Empty the cache and stop trusting it until a check begun from now on succeeds:
        lookups go to the database meanwhile. After a failed check, and for every cache
        of this process when `revoke_key` runs in it (the revocation applies at once)."""
        self._forgotten_at = time.monotonic()
        self._checked_at = float("-inf")
        self._generation += 1
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)

    async def watch(self) -> None:
        """Check the fingerprint every CHECK_INTERVAL until cancelled (the app's lifespan
        runs it). A failed check makes the cache untrusted until one succeeds."""
        while True:
            started = time.monotonic()
            try:
                fingerprint = await asyncio.to_thread(revocation_fingerprint, self._engine)
            except Exception:
                if self.trusted():
                    log.warning("API key revocation check failed; looking keys up uncached")
                self.forget()
            else:
                self.apply(fingerprint, started)
            await asyncio.sleep(CHECK_INTERVAL)


def lookup(engine: Engine, key_hash: str) -> ApiKey | None:
    """The live key with this hash, or None (as `authenticate`, from the hash)."""
    with Session(engine, expire_on_commit=False) as session:
        record = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
        if record is None or record.revoked_at is not None:
            return None
        session.expunge(record)
        return record
