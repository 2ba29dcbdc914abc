"""`relay keys rotate-tokens`: every stored token re-sealed under the new first key of
ENCRYPTION_KEYS, with progress shown; a second run finds nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from relay.crypto import Keyring, generate_key_spec
from relay.models.oauth import IntegrationCredential, OAuthState
from relay.oauth.catalog import ProviderEntry
from relay.oauth.flow import create_authorization, verifier_context
from relay.oauth.tokens import TokenStore, rotate_tokens


def _connection(
    engine: Engine,
    keyring: Keyring,
    access: str,
    refresh: str | None,
    extras: dict[str, Any] | None = None,
) -> uuid.UUID:
    entry = ProviderEntry(
        key="acme",
        display_name="Acme",
        authorization_url="https://acme.example/authorize",
        token_url="https://acme.example/token",
    )
    pending = create_authorization(
        engine,
        keyring,
        entry,
        client_id="id",
        user_id="user-1",
        organization_id=None,
        redirect_uri="http://localhost:3000/done",
        scopes=[],
        connection_config={},
        metadata={},
        callback="http://localhost:8000/v1/integrations/oauth/callback/acme",
    )
    with Session(engine) as session:
        TokenStore(engine, keyring).put(session, pending.integration.id, access, refresh, extras)
        session.commit()
    return pending.integration.id


def _rotate(engine: Engine, tmp_path: Path, keys: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "ENCRYPTION_"))},
        "RELAY_ENV": "test",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "ENCRYPTION_KEYS": keys,
    }
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "keys", "rotate-tokens"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rotate_tokens_reencrypts_everything_with_the_current_key(
    engine: Engine, tmp_path: Path
) -> None:
    old_spec, new_spec = generate_key_spec("old"), generate_key_spec("new")
    old = Keyring.parse(old_spec)
    both = Keyring.parse(f"{new_spec},{old_spec}")
    tokens = {
        _connection(engine, old, "access-a", "refresh-a"): ("access-a", "refresh-a"),
        _connection(engine, old, "access-b", None): ("access-b", None),
        _connection(engine, old, "access-c", "refresh-c"): ("access-c", "refresh-c"),
        _connection(engine, both, "access-d", "refresh-d"): ("access-d", "refresh-d"),
    }
    with Session(engine) as session:
        before = {
            row.integration_id: row.version for row in session.exec(select(IntegrationCredential))
        }

    first = _rotate(engine, tmp_path, f"{new_spec},{old_spec}")
    assert first.returncode == 0, first.stderr
    assert "3 of 4 integrations re-encrypted with key 'new' (1 already were)" in first.stdout
    assert "re-encrypting under new" in first.stdout  # the progress bar's label
    assert "pending authorizations re-sealed" in first.stdout

    new_only = Keyring.parse(new_spec)
    store = TokenStore(engine, new_only)
    with Session(engine) as session:
        rows = session.exec(select(IntegrationCredential)).all()
        states = session.exec(select(OAuthState)).all()
    assert {row.key_id for row in rows} == {"new"}
    # Re-encryption is not a token change: the writer's version is untouched.
    assert {row.integration_id: row.version for row in rows} == before
    for integration_id, (access, refresh) in tokens.items():
        stored = store.read(integration_id)
        assert stored is not None
        assert (stored.access_token, stored.refresh_token) == (access, refresh)
    for state in states:  # pending PKCE verifiers too: the old key can go
        assert state.code_verifier is not None
        new_only.open(state.code_verifier, verifier_context(state.id))

    second = _rotate(engine, tmp_path, f"{new_spec},{old_spec}")
    assert second.returncode == 0, second.stderr
    assert "0 of 4 integrations re-encrypted with key 'new' (4 already were)" in second.stdout


def test_the_sealed_extras_are_rotated_with_the_tokens(engine: Engine) -> None:
    old_spec, new_spec = generate_key_spec("old"), generate_key_spec("new")
    extras = {"incoming_webhook": {"url": "https://hooks.example/services/SECRET"}}
    integration_id = _connection(engine, Keyring.parse(old_spec), "access-e", "r-e", extras)

    report = rotate_tokens(engine, Keyring.parse(f"{new_spec},{old_spec}"))

    assert report.reencrypted == 1
    stored = TokenStore(engine, Keyring.parse(new_spec)).read(integration_id)
    assert stored is not None and stored.extras == extras
    assert "SECRET" not in repr(stored)


def test_rotate_tokens_without_the_old_key_fails_with_one_line(
    engine: Engine, tmp_path: Path
) -> None:
    old_spec, new_spec = generate_key_spec("old"), generate_key_spec("new")
    _connection(engine, Keyring.parse(old_spec), "access-a", "refresh-a")
    result = _rotate(engine, tmp_path, new_spec)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no key with id 'old'" in result.stderr
    assert "access-a" not in result.stderr + result.stdout
