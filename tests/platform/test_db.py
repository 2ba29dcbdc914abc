"""Datetimes are stored as UTC instants on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from relay.db import as_utc, session_scope
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
