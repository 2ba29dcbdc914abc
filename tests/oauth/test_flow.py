"""The pieces under the workflow: state and PKCE, the redirect allow-list, the token
protocol's classification of provider answers, sealed token storage."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from relay.crypto import DecryptionError, Keyring
from relay.db import utcnow
from relay.errors import ErrorCode
from relay.models.oauth import IntegrationCredential, OAuthState
from relay.oauth.catalog import ProviderEntry, load_catalog
from relay.oauth.flow import (
    consume_state,
    create_authorization,
    hash_state,
    new_state,
    pkce_pair,
    redirect_allowed,
    with_query,
)
from relay.oauth.protocol import (
    parse_token_response,
    public_extras,
    revocation_outcome,
    revocation_request,
    token_request,
)
from relay.oauth.schedule import refresh_due_at
from relay.oauth.tokens import StaleCredentials, TokenStore

ALLOWED = ["http://localhost", "http://127.0.0.1", "https://app.example.com/oauth"]


def _entry(**fields: object) -> ProviderEntry:
    values: dict[str, object] = {
        "key": "acme",
        "display_name": "Acme",
        "authorization_url": "https://acme.example/authorize?tenant=1",
        "token_url": "https://acme.example/token",
        "default_scopes": ["a", "b"],
    }
    values.update(fields)
    return ProviderEntry.model_validate(values)


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("http://localhost:3000/done", True),
        ("http://localhost/done?x=1", True),
        ("http://127.0.0.1:8080/cb", True),
        ("https://app.example.com/oauth", True),
        ("https://app.example.com/oauth/done", True),
        ("https://APP.example.com/oauth/done", True),
        ("https://app.example.com/oauthx", False),  # not a whole path segment
        ("https://app.example.com/other", False),
        ("https://app.example.com:8443/oauth", False),  # a non-default port, not loopback
        ("http://app.example.com/oauth", False),  # scheme must match
        ("http://localhost.evil.example/done", False),
        ("http://localhost@evil.example/done", False),
        ("http://user:pass@localhost/done", False),
        ("http://localhost/done#fragment", False),
        ("javascript:alert(1)", False),
        ("//localhost/done", False),
        ("http://localhost:99999/done", False),
    ],
)
def test_redirect_allow_list(uri: str, allowed: bool) -> None:
    assert redirect_allowed(uri, ALLOWED) is allowed


def test_state_and_pkce_follow_rfc_7636_and_9700() -> None:
    states = {new_state() for _ in range(100)}
    assert len(states) == 100
    assert all(len(base64.urlsafe_b64decode(s + "=")) == 32 for s in states)  # 256 bits
    assert hash_state("abc") == hashlib.sha256(b"abc").hexdigest()
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == expected.decode()


def test_with_query_keeps_the_apps_own_parameters() -> None:
    url = with_query("http://localhost:3000/done?tab=apps&status=old", {"status": "success"})
    assert parse_qs(urlsplit(url).query) == {"tab": ["apps"], "status": ["success"]}


def _tokens(entry: ProviderEntry, status: int, body: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return parse_token_response(
        entry,
        status,
        {"Retry-After": "7"},
        body,
        operation="token refresh",
        grant_code=ErrorCode.REFRESH_FAILED,
        other_code=ErrorCode.PROVIDER_ERROR,
        **kwargs,  # type: ignore[arg-type]
    )


def test_token_answers_are_classified() -> None:
    entry = _entry()
    with pytest.raises(Exception) as grant:
        _tokens(
            entry,
            400,
            '{"error": "invalid_grant", "error_description": "rt-SECRET-123 was revoked"}',
            secrets=("rt-SECRET-123",),
        )
    assert grant.value.type == "REFRESH_FAILED" and grant.value.non_retryable  # type: ignore[attr-defined]
    assert "invalid_grant" in grant.value.message and "rt-SECRET-123" not in grant.value.message  # type: ignore[attr-defined]

    with pytest.raises(Exception) as outage:
        _tokens(entry, 503, "<html>down</html>")
    assert not outage.value.non_retryable  # type: ignore[attr-defined]
    assert outage.value.next_retry_delay == timedelta(seconds=7)  # type: ignore[attr-defined]

    with pytest.raises(Exception) as busy:
        _tokens(entry, 400, '{"error": "temporarily_unavailable"}')
    assert not busy.value.non_retryable  # type: ignore[attr-defined]

    with pytest.raises(Exception) as client:
        _tokens(entry, 401, '{"error": "invalid_client"}')
    assert client.value.type == "PROVIDER_ERROR" and client.value.non_retryable  # type: ignore[attr-defined]

    # Slack answers 200 with ok=false; nothing to store is a failure, not a success.
    with pytest.raises(Exception) as slack:
        _tokens(entry, 200, '{"ok": false, "error": "invalid_refresh_token"}')
    assert slack.value.type == "REFRESH_FAILED"  # type: ignore[attr-defined]


def test_token_responses_are_parsed_without_keeping_secrets() -> None:
    slack = load_catalog().require("slack")
    parsed = _tokens(
        slack,
        200,
        '{"ok": true, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write,commands",'
        ' "team": {"id": "T1", "name": "Acme HQ"},'
        ' "authed_user": {"id": "U1", "access_token": "xoxp-2", "scope": "identify"}}',
    )
    assert parsed.access_token == "xoxb-1" and parsed.refresh_token is None
    assert parsed.scope == ["chat:write", "commands"]
    assert parsed.account_name == "Acme HQ"
    assert parsed.extras["authed_user"] == {"id": "U1", "scope": "identify"}
    assert "xoxp-2" not in repr(parsed.extras) and "xoxb-1" not in repr(parsed)

    tiktok_ads = load_catalog().require("tiktok_ads")
    wrapped = _tokens(
        tiktok_ads,
        200,
        '{"code": 0, "message": "OK", "data": {"access_token": "t-1", "scope": [4, 5],'
        ' "advertiser_ids": ["7001"]}}',
    )
    assert wrapped.access_token == "t-1" and wrapped.scope == ["4", "5"]
    assert wrapped.extras == {"advertiser_ids": ["7001"]}

    github = load_catalog().require("github")
    form = _tokens(github, 200, "access_token=gho_1&scope=repo%2Cuser&token_type=bearer")
    assert form.access_token == "gho_1" and form.scope == ["repo", "user"]

    expiring = _tokens(
        _entry(), 200, '{"access_token": "a", "expires_in": "3599", "refresh_token": "r"}'
    )
    assert expiring.expires_in == 3599 and expiring.refresh_token == "r"


def test_only_the_catalogs_public_extras_stay_in_the_clear_and_the_rest_is_sealed() -> None:
    slack = load_catalog().require("slack")
    parsed = _tokens(
        slack,
        200,
        '{"ok": true, "access_token": "xoxb-1", "team": {"id": "T1", "name": "Acme HQ"},'
        ' "incoming_webhook": {"url": "https://hooks.slack.com/services/T1/B1/SECRET",'
        ' "channel": "#x", "channel_id": "C1"}, "id_token": "eyJ.secret"}',
    )
    assert parsed.extras == {
        "team": {"id": "T1", "name": "Acme HQ"},
        "incoming_webhook": {"channel": "#x", "channel_id": "C1"},
    }
    assert parsed.sealed_extras["incoming_webhook"]["url"].endswith("/SECRET")
    assert "SECRET" not in repr(parsed)
    assert "id_token" not in parsed.sealed_extras and "access_token" not in parsed.sealed_extras
    # Nothing is public unless the entry lists it.
    bare = _tokens(_entry(), 200, '{"access_token": "a", "team": {"id": "T1"}}')
    assert bare.extras == {} and bare.sealed_extras == {"team": {"id": "T1"}}
    # A path through a credential-like key is never public, whatever the entry says.
    assert public_extras({"authed_user": {"access_token": "x"}}, ["authed_user"]) == {
        "authed_user": {}
    }


def test_token_requests_authenticate_the_client_as_the_catalog_says() -> None:
    basic = _entry(token_request_auth_method="basic")
    request = token_request(
        basic,
        url=basic.token_url,
        client_id="id:1",
        client_secret="s&2",
        grant={"grant_type": "refresh_token", "refresh_token": "rt-secret-1"},
        connection_config={},
    )
    # RFC 6749 section 2.3.1: form-urlencode, then base64.
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"id%3A1:s%262").decode()
    assert request.form == {"grant_type": "refresh_token", "refresh_token": "rt-secret-1"}
    assert set(request.secrets) == {"s&2", "rt-secret-1"}
    assert "rt-secret-1" not in repr(request) and "s&2" not in repr(request)

    tiktok = load_catalog().require("tiktok")
    body = token_request(
        tiktok,
        url=tiktok.token_url,
        client_id="ck",
        client_secret="cs",
        grant={"grant_type": "authorization_code", "code": "c"},
        connection_config={},
    )
    assert body.form is not None and body.form["client_key"] == "ck"
    assert body.form["client_secret"] == "cs"

    ads = load_catalog().require("tiktok_ads")
    as_json = token_request(
        ads,
        url=ads.token_url,
        client_id="app",
        client_secret="sec",
        grant={"grant_type": "authorization_code", "auth_code": "c"},
        connection_config={},
    )
    assert as_json.json == {
        "grant_type": "authorization_code",
        "auth_code": "c",
        "app_id": "app",
        "secret": "sec",
    }

    revoke = revocation_request(
        _entry(revoke_url="https://acme.example/revoke"),
        client_id="id",
        client_secret="s",
        token="t",
        token_type_hint="refresh_token",
        connection_config={},
    )
    assert revoke.form == {
        "token": "t",
        "token_type_hint": "refresh_token",
        "client_id": "id",
        "client_secret": "s",
    }


def test_revocation_answers() -> None:
    assert revocation_outcome("acme", 200, {}, "", ()) is True
    assert revocation_outcome("acme", 400, {}, '{"error": "unsupported_token_type"}', ()) is False
    with pytest.raises(Exception) as outage:
        revocation_outcome("acme", 503, {}, "", ())
    assert not outage.value.non_retryable  # type: ignore[attr-defined]


def test_refresh_is_due_at_the_buffer_but_never_before_half_the_tokens_life() -> None:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    hour = issued + timedelta(hours=1)
    assert refresh_due_at(hour, issued, 300) == hour - timedelta(seconds=300)
    minute = issued + timedelta(seconds=60)
    assert refresh_due_at(minute, issued, 300) == issued + timedelta(seconds=30)
    assert refresh_due_at(hour, None, 300) == hour - timedelta(seconds=300)


def _pending(engine: Engine, keyring: Keyring) -> tuple[str, uuid.UUID]:
    pending = create_authorization(
        engine,
        keyring,
        _entry(),
        client_id="id",
        user_id="user-1",
        organization_id=None,
        redirect_uri="http://localhost:3000/done",
        scopes=["a"],
        connection_config={},
        metadata={},
        callback="http://localhost:8000/v1/integrations/oauth/callback/acme",
    )
    return pending.state, pending.integration.id


def test_a_state_is_stored_hashed_and_consumed_once_even_under_a_race(
    engine: Engine, keyring: Keyring
) -> None:
    state, integration_id = _pending(engine, keyring)
    with engine.connect() as connection:
        raw = connection.execute(OAuthState.__table__.select()).one()  # type: ignore[attr-defined]
    with Session(engine) as session:
        row = session.exec(select(OAuthState)).one()
    assert state not in repr(tuple(raw)) and row.state_hash == hash_state(state)
    assert row.code_verifier is not None
    assert row.code_verifier.startswith(f"{keyring.current_kid}:")

    results: list[object] = []
    barrier = threading.Barrier(8)

    def callback() -> None:
        barrier.wait()
        results.append(
            consume_state(
                engine, keyring, provider="acme", state=state, code="the-code", error=None
            )
        )

    threads = [threading.Thread(target=callback) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert winners[0].integration_id == integration_id  # type: ignore[attr-defined]
    with Session(engine) as session:
        stored = session.get(OAuthState, winners[0].state_id)  # type: ignore[attr-defined]
    assert stored is not None and stored.code is not None and "the-code" not in stored.code


def test_a_state_for_another_provider_or_past_its_ten_minutes_is_refused(
    engine: Engine, keyring: Keyring
) -> None:
    state, integration_id = _pending(engine, keyring)
    assert (
        consume_state(engine, keyring, provider="github", state=state, code="c", error=None) is None
    )
    with Session(engine) as session:
        session.execute(
            update(OAuthState)
            .where(col(OAuthState.integration_id) == integration_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert (
        consume_state(engine, keyring, provider="acme", state=state, code="c", error=None) is None
    )
    assert consume_state(engine, keyring, provider="acme", state="", code="c", error=None) is None


def test_sealed_tokens_are_bound_to_their_row_and_version(engine: Engine, keyring: Keyring) -> None:
    _, first = _pending(engine, keyring)
    _, second = _pending(engine, keyring)
    store = TokenStore(engine, keyring)
    with Session(engine) as session:
        store.put(session, first, "access-1", "refresh-1")
        store.put(session, second, "access-2", None)
        session.commit()
    tokens = store.read(first)
    assert tokens is not None and tokens.access_token == "access-1"
    assert "access-1" not in repr(tokens)

    # A ciphertext copied to another integration's row does not open there.
    with Session(engine) as session:
        stolen = session.get(IntegrationCredential, first)
        assert stolen is not None
        session.execute(
            update(IntegrationCredential)
            .where(col(IntegrationCredential.integration_id) == second)
            .values(access_token=stolen.access_token)
        )
        session.commit()
    with pytest.raises(DecryptionError):
        store.read(second)

    # A writer holding an old version cannot overwrite a newer token.
    with Session(engine) as session:
        store.replace(session, first, expected_version=1, access_token="a2", refresh_token="r2")
        session.commit()
    with Session(engine) as session, pytest.raises(StaleCredentials):
        store.replace(session, first, expected_version=1, access_token="a3", refresh_token="r3")
    final = store.read(first)
    assert final is not None and (final.access_token, final.refresh_token, final.version) == (
        "a2",
        "r2",
        2,
    )
