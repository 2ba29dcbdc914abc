"""A refresh's lead is measured from when the tokens were stored, not from `lastSyncAt`:
other syncs of the integration (a publication) move `lastSyncAt`, and a token whose
integration was synced a moment ago is still due for its refresh."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api.routes.oauth.integrations import _admit
from relay.db import utcnow
from relay.models.oauth import Integration
from relay.oauth.catalog import load_catalog
from relay.oauth.repository import CredentialRead
from relay.oauth.tokens import Tokens


def _read(*, stored_ago: timedelta, synced_ago: timedelta, expires_in: timedelta) -> CredentialRead:
    now = utcnow()
    integration = Integration(
        id=uuid.uuid4(),
        user_id="u",
        provider="github",
        status="CONNECTED",
        is_active=True,
        expires_at=now + expires_in,
        last_sync_at=now - synced_ago,
    )
    return CredentialRead(
        integration=integration,
        awaiting_confirmation=False,
        tokens=Tokens(access_token="a", refresh_token="r", version=1),
        tokens_stored_at=now - stored_ago,
    )


def test_a_sync_of_the_integration_does_not_postpone_a_due_refresh() -> None:
    catalog = load_catalog(None)
    buffer = catalog.get("github").token_expiration_buffer  # type: ignore[union-attr]
    # An hour-long token, stored an hour ago, expiring within the buffer; a publication
    # synced the integration a second ago. Measured from lastSyncAt the lead would shrink
    # to half the remaining life and the token would be served unrefreshed.
    due = _read(
        stored_ago=timedelta(hours=1),
        synced_ago=timedelta(seconds=1),
        expires_in=timedelta(seconds=buffer * 2 // 3),
    )
    assert _admit(due.integration.id, catalog, due) is False  # refresh first
    fresh = _read(
        stored_ago=timedelta(minutes=1),
        synced_ago=timedelta(seconds=1),
        expires_in=timedelta(hours=1),
    )
    assert _admit(fresh.integration.id, catalog, fresh) is True  # served as is
