"""Datetimes are stored as UTC instants on SQLite and PostgreSQL alike; PostgreSQL
connections the server dropped are replaced."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from relay.db import PING_AFTER_IDLE_SECONDS, as_utc, session_scope
from relay.models.platform import ProviderCall


def test_aware_datetimes_in_any_zone_come_back_as_the_same_utc_instant(engine: Engine) -> None:
    paris = timezone(timedelta(hours=2))
    when = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=paris)
    with session_scope(engine) as session:
        session.add(
            ProviderCall(idempotency_key="tz", provider="acme", operation="x", reserved_until=when)
        )

    with Session(engine) as session:
        row = session.exec(select(ProviderCall).where(ProviderCall.idempotency_key == "tz")).one()
        assert row.reserved_until == when
        assert row.reserved_until.utcoffset() == timedelta(0)
        # Comparisons in SQL see the same instant.
        later = session.exec(
            select(ProviderCall).where(ProviderCall.reserved_until > when - timedelta(seconds=1))
        ).all()
        assert [r.idempotency_key for r in later] == ["tz"]


def test_session_scope_rolls_back_on_error(engine: Engine) -> None:
    try:
        with session_scope(engine) as session:
            session.add(
                ProviderCall(
                    idempotency_key="rolled-back",
                    provider="acme",
                    operation="x",
                    reserved_until=datetime.now(UTC),
                )
            )
            session.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with Session(engine) as session:
        assert session.exec(select(ProviderCall)).all() == []


def test_as_utc() -> None:
    assert as_utc(None) is None
    assert as_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)


# --- PostgreSQL: connections the server dropped (a restart, a failover) ---------------------


def _backends(engine: Engine, connections: int) -> list[int]:
    """Check out `connections` connections at once (so the pool holds that many) and return
    their server process ids; all are checked back in."""
    held = [engine.connect() for _ in range(connections)]
    try:
        return [int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in held]
    finally:
        for connection in held:
            connection.close()


def _drop(engine: Engine, pids: list[int]) -> None:
    """The server ends those backends, as a restart would (from a connection of its own)."""
    admin = create_engine(engine.url, poolclass=NullPool)
    with admin.connect() as connection:
        for pid in pids:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()
    admin.dispose()


def _select_one(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT 1")).scalar_one())


def _postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite is a file: there is no connection for a server to drop")


def test_a_pool_idle_through_a_restart_serves_the_next_request(engine: Engine) -> None:
    _postgres_only(engine)
    pids = _backends(engine, 3)
    _drop(engine, pids)
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # idle long enough to be pinged on checkout
    for _ in range(5):
        assert _select_one(engine) == 1
    assert not set(_backends(engine, 3)) & set(pids)


def test_a_busy_pool_loses_at_most_the_statement_that_met_the_drop(engine: Engine) -> None:
    _postgres_only(engine)
    pids = _backends(engine, 3)
    _drop(engine, pids)
    # Checked in a moment ago, so not pinged: the first statement may meet the dropped
    # connection, and SQLAlchemy then replaces every pooled connection, not only that one.
    failures = 0
    for _ in range(6):
        try:
            assert _select_one(engine) == 1
        except OperationalError:
            failures += 1
    assert failures <= 1
    assert not set(_backends(engine, 3)) & set(pids)
