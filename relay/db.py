"""The database engine and sessions (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

# How long SQLite waits for the writer lock before failing: the API and worker share
# one file in development, and a webhook batch holds the lock for a bulk insert.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# PostgreSQL: a pooled connection idle this long is pinged (`SELECT 1`) when checked out, and
# replaced (with every other pooled connection older than now) if the server dropped it: a
# restart while Relay was quiet costs no request. `pool_pre_ping` would ping on every
# checkout: measured on the local server, +0.09 ms of wall time and +0.06 ms of CPU on a
# 0.28 ms checkout-and-query (a third more), paid once per credential read at concurrency 1.
# A connection checked in less than this ago is used unpinged; if the server went away in
# the meantime, the statement on it fails with a disconnect (the request gets 503
# DATABASE_UNAVAILABLE, as every request in flight at the restart does anyway) and
# SQLAlchemy invalidates the whole pool on that error, so the next checkout reconnects.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "relay_idle_since"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything Relay stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets readers (the API) proceed while the worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    ping_idle_connections(engine)
    return engine


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Pre-ping only the connections idle for `idle_seconds` or more (see
    PING_AFTER_IDLE_SECONDS); a dropped one makes the pool replace it and every older one,
    then the checkout goes on with a fresh connection."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)  # absent on a fresh connection
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error
            raise


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
