"""Migrations go up and down on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from relay.db import make_engine
from relay.migrate import alembic_config, current_heads, downgrade, upgrade
from relay.models import metadata


def _params() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(params=_params())
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    base = os.environ["TEST_DATABASE_URL"]
    name = f"relay_migrations_{secrets.token_hex(4)}"
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(current_heads()) == 1, "migrations branch: give the new one the right down_revision"
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None


def test_upgrade_to_head_creates_every_model_table_and_downgrade_to_base_drops_them(
    fresh_url: str,
) -> None:
    upgrade(fresh_url)
    assert _tables(fresh_url) == set(metadata.tables)

    downgrade(fresh_url, "base")
    assert _tables(fresh_url) == set()

    # And back up again: downgrades leave nothing behind that blocks a re-run.
    upgrade(fresh_url)
    assert _tables(fresh_url) == set(metadata.tables)


def test_every_revision_steps_down_and_up(fresh_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(fresh_url))
    revisions = [rev.revision for rev in script.walk_revisions()]  # head first
    upgrade(fresh_url)
    for _ in revisions:
        downgrade(fresh_url, "-1")
    assert _tables(fresh_url) == set()
    for revision in reversed(revisions):
        upgrade(fresh_url, revision)
    assert _tables(fresh_url) == set(metadata.tables)


def test_models_match_the_migrations(fresh_url: str) -> None:
    upgrade(fresh_url)
    differences = _differences(fresh_url)
    assert differences == [], (
        "the models and the migrations disagree; write a migration for: "
        + "; ".join(map(str, differences))
    )
