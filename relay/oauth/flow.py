"""The authorization step of a connection: state, PKCE, the authorization URL, the callback.

RFC 9700 (OAuth 2.0 Security BCP) for a client, as Relay applies it:

- `state` is 256 bits from `secrets`, bound to one flow, valid 10 minutes and usable
  once. Only its SHA-256 is stored, so a database reader cannot complete a flow.
- PKCE with S256 on every authorization unless the catalog says the provider lacks it;
  the verifier is stored sealed (AES-256-GCM, bound to the state row) until the exchange.
- The application's `redirectUri` must fall under OAUTH_ALLOWED_REDIRECTS, compared by
  parsed scheme, host, port and path segments, never by string prefix (no open redirect
  to `http://localhost.evil.example`).
- The callback consumes the state with one conditional UPDATE (unused, unexpired, same
  provider): of two racing callbacks exactly one wins, and a replay finds nothing.
- Connection fixation (RFC 9700 section 4.7): a user of the application can start a
  connection for their own userId and get someone else to approve it. With
  `requireConfirmation`, the same UPDATE that consumes the state stores the SHA-256 of
  a one-time confirmation code (256 bits) that the callback hands the application in
  its redirect; the connection is served only after the application, having checked
  that its own session belongs to the user who started it, presents the code
  (`confirm_connection`): once, within the window, at most 5 wrong codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy import case, null, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from relay.crypto import Keyring
from relay.db import as_utc, session_scope, utcnow
from relay.models.oauth import Integration, IntegrationStatus, OAuthState
from relay.oauth.catalog import ProviderEntry, is_loopback_host
from relay.oauth.contracts import CONFIRMATION_WINDOW_SECONDS, MAX_CONFIRMATION_ATTEMPTS

STATE_TTL = timedelta(minutes=10)
STATE_BYTES = 32  # 256 bits
CONFIRMATION_BYTES = 32  # 256 bits
CONFIRMATION_WINDOW = timedelta(seconds=CONFIRMATION_WINDOW_SECONDS)
# The query parameter that carries the confirmation code to the application.
CONFIRMATION_PARAM = "relay_confirmation"
VERIFIER_BYTES = 64  # 86 characters, inside RFC 7636's 43..128
CALLBACK_PATH = "/v1/integrations/oauth/callback/{provider}"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def new_state() -> str:
    return secrets.token_urlsafe(STATE_BYTES)


def hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def hash_confirmation(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636 section 4."""
    verifier = secrets.token_urlsafe(VERIFIER_BYTES)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def callback_url(base_url: str, provider: str) -> str:
    return base_url.rstrip("/") + CALLBACK_PATH.format(provider=provider)


def verifier_context(state_id: uuid.UUID) -> str:
    return f"oauth_state:{state_id}:code_verifier"


def code_context(state_id: uuid.UUID) -> str:
    return f"oauth_state:{state_id}:code"


# --- redirect allow-list ---------------------------------------------------------------


def redirect_allowed(uri: str, allowed: Sequence[str]) -> bool:
    """Whether `uri` falls under one of the allowed URL prefixes.

    Scheme and host must be equal; a prefix that names a port must match it, and one
    that does not allows any port on loopback hosts (RFC 8252 section 7.3) and the
    default port elsewhere; the prefix's path must be a whole-segment prefix. URIs with
    credentials or a fragment (RFC 6749 section 3.1.2) are refused.
    """
    try:
        target = urlsplit(uri)
        target_port = target.port
    except ValueError:
        return False
    if target.scheme not in _DEFAULT_PORTS or not target.hostname:
        return False
    if target.username is not None or target.password is not None or target.fragment:
        return False
    for prefix in allowed:
        try:
            rule = urlsplit(prefix)
            rule_port = rule.port
        except ValueError:
            continue
        if rule.scheme != target.scheme or not rule.hostname:
            continue
        if rule.hostname.lower() != target.hostname.lower():
            continue
        if rule_port is not None:
            if (target_port or _DEFAULT_PORTS[target.scheme]) != rule_port:
                continue
        elif target_port not in (None, _DEFAULT_PORTS[target.scheme]) and not is_loopback_host(
            target.hostname
        ):
            continue
        path = rule.path.rstrip("/")
        if path and target.path != path and not target.path.startswith(path + "/"):
            continue
        return True
    return False


def with_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to its query (existing parameters are kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


# --- the authorization request ---------------------------------------------------------


def authorization_url(
    entry: ProviderEntry,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    code_challenge: str | None,
    connection_config: Mapping[str, str],
) -> str:
    params = {
        name: entry.interpolate(value, connection_config)
        for name, value in entry.authorization_params.items()
    }
    params.update(
        {
            entry.client_id_param: client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "state": state,
        }
    )
    if scopes:
        params["scope"] = entry.scope_string(list(scopes))
    if code_challenge is not None:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    return with_query(entry.interpolate(entry.authorization_url, connection_config), params)


@dataclass(frozen=True)
class PendingAuthorization:
    integration: Integration
    state: str
    authorization_url: str
    expires_at: datetime


def create_authorization(
    engine: Engine,
    keyring: Keyring,
    entry: ProviderEntry,
    *,
    client_id: str,
    user_id: str,
    organization_id: str | None,
    redirect_uri: str,
    scopes: Sequence[str],
    connection_config: Mapping[str, str],
    metadata: Mapping[str, Any],
    callback: str,
    require_confirmation: bool = False,
) -> PendingAuthorization:
    """A PENDING integration and its state row, in one transaction."""
    now = utcnow()
    state = new_state()
    integration = Integration(
        user_id=user_id,
        organization_id=organization_id,
        provider=entry.key,
        status=IntegrationStatus.PENDING,
        is_active=True,
        scope=list(scopes),
        meta=dict(metadata),
        connection_config=dict(connection_config),
        created_at=now,
        updated_at=now,
    )
    verifier, challenge = pkce_pair() if entry.pkce else (None, None)
    row = OAuthState(
        state_hash=hash_state(state),
        integration_id=integration.id,
        provider=entry.key,
        user_id=user_id,
        redirect_uri=redirect_uri,
        callback_url=callback,
        scopes=list(scopes),
        meta=dict(metadata),
        expires_at=now + STATE_TTL,
        require_confirmation=require_confirmation,
        created_at=now,
    )
    if verifier is not None:
        row.code_verifier = keyring.seal(verifier, verifier_context(row.id))
    url = authorization_url(
        entry,
        client_id=client_id,
        redirect_uri=callback,
        scopes=scopes,
        state=state,
        code_challenge=challenge,
        connection_config=connection_config,
    )
    with session_scope(engine) as session:
        session.add(integration)
        session.flush()  # the state row's foreign key needs the integration first
        session.add(row)
    return PendingAuthorization(integration, state, url, row.expires_at)


def discard_authorization(engine: Engine, integration_id: uuid.UUID) -> None:
    """Undo `create_authorization` when the workflow could not be started."""
    with session_scope(engine) as session:
        integration = session.get(Integration, integration_id)
        if integration is not None:
            session.delete(integration)


# --- the callback ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumedState:
    state_id: uuid.UUID
    integration_id: uuid.UUID
    provider: str
    user_id: str
    redirect_uri: str
    # requireConfirmation: the one-time code for the application (only its hash is kept).
    confirmation_code: str | None = field(default=None, repr=False)


def consume_state(
    engine: Engine,
    keyring: Keyring,
    *,
    provider: str,
    state: str,
    code: str | None,
    error: str | None,
    confirmation_window: timedelta = CONFIRMATION_WINDOW,
) -> ConsumedState | None:
    """Use the state once; None when it is unknown, expired, used or another provider's.

    The code is sealed into the row (bound to it) for the exchange activity to read, so
    it never travels through the workflow's history; a provider error is kept instead.
    If the authorization asked for confirmation, the same UPDATE stores the hash of a
    new confirmation code, valid `confirmation_window`, returned for the redirect only.
    """
    if not state or len(state) > 512:
        return None
    digest = hash_state(state)
    with Session(engine) as session:
        row = session.exec(select(OAuthState).where(OAuthState.state_hash == digest)).first()
        if row is None:
            return None
        now = utcnow()
        values: dict[str, Any] = {"used_at": now}
        confirmation = None
        if code:
            values["code"] = keyring.seal(code, code_context(row.id))
            if row.require_confirmation:
                confirmation = secrets.token_urlsafe(CONFIRMATION_BYTES)
                values["confirmation_hash"] = hash_confirmation(confirmation)
                values["confirmation_expires_at"] = now + confirmation_window
        else:
            values["provider_error"] = (error or "the provider returned no code")[:500]
        claimed = session.execute(
            update(OAuthState)
            .where(OAuthState.id == row.id)  # type: ignore[arg-type]
            .where(OAuthState.used_at.is_(None))  # type: ignore[union-attr]
            .where(OAuthState.expires_at > utcnow())  # type: ignore[arg-type]
            .where(OAuthState.provider == provider.lower())  # type: ignore[arg-type]
            .values(**values)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return ConsumedState(
            state_id=row.id,
            integration_id=row.integration_id,
            provider=row.provider,
            user_id=row.user_id,
            redirect_uri=row.redirect_uri,
            confirmation_code=confirmation,
        )


# --- the confirmation ----------------------------------------------------------------------


class Confirmation(StrEnum):
    CONFIRMED = "CONFIRMED"
    WRONG_CODE = "WRONG_CODE"  # counted; `attempts_left` more may follow
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"  # burnt: no code confirms it any more
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"  # the code is single use
    NOT_REQUIRED = "NOT_REQUIRED"  # initiated without requireConfirmation
    NOT_READY = "NOT_READY"  # the user has not come back from the provider yet
    EXPIRED = "EXPIRED"  # the window closed (or the connection ended)


@dataclass(frozen=True)
class ConfirmationAttempt:
    result: Confirmation
    attempts_left: int = 0


def confirm_connection(engine: Engine, integration_id: uuid.UUID, code: str) -> ConfirmationAttempt:
    """Check the application's confirmation code against the stored hash, once.

    Every change is one conditional UPDATE, so concurrent attempts are counted exactly
    and the right code racing the fifth wrong one (or the workflow expiring the
    confirmation) has one winner: the right code marks the state confirmed and clears
    the hash; a wrong one counts, and the fifth clears the hash (burnt).
    """
    now = utcnow()
    digest = hash_confirmation(code)
    with Session(engine) as session:
        row = session.exec(
            select(OAuthState)
            .where(col(OAuthState.integration_id) == integration_id)
            .order_by(col(OAuthState.created_at).desc())
        ).first()
        if row is None or not row.require_confirmation:
            return ConfirmationAttempt(Confirmation.NOT_REQUIRED)
        state_id = row.id
        if row.confirmed_at is not None:
            return ConfirmationAttempt(Confirmation.ALREADY_CONFIRMED)
        if row.confirmation_attempts >= MAX_CONFIRMATION_ATTEMPTS:
            return ConfirmationAttempt(Confirmation.TOO_MANY_ATTEMPTS)
        if row.confirmation_hash is None:
            # Not called back yet, or the workflow expired (or disconnected) it.
            ready = row.used_at is not None or row.confirmation_expires_at is not None
            return ConfirmationAttempt(Confirmation.EXPIRED if ready else Confirmation.NOT_READY)
        deadline = as_utc(row.confirmation_expires_at)
        if deadline is None or deadline <= now:
            return ConfirmationAttempt(Confirmation.EXPIRED)
        open_ = [
            col(OAuthState.id) == state_id,
            col(OAuthState.confirmation_hash).is_not(None),
            col(OAuthState.confirmed_at).is_(None),
            col(OAuthState.confirmation_attempts) < MAX_CONFIRMATION_ATTEMPTS,
            col(OAuthState.confirmation_expires_at) > now,
        ]
        if hmac.compare_digest(digest, row.confirmation_hash):
            claimed = session.execute(
                update(OAuthState)
                .where(*open_, col(OAuthState.confirmation_hash) == digest)
                .values(confirmed_at=now, confirmation_hash=None)
            )
            session.commit()
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                return ConfirmationAttempt(Confirmation.CONFIRMED)
            # Lost a race (burnt or expired meanwhile): answer from the new state.
            return _settled(engine, state_id)
        attempts = col(OAuthState.confirmation_attempts)
        counted = session.execute(
            update(OAuthState)
            .where(*open_)
            .values(
                confirmation_attempts=attempts + 1,
                confirmation_hash=case(
                    (attempts + 1 >= MAX_CONFIRMATION_ATTEMPTS, null()),
                    else_=col(OAuthState.confirmation_hash),
                ),
            )
        )
        if counted.rowcount == 1:  # type: ignore[attr-defined]
            # This transaction holds the row until it commits: the count is this attempt's.
            count = session.exec(select(attempts).where(col(OAuthState.id) == state_id)).one()
            session.commit()
            if count >= MAX_CONFIRMATION_ATTEMPTS:
                return ConfirmationAttempt(Confirmation.TOO_MANY_ATTEMPTS)
            return ConfirmationAttempt(Confirmation.WRONG_CODE, MAX_CONFIRMATION_ATTEMPTS - count)
        session.commit()
    return _settled(engine, state_id)


def _settled(engine: Engine, state_id: uuid.UUID) -> ConfirmationAttempt:
    """The confirmation's state after a write: what a losing or wrong attempt answers."""
    with Session(engine) as session:
        row = session.get(OAuthState, state_id)
    assert row is not None
    if row.confirmed_at is not None:
        return ConfirmationAttempt(Confirmation.ALREADY_CONFIRMED)
    if row.confirmation_attempts >= MAX_CONFIRMATION_ATTEMPTS:
        return ConfirmationAttempt(Confirmation.TOO_MANY_ATTEMPTS)
    deadline = as_utc(row.confirmation_expires_at)
    if row.confirmation_hash is None or deadline is None or deadline <= utcnow():
        return ConfirmationAttempt(Confirmation.EXPIRED)
    return ConfirmationAttempt(
        Confirmation.WRONG_CODE, MAX_CONFIRMATION_ATTEMPTS - row.confirmation_attempts
    )
