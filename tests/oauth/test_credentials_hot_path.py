"""The credential read's hot path keeps its guarantees: API-key lookups are cached per
process, yet a key revoked elsewhere is refused within a second and a cached key still
meets every scope check; every read is in the access log with its key and time, also
when reads come at once (one commit for many) and when the API is stopped mid-load.

Two apps over one database stand for two API processes: each has its own key cache.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.api_keys import (
    REVOCATION_BOUND,
    TRUST_WINDOW,
    KeyCache,
    create_key,
    hash_key,
    lookup,
    revocation_fingerprint,
)
from relay.crypto import Keyring
from relay.db import utcnow
from relay.models.oauth import Integration, IntegrationCredentialAccess, OAuthState
from relay.models.platform import ApiKey
from relay.oauth.contracts import IntegrationStatus
from relay.oauth.tokens import TokenStore
from relay.settings import Settings
from tests.conftest import ServerThread
from tests.support.api import bearer, closed_address

TOKEN = "hot-path-access-token"  # noqa: S105 (a test's made-up token)


def _seed_integration(engine: Engine, keyring: Keyring) -> uuid.UUID:
    """A CONNECTED integration with a sealed token valid for a day (no refresh due)."""
    now = utcnow()
    integration = Integration(
        user_id="hot-path-user",
        provider="github",
        status=IntegrationStatus.CONNECTED,
        token_type="bearer",  # noqa: S106 (a token type, not a secret)
        expires_at=now + timedelta(days=1),
        scope=["repo"],
        last_sync_at=now,
        connected_at=now,
    )
    with Session(engine) as session:
        session.add(integration)
        session.flush()
        TokenStore(engine, keyring).put(session, integration.id, TOKEN, None, {"team": "t"})
        session.commit()
        return integration.id


def _revoke(engine: Engine, key_id: uuid.UUID) -> None:
    """As `relay keys revoke` in another process: the row only, not this process's caches."""
    with Session(engine) as session:
        session.execute(update(ApiKey).where(col(ApiKey.id) == key_id).values(revoked_at=utcnow()))
        session.commit()


def _access_rows(engine: Engine, integration_id: uuid.UUID) -> list[IntegrationCredentialAccess]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(IntegrationCredentialAccess).where(
                    col(IntegrationCredentialAccess.integration_id) == integration_id
                )
            ).all()
        )


@contextmanager
def _apis(settings: Settings, engine: Engine, keyring: Keyring, count: int) -> Iterator[list[str]]:
    """`count` apps (each with its own key cache, as separate processes) over one database."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                ServerThread(create_app(settings, engine=engine, keyring=keyring))
            ).url
            for _ in range(count)
        ]


@pytest.fixture
def settings_without_temporal(make_settings: Callable[..., Settings], engine: Engine) -> Settings:
    return make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=closed_address(),
    )


@pytest.fixture
def temporal_settings(
    make_settings: Callable[..., Settings], engine: Engine, temporal_env: WorkflowEnvironment
) -> Settings:
    return make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=temporal_env.client.service_client.config.target_host,
    )


async def _until_cached(url: str, raw: str, cache: KeyCache) -> None:
    """Requests until the app's cache holds the key (it caches once its first revocation
    check has run, a quarter of a second after start at most)."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=url, headers=bearer(raw)) as http:
        while time.monotonic() < deadline:
            assert (await http.get("/v1/integrations")).status_code == 200
            if cache.get(hash_key(raw)) is not None:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the key was never cached")


async def test_a_key_revoked_elsewhere_is_refused_by_every_api_within_a_second(
    settings_without_temporal: Settings, engine: Engine, keyring: Keyring
) -> None:
    record, raw = create_key(engine, f"hot-{uuid.uuid4().hex[:6]}", ["admin"])
    apps = [create_app(settings_without_temporal, engine=engine, keyring=keyring) for _ in range(2)]
    with ServerThread(apps[0]) as first, ServerThread(apps[1]) as second:
        for app, server in ((apps[0], first), (apps[1], second)):
            await _until_cached(server.url, raw, app.state.key_cache)
        # Both apps answer from their caches now; the revocation reaches neither directly.
        _revoke(engine, record.id)
        await asyncio.sleep(REVOCATION_BOUND)
        for server in (first, second):
            async with httpx.AsyncClient(base_url=server.url, headers=bearer(raw)) as http:
                refused = await http.get("/v1/integrations")
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "UNAUTHORIZED"


async def test_a_key_revoked_in_this_process_is_refused_at_once(
    settings_without_temporal: Settings, engine: Engine, keyring: Keyring
) -> None:
    from relay.api_keys import revoke_key

    name = f"hot-{uuid.uuid4().hex[:6]}"
    _, raw = create_key(engine, name, ["admin"])
    app = create_app(settings_without_temporal, engine=engine, keyring=keyring)
    with ServerThread(app) as server:
        await _until_cached(server.url, raw, app.state.key_cache)
        revoke_key(engine, name)
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(raw)) as http:
            assert (await http.get("/v1/integrations")).status_code == 401


async def test_a_cached_key_still_meets_the_scope_checks(
    settings_without_temporal: Settings, engine: Engine, keyring: Keyring
) -> None:
    _, app_key = create_key(engine, f"app-{uuid.uuid4().hex[:6]}", ["app"])
    _, reader = create_key(engine, f"reader-{uuid.uuid4().hex[:6]}", ["credentials:read"])
    app = create_app(settings_without_temporal, engine=engine, keyring=keyring)
    path = f"/v1/integrations/{uuid.uuid4()}/credentials"
    with ServerThread(app) as server:
        await _until_cached(server.url, app_key, app.state.key_cache)
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(3):  # from the cache each time
                forbidden = await http.get(path, headers=bearer(app_key))
                assert forbidden.status_code == 403
                assert forbidden.json()["error"]["details"] == {
                    "requiredScope": "credentials:read",
                    "keyScopes": ["app"],
                }
            # The reader may read tokens (past the scope check: Temporal is what is
            # missing here) and nothing else, cached or not.
            for _ in range(3):
                past = await http.get(path, headers=bearer(reader))
                assert past.status_code == 503, past.text
                listing = await http.get("/v1/integrations", headers=bearer(reader))
                assert listing.status_code == 403
                assert listing.json()["error"]["details"]["requiredScope"] == "app"
        assert app.state.key_cache.get(hash_key(reader)) is not None


async def test_every_read_is_logged_with_its_key_and_time_also_when_concurrent(
    temporal_settings: Settings, engine: Engine, keyring: Keyring
) -> None:
    integration_id = _seed_integration(engine, keyring)
    record, raw = create_key(engine, f"reader-{uuid.uuid4().hex[:6]}", ["credentials:read"])
    path = f"/v1/integrations/{integration_id}/credentials"
    started = utcnow()
    with _apis(temporal_settings, engine, keyring, 2) as urls:
        async with (
            httpx.AsyncClient(base_url=urls[0], headers=bearer(raw), timeout=30) as first,
            httpx.AsyncClient(base_url=urls[1], headers=bearer(raw), timeout=30) as second,
        ):
            answers = await asyncio.gather(
                *(
                    (first if n % 2 else second).get(path)
                    for n in range(60)  # two processes, 30 concurrent reads each
                )
            )
            one = await first.get(path)  # and one alone
    ended = utcnow()
    for answer in [*answers, one]:
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        data = answer.json()["data"]
        assert data["accessToken"] == TOKEN
        assert data["extras"] == {"team": "t"}
    rows = _access_rows(engine, integration_id)
    assert len(rows) == 61
    assert {row.api_key_id for row in rows} == {record.id}
    assert len({row.id for row in rows}) == 61
    for row in rows:
        assert row.refreshed is False
        assert row.client_address == "127.0.0.1"
        accessed: datetime = row.accessed_at
        assert started <= accessed <= ended


async def test_reads_answered_before_a_shutdown_are_all_logged(
    temporal_settings: Settings, engine: Engine, keyring: Keyring
) -> None:
    integration_id = _seed_integration(engine, keyring)
    record, raw = create_key(engine, f"reader-{uuid.uuid4().hex[:6]}", ["credentials:read"])
    path = f"/v1/integrations/{integration_id}/credentials"
    app = create_app(temporal_settings, engine=engine, keyring=keyring)
    server = ServerThread(app)
    answered = 0
    with server:
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(raw), timeout=30) as http:
            assert (await http.get(path)).status_code == 200
            answered += 1

            async def reader() -> int:
                done = 0
                for _ in range(200):
                    try:
                        response = await http.get(path)
                    except httpx.HTTPError:
                        return done  # the server went away
                    if response.status_code != 200:
                        return done
                    done += 1
                return done

            readers = [asyncio.create_task(reader()) for _ in range(20)]
            await asyncio.sleep(0.5)
            # uvicorn's graceful shutdown, as on SIGTERM: in-flight reads finish first.
            server.server.should_exit = True
            answered += sum(await asyncio.gather(*readers))
    rows = _access_rows(engine, integration_id)
    assert answered > 1
    # Every read that was answered with a token is in the log (a read is answered only
    # after the commit holding its row), and nothing else is.
    assert len(rows) == answered
    assert {row.api_key_id for row in rows} == {record.id}


async def test_the_access_log_keeps_a_read_whose_neighbour_in_the_batch_is_refused(
    engine: Engine, keyring: Keyring
) -> None:
    from relay.oauth.repository import CredentialAccess, write_credential_accesses

    integration_id = _seed_integration(engine, keyring)
    good = CredentialAccess(integration_id, None, False, "127.0.0.1", utcnow())
    orphan = CredentialAccess(uuid.uuid4(), None, False, "127.0.0.1", utcnow())
    results = write_credential_accesses(engine, [good, orphan, good])
    assert results[0] is None and results[2] is None
    assert results[1] is not None
    assert len(_access_rows(engine, integration_id)) == 2


def test_a_lookup_that_overlapped_an_invalidation_is_not_cached(engine: Engine) -> None:
    record, raw = create_key(engine, f"race-{uuid.uuid4().hex[:6]}")
    cache = KeyCache(engine)
    cache.apply(revocation_fingerprint(engine), time.monotonic())
    key_hash = hash_key(raw)
    generation = cache.generation()
    found = lookup(engine, key_hash)  # read while the key was live…
    assert found is not None
    _revoke(engine, record.id)  # …revoked meanwhile, and a check noticed:
    cache.apply(revocation_fingerprint(engine), time.monotonic())
    cache.put(key_hash, found, generation)
    assert cache.get(key_hash) is None
    assert lookup(engine, key_hash) is None  # misses are never cached: the database says no


def test_the_cache_is_trusted_only_while_checked(engine: Engine) -> None:
    _, raw = create_key(engine, f"trust-{uuid.uuid4().hex[:6]}")
    cache = KeyCache(engine)
    key_hash = hash_key(raw)
    found = lookup(engine, key_hash)
    assert found is not None
    cache.put(key_hash, found, cache.generation())
    assert cache.get(key_hash) is None  # never checked: not trusted
    cache.apply(revocation_fingerprint(engine), time.monotonic())
    cache.put(key_hash, found, cache.generation())
    assert cache.get(key_hash) is not None
    # A check that started longer ago than the trust window proves nothing now.
    stale = KeyCache(engine)
    stale.apply(revocation_fingerprint(engine), time.monotonic() - TRUST_WINDOW - 0.01)
    stale.put(key_hash, found, stale.generation())
    assert stale.get(key_hash) is None
    # A failed check forgets everything.
    cache.forget()
    assert cache.get(key_hash) is None and len(cache) == 0


def test_the_fingerprint_changes_on_revocation_deletion_and_creation(engine: Engine) -> None:
    record, _ = create_key(engine, f"fp-{uuid.uuid4().hex[:6]}")
    before = revocation_fingerprint(engine)
    _revoke(engine, record.id)
    revoked = revocation_fingerprint(engine)
    assert revoked != before
    other, _ = create_key(engine, f"fp-{uuid.uuid4().hex[:6]}")
    created = revocation_fingerprint(engine)
    assert created != revoked
    with Session(engine) as session:
        session.delete(session.get(ApiKey, other.id))
        session.commit()
    assert revocation_fingerprint(engine) != created


def test_the_confirmation_state_is_read_with_the_credentials(
    engine: Engine, keyring: Keyring
) -> None:
    from relay.oauth.repository import awaiting_confirmation, read_credentials

    integration_id = _seed_integration(engine, keyring)
    read = read_credentials(engine, keyring, integration_id)
    assert read is not None and read.tokens is not None
    assert read.tokens.access_token == TOKEN
    assert read.awaiting_confirmation is False
    with Session(engine) as session:
        session.add(
            OAuthState(
                state_hash=uuid.uuid4().hex,
                integration_id=integration_id,
                provider="github",
                user_id="hot-path-user",
                redirect_uri="http://localhost/x",
                callback_url="http://localhost/cb",
                expires_at=utcnow() + timedelta(minutes=10),
                require_confirmation=True,
            )
        )
        session.commit()
    read = read_credentials(engine, keyring, integration_id)
    assert read is not None
    assert read.awaiting_confirmation is True
    assert awaiting_confirmation(engine, integration_id) is True
    assert read_credentials(engine, keyring, uuid.uuid4()) is None
