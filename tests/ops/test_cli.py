"""The `relay` command as an operator runs it: a real process, a real database, the real API."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from relay.api_keys import REVOCATION_BOUND
from relay.settings import Settings
from tests.conftest import Stack, settings_env


def relay(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("relay: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def cli_env(make_settings: Callable[..., Settings], database_url: str) -> dict[str, str]:
    return settings_env(make_settings(database_url=database_url))


def database_url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_keys_create_prints_the_key_alone_and_stores_only_its_hash(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(engine))

    created = relay("keys", "create", "billing-service", env=env, cwd=tmp_path)

    assert created.returncode == 0, created.stderr
    raw = created.stdout.strip().splitlines()[-1]
    assert raw.startswith("rk_") and " " not in raw and len(raw) > 40
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "billing-service"
    assert row["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert all(raw not in str(value) for value in row.values())

    listed = relay("keys", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "billing-service" in listed.stdout and "active" in listed.stdout
    assert raw[:10] in listed.stdout and raw not in listed.stdout


def test_duplicate_and_unknown_names_are_one_line_errors(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(engine))
    assert relay("keys", "create", "ops", env=env, cwd=tmp_path).returncode == 0

    assert_one_line_error(relay("keys", "create", "ops", env=env, cwd=tmp_path), "'ops' exists")
    assert_one_line_error(relay("keys", "revoke", "nobody", env=env, cwd=tmp_path), "'nobody'")
    assert_one_line_error(relay("keys", "create", " ", env=env, cwd=tmp_path), "1 to 100")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 1


async def test_revoked_key_gets_401_with_the_envelope(
    stack: Stack, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(stack.engine))
    created = relay("keys", "create", "to-revoke", env=env, cwd=tmp_path)
    raw = created.stdout.strip().splitlines()[-1]

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {raw}"}
        assert (await http.get("/v1/runs", headers=headers)).status_code == 200

        revoked = relay("keys", "revoke", "to-revoke", env=env, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        # Revoked in another process: the API's key cache refuses it within the bound the
        # README states (relay/api_keys.py), not necessarily at once.
        await asyncio.sleep(REVOCATION_BOUND)

        for response in (
            await http.get("/v1/runs", headers=headers),
            await http.get("/v1/runs"),
            await http.get("/v1/runs", headers={"Authorization": "Bearer rk_not-a-key"}),
        ):
            assert response.status_code == 401
            body = response.json()
            assert body["success"] is False
            assert body["error"]["code"] == "UNAUTHORIZED"
            assert body["error"]["message"]

    listed = relay("keys", "list", env=env, cwd=tmp_path)
    assert "revoked" in listed.stdout


def test_migrate_creates_the_schema_and_is_idempotent(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url)
    for _ in range(2):
        result = relay("migrate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout

    from relay.db import make_engine

    engine = make_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"api_keys", "provider_calls", "alembic_version"} <= tables


def test_default_database_lives_under_data_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "RELAY_"))}
    env["DATA_DIR"] = str(tmp_path / "state")
    result = relay("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "state" / "relay.db").is_file()


def test_unusable_database_urls_are_one_line_errors(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    unreachable = cli_env(
        make_settings, "postgresql+psycopg://relay:hunter2-secret@127.0.0.1:1/relay"
    )
    line = assert_one_line_error(
        relay("keys", "list", env=unreachable, cwd=tmp_path), "not reachable"
    )
    assert "hunter2-secret" not in line

    for url in ("bogus://relay:hunter2-secret@host/db", "not a url"):
        line = assert_one_line_error(
            relay("migrate", env=cli_env(make_settings, url), cwd=tmp_path), "DATABASE_URL"
        )
        assert "hunter2-secret" not in line


def test_production_refuses_development_defaults_naming_each(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "RELAY_", "ENCRYPTION_", "PUBLIC_BASE"))
    }
    env.update(RELAY_ENV="production", DATA_DIR=str(tmp_path / "state"))
    for command in (["keys", "list"], ["migrate"], ["worker"], ["api"]):
        assert_one_line_error(
            relay(*command, env=env, cwd=tmp_path),
            "RELAY_ENV=production",
            "ENCRYPTION_KEYS",
            "DATABASE_URL",
            "PUBLIC_BASE_URL",
        )
    assert not (tmp_path / "state" / "relay.db").exists()


def test_invalid_setting_is_a_one_line_error(tmp_path: Path) -> None:
    env = dict(os.environ, DATA_DIR=str(tmp_path / "state"), API_PORT="eighty")
    assert_one_line_error(relay("migrate", env=env, cwd=tmp_path), "API_PORT")


def test_keys_create_grants_the_scopes_asked_for_and_app_by_default(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(engine))
    plain = relay("keys", "create", "web-app", env=env, cwd=tmp_path)
    operator = relay("keys", "create", "operator", "--scope", "codec", env=env, cwd=tmp_path)
    reader = relay(
        "keys", "create", "token-reader",
        "--scope", "credentials:read,codec", "--scope", "app",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    for result in (plain, operator, reader):
        assert result.returncode == 0, result.stderr
    assert "with scope app;" in plain.stdout
    assert "with scope codec;" in operator.stdout
    assert "with scopes app,credentials:read,codec;" in reader.stdout

    with engine.connect() as connection:
        scopes = dict(connection.execute(text("SELECT name, scopes FROM api_keys")).all())
    assert scopes == {
        "web-app": "app",
        "operator": "codec",
        "token-reader": "app credentials:read codec",
    }

    listed = relay("keys", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split() == ["NAME", "PREFIX", "SCOPES", "CREATED", "STATUS"]
    shown = {row.split()[0]: row.split()[2] for row in rows}
    assert shown == {
        "web-app": "app",
        "operator": "codec",
        "token-reader": "app,credentials:read,codec",
    }
    for result in (plain, operator, reader):
        assert result.stdout.strip().splitlines()[-1] not in listed.stdout


def test_unknown_or_empty_scopes_are_one_line_errors(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(engine))
    line = assert_one_line_error(
        relay("keys", "create", "x", "--scope", "superuser", env=env, cwd=tmp_path),
        "'superuser'",
    )
    for scope in ("admin", "app", "credentials:read", "codec"):
        assert scope in line
    assert_one_line_error(
        relay("keys", "create", "x", "--scope", ",", env=env, cwd=tmp_path), "at least one scope"
    )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 0


async def test_scoped_keys_from_the_cli_are_enforced_by_the_api(
    stack: Stack, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = cli_env(make_settings, database_url_of(stack.engine))
    created = relay("keys", "create", "cli-codec", "--scope", "codec", env=env, cwd=tmp_path)
    raw = created.stdout.strip().splitlines()[-1]
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {raw}"}
        runs = await http.get("/v1/runs", headers=headers)
        decoded = await http.post("/codec/decode", json={"payloads": []}, headers=headers)
    assert runs.status_code == 403
    assert (
        runs.json()["error"]["code"] == "FORBIDDEN" and "'app'" in runs.json()["error"]["message"]
    )
    assert decoded.status_code == 200
