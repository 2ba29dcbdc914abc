"""Tokens at rest: sealed with the Keyring, one row per integration.

Each token is sealed with AES-256-GCM under the current key of ENCRYPTION_KEYS and
bound (as associated data) to its integration and column, so a ciphertext copied to
another row or column does not open. The token response's other fields (`extras`,
JSON: Slack's incoming_webhook.url, Discord's webhook) are sealed the same way in the
same row, so they leave with the tokens on disconnect. `key_id` names the key every
sealed column of a row is sealed with (each write re-seals them all);
`rotate_tokens` re-seals every row whose key is not the current one.

Writers:
- the integration's workflow, through its activities (exchange, refresh, wipe): the
  single writer of a connection's tokens; `version` is bumped on every token change and
  checked on write, so a stale writer fails instead of overwriting a rotated token;
- `rotate_tokens`, which re-seals without changing the tokens: it leaves `version`
  alone and writes only if the ciphertexts are still the ones it read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from relay.crypto import Keyring
from relay.db import utcnow
from relay.models.oauth import IntegrationCredential, OAuthState
from relay.oauth.flow import code_context, verifier_context

ROTATE_BATCH = 200


def token_context(integration_id: uuid.UUID, which: str) -> str:
    return f"integration:{integration_id}:{which}"


@dataclass(frozen=True)
class Tokens:
    """Plaintext tokens in memory; the repr never shows them."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    version: int
    # The token response's other fields (None: a row written before they were sealed).
    extras: dict[str, Any] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        refresh = "yes" if self.refresh_token else "no"
        return f"Tokens(version={self.version}, refresh_token={refresh})"


class StaleCredentials(Exception):
    """The row changed since it was read: a second writer, which the design excludes."""


class TokenStore:
    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self._engine = engine
        self._keyring = keyring

    def read(self, integration_id: uuid.UUID) -> Tokens | None:
        with Session(self._engine) as session:
            return self.read_in(session, integration_id)

    def read_in(self, session: Session, integration_id: uuid.UUID) -> Tokens | None:
        """`read` in the caller's session (the credentials route reads the integration,
        its confirmation state and its tokens in one)."""
        row = session.get(IntegrationCredential, integration_id)
        if row is None:
            return None
        return self._open(row)

    def _open(self, row: IntegrationCredential) -> Tokens:
        return self.open_columns(
            row.integration_id, row.access_token, row.refresh_token, row.extras, row.version
        )

    def open_columns(
        self,
        integration_id: uuid.UUID,
        access_token: str,
        refresh_token: str | None,
        extras: str | None,
        version: int,
    ) -> Tokens:
        """The tokens of a row read by a query of the caller's own (the credentials
        route reads them with the integration, in one statement)."""
        access = self._keyring.open(access_token, token_context(integration_id, "access_token"))
        refresh = (
            self._keyring.open(refresh_token, token_context(integration_id, "refresh_token"))
            if refresh_token
            else None
        )
        opened = (
            json.loads(self._keyring.open(extras, token_context(integration_id, "extras")))
            if extras
            else None
        )
        return Tokens(access, refresh, version, opened)

    def sealed(
        self,
        integration_id: uuid.UUID,
        access_token: str,
        refresh_token: str | None,
        extras: Mapping[str, Any] | None = None,
    ) -> dict[str, object]:
        """Column values for a token write, every one sealed under the current key."""
        return {
            "access_token": self._keyring.seal(
                access_token, token_context(integration_id, "access_token")
            ),
            "refresh_token": self._keyring.seal(
                refresh_token, token_context(integration_id, "refresh_token")
            )
            if refresh_token
            else None,
            "extras": self._keyring.seal(
                json.dumps(dict(extras), separators=(",", ":")),
                token_context(integration_id, "extras"),
            )
            if extras is not None
            else None,
            "key_id": self._keyring.current_kid,
            "updated_at": utcnow(),
        }

    def put(
        self,
        session: Session,
        integration_id: uuid.UUID,
        access_token: str,
        refresh_token: str | None,
        extras: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert or replace the row in the caller's transaction (the code exchange)."""
        values = self.sealed(integration_id, access_token, refresh_token, extras)
        row = session.get(IntegrationCredential, integration_id)
        if row is None:
            session.add(IntegrationCredential(integration_id=integration_id, version=1, **values))  # type: ignore[arg-type]
            return 1
        for name, value in values.items():
            setattr(row, name, value)
        row.version += 1
        session.add(row)
        return row.version

    def replace(
        self,
        session: Session,
        integration_id: uuid.UUID,
        *,
        expected_version: int,
        access_token: str,
        refresh_token: str | None,
        extras: Mapping[str, Any] | None = None,
    ) -> int:
        """Swap the tokens of a refresh atomically, if nobody changed them since the read.

        `refresh_token` is the one to keep: the new one when the provider rotated it,
        the old one when the response carried none; `extras` are the ones read with the
        tokens (re-sealed under the current key, like the tokens).
        """
        values = self.sealed(integration_id, access_token, refresh_token, extras)
        result = session.execute(
            update(IntegrationCredential)
            .where(col(IntegrationCredential.integration_id) == integration_id)
            .where(col(IntegrationCredential.version) == expected_version)
            .values(version=expected_version + 1, **values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleCredentials(f"credentials of integration {integration_id} changed")
        return expected_version + 1

    def wipe(self, session: Session, integration_id: uuid.UUID) -> bool:
        row = session.get(IntegrationCredential, integration_id)
        if row is None:
            return False
        session.delete(row)
        return True


@dataclass
class RotationReport:
    total: int = 0
    reencrypted: int = 0
    current: int = 0
    states: int = 0
    skipped: int = 0  # changed by their writer meanwhile (and so sealed anew)


def count_stale(engine: Engine, keyring: Keyring) -> tuple[int, int]:
    """(rows sealed with another key, all rows) of integration_credentials."""
    with Session(engine) as session:
        total = session.exec(select(func.count()).select_from(IntegrationCredential)).one()
        stale = session.exec(
            select(func.count())
            .select_from(IntegrationCredential)
            .where(col(IntegrationCredential.key_id) != keyring.current_kid)
        ).one()
    return int(stale), int(total)


def rotate_tokens(
    engine: Engine,
    keyring: Keyring,
    *,
    progress: Callable[[int], object] | None = None,
    batch: int = ROTATE_BATCH,
) -> RotationReport:
    """Re-seal every stored token (and pending PKCE verifiers and codes) with the
    current key. Idempotent: rows already under the current key are left alone.
    """
    report = RotationReport()
    stale, report.total = count_stale(engine, keyring)
    report.current = report.total - stale
    after: uuid.UUID | None = None
    while True:
        with Session(engine) as session:
            query = (
                select(IntegrationCredential)
                .where(col(IntegrationCredential.key_id) != keyring.current_kid)
                .order_by(col(IntegrationCredential.integration_id))
                .limit(batch)
            )
            if after is not None:
                query = query.where(col(IntegrationCredential.integration_id) > after)
            rows = session.exec(query).all()
            if not rows:
                break
            for row in rows:
                after = row.integration_id
                tokens = TokenStore(engine, keyring)._open(row)
                values = TokenStore(engine, keyring).sealed(
                    row.integration_id, tokens.access_token, tokens.refresh_token, tokens.extras
                )
                values.pop("updated_at")
                same = [
                    col(IntegrationCredential.integration_id) == row.integration_id,
                    col(IntegrationCredential.access_token) == row.access_token,
                    col(IntegrationCredential.version) == row.version,
                ]
                result = session.execute(
                    update(IntegrationCredential).where(and_(*same)).values(**values)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    report.reencrypted += 1
                else:
                    report.skipped += 1
                if progress is not None:
                    progress(1)
            session.commit()
    report.states = _rotate_states(engine, keyring)
    return report


def _rotate_states(engine: Engine, keyring: Keyring) -> int:
    """Pending authorizations keep a sealed verifier (and a code between callback and
    exchange) for at most minutes; re-seal them too so the old key can go at once."""
    changed = 0
    with Session(engine) as session:
        rows = session.exec(
            select(OAuthState).where(
                (col(OAuthState.code_verifier).is_not(None)) | (col(OAuthState.code).is_not(None))
            )
        ).all()
        for row in rows:
            dirty = False
            for name, context in (
                ("code_verifier", verifier_context(row.id)),
                ("code", code_context(row.id)),
            ):
                sealed = getattr(row, name)
                if sealed and Keyring.kid_of(sealed) != keyring.current_kid:
                    setattr(row, name, keyring.seal(keyring.open(sealed, context), context))
                    dirty = True
            if dirty:
                session.add(row)
                changed += 1
        session.commit()
    return changed
