"""Publications' database reads and writes (synchronous; async callers use
`asyncio.to_thread`).

The route inserts a publication and its targets in one transaction before it starts the
workflow (so a bad request writes nothing and a good one is never half written); from then
on only the publication's workflow writes them, through its activities. Each target
attempt also leaves one row in seed 003's `integration_sync_logs` and the integration's
`last_sync_at` / `last_error`, written in the same transaction as the target's row.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.oauth import Integration, IntegrationSyncLog, SyncStatus
from relay.models.publishing import Publication, PublicationTarget
from relay.publishing.contracts import PublicationStatus, TargetStatus
from relay.webhooks.publish import publish_in, validate_event

P = Publication.__table__  # type: ignore[attr-defined]
T = PublicationTarget.__table__  # type: ignore[attr-defined]
_INTEGRATIONS = Integration.__table__  # type: ignore[attr-defined]
_SYNC_LOGS = IntegrationSyncLog.__table__  # type: ignore[attr-defined]
ERROR_LIMIT = 1000


@dataclass
class NewPublication:
    content_id: str
    user_id: str
    text: str
    link: str | None
    media_file_ids: list[str]
    scheduled_at: datetime | None
    idempotency_key: str | None
    # (integration id, provider) per target, in the request's order.
    targets: list[tuple[str, str]]
    # Targets the platform cannot take (decided at POST): integration id → (code, message).
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Due now (no scheduledAt, or one past): written PUBLISHING rather than SCHEDULED.
    due: bool = False

    def request_hash(self) -> str:
        """What the request asks for (not its key): one idempotencyKey, one request."""
        asked = {
            "contentId": self.content_id,
            "userId": self.user_id,
            "text": self.text,
            "link": self.link,
            "mediaFileIds": self.media_file_ids,
            "scheduledAt": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "integrationIds": sorted(integration for integration, _ in self.targets),
        }
        canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def key_of(publication_id: str) -> uuid.UUID | None:
    """A publication id from a path or a workflow: not one of Relay's ids is not found."""
    try:
        return uuid.UUID(publication_id)
    except ValueError:
        return None


_NOT_SKIPPED: tuple[None, None] = (None, None)


def insert_publication(
    engine: Engine, publication_id: str, new: NewPublication
) -> tuple[Row[Any], bool]:
    """The publication and its targets in one transaction: SCHEDULED, or PUBLISHING when
    it is due; each target PENDING, or SKIPPED with its reason. (row, True); when
    (contentId, idempotencyKey) exists already: (that row, False)."""
    now = utcnow()
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(P).values(
                    id=uuid.UUID(publication_id),
                    content_id=new.content_id,
                    user_id=new.user_id,
                    text=new.text,
                    link=new.link,
                    media_file_ids=list(new.media_file_ids),
                    status=(
                        PublicationStatus.PUBLISHING if new.due else PublicationStatus.SCHEDULED
                    ).value,
                    scheduled_at=new.scheduled_at,
                    idempotency_key=new.idempotency_key,
                    request_hash=new.request_hash(),
                    created_at=now,
                    updated_at=now,
                )
            )
            connection.execute(
                insert(T),
                [
                    {
                        "id": uuid.uuid4(),
                        "publication_id": uuid.UUID(publication_id),
                        "integration_id": integration_id,
                        "provider": provider,
                        "position": position,
                        "status": (
                            TargetStatus.SKIPPED
                            if integration_id in new.skipped
                            else TargetStatus.PENDING
                        ).value,
                        "skip_reason": new.skipped.get(integration_id, _NOT_SKIPPED)[0],
                        "last_error": new.skipped.get(integration_id, _NOT_SKIPPED)[1],
                        "remote": {},
                        "attempts": 0,
                        "updated_at": now,
                    }
                    for position, (integration_id, provider) in enumerate(new.targets)
                ],
            )
    except IntegrityError:
        if new.idempotency_key is None:
            raise
        existing = find_by_key(engine, new.content_id, new.idempotency_key)
        if existing is None:  # not the key's conflict
            raise
        return existing, False
    return load(engine, publication_id), True


def find(engine: Engine, publication_id: str) -> Row[Any] | None:
    key = key_of(publication_id)
    if key is None:
        return None
    with engine.connect() as connection:
        return connection.execute(select(P).where(P.c.id == key)).first()


def load(engine: Engine, publication_id: str) -> Row[Any]:
    row = find(engine, publication_id)
    if row is None:
        raise RelayError(
            ErrorCode.NOT_FOUND,
            f"no publication {publication_id}",
            {"publicationId": publication_id},
        )
    return row


def find_by_key(engine: Engine, content_id: str, idempotency_key: str) -> Row[Any] | None:
    with engine.connect() as connection:
        return connection.execute(
            select(P).where(P.c.content_id == content_id, P.c.idempotency_key == idempotency_key)
        ).first()


def targets(engine: Engine, publication_id: str) -> list[Row[Any]]:
    key = key_of(publication_id)
    if key is None:
        return []
    with engine.connect() as connection:
        return list(
            connection.execute(select(T).where(T.c.publication_id == key).order_by(T.c.position))
        )


def targets_of(engine: Engine, publication_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Row[Any]]]:
    """Every listed publication's targets (one query for a page)."""
    found: dict[uuid.UUID, list[Row[Any]]] = {key: [] for key in publication_ids}
    if not publication_ids:
        return found
    with engine.connect() as connection:
        rows = connection.execute(
            select(T).where(T.c.publication_id.in_(publication_ids)).order_by(T.c.position)
        )
        for row in rows:
            found[row.publication_id].append(row)
    return found


@dataclass
class PublishContext:
    """What one target's publish reads first, in one session: its row, the publication's,
    and the connection (None when it is gone)."""

    target: Row[Any]
    publication: Row[Any]
    integration: Integration | None


def publish_context(engine: Engine, publication_id: str, integration_id: str) -> PublishContext:
    key = key_of(integration_id)
    with Session(engine, expire_on_commit=False) as session:
        connection = session.connection()
        row = connection.execute(
            select(T).where(
                T.c.publication_id == uuid.UUID(publication_id),
                T.c.integration_id == integration_id,
            )
        ).first()
        publication = connection.execute(
            select(P).where(P.c.id == uuid.UUID(publication_id))
        ).first()
        integration = session.get(Integration, key) if key is not None else None
    if row is None or publication is None:
        raise RelayError(
            ErrorCode.NOT_FOUND,
            "no such publication target",
            {"publicationId": publication_id, "integrationId": integration_id},
        )
    return PublishContext(row, publication, integration)


def target(engine: Engine, publication_id: str, integration_id: str) -> Row[Any]:
    with engine.connect() as connection:
        row = connection.execute(
            select(T).where(
                T.c.publication_id == uuid.UUID(publication_id),
                T.c.integration_id == integration_id,
            )
        ).first()
    if row is None:
        raise RelayError(
            ErrorCode.NOT_FOUND,
            "no such publication target",
            {"publicationId": publication_id, "integrationId": integration_id},
        )
    return row


def publications_query(
    *, user_id: str | None = None, content_id: str | None = None, status: str | None = None
) -> Select[Any]:
    query = select(P)
    if user_id:
        query = query.where(P.c.user_id == user_id)
    if content_id:
        query = query.where(P.c.content_id == content_id)
    if status:
        query = query.where(P.c.status == status)
    return query


def set_status(engine: Engine, publication_id: str, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(P)
            .where(P.c.id == uuid.UUID(publication_id))
            .values(status=status, updated_at=utcnow())
        )


def cancel_pending(engine: Engine, publication_id: str) -> None:
    """The publication CANCELED, and every target that had not started with it."""
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            update(P)
            .where(P.c.id == uuid.UUID(publication_id))
            .values(status=PublicationStatus.CANCELED.value, updated_at=now)
        )
        connection.execute(
            update(T)
            .where(
                T.c.publication_id == uuid.UUID(publication_id),
                T.c.status == TargetStatus.PENDING.value,
            )
            .values(status=TargetStatus.CANCELED.value, updated_at=now)
        )


@dataclass
class TargetEvent:
    """An outgoing event written with the target's row (integration.synced / .error)."""

    type: str
    data: dict[str, Any]
    idempotency_key: str


def update_target(
    engine: Engine,
    publication_id: str,
    integration_id: str,
    *,
    sync: SyncEntry | None = None,
    event: TargetEvent | None = None,
    **values: Any,
) -> None:
    """The target's row, and (with `sync`) its sync log and the integration's last sync,
    and (with `event`) its outgoing event, in one transaction: a retry that finds the row
    settled finds its event written too."""
    if event is not None:
        validate_event(event.type, event.data, event.idempotency_key)
    with engine.begin() as connection:
        _update_target(connection, publication_id, integration_id, values)
        if sync is not None:
            _write_sync(connection, integration_id, sync)
        if event is not None:
            publish_in(
                connection,
                event.type,
                event.data,
                idempotency_key=event.idempotency_key,
                exclude_endpoint_id=None,
                now=utcnow(),
            )


def begin_attempt(engine: Engine, publication_id: str, integration_id: str) -> None:
    """An attempt at the platform starts: PUBLISHING, attempts + 1."""
    with engine.begin() as connection:
        connection.execute(
            update(T)
            .where(
                T.c.publication_id == uuid.UUID(publication_id),
                T.c.integration_id == integration_id,
            )
            .values(
                status=TargetStatus.PUBLISHING.value,
                attempts=T.c.attempts + 1,
                updated_at=utcnow(),
            )
        )


def _update_target(
    connection: Connection, publication_id: str, integration_id: str, values: dict[str, Any]
) -> None:
    if "last_error" in values and values["last_error"]:
        values["last_error"] = str(values["last_error"])[:ERROR_LIMIT]
    if "delete_error" in values and values["delete_error"]:
        values["delete_error"] = str(values["delete_error"])[:ERROR_LIMIT]
    connection.execute(
        update(T)
        .where(
            T.c.publication_id == uuid.UUID(publication_id),
            T.c.integration_id == integration_id,
        )
        .values(**values, updated_at=utcnow())
    )


@dataclass
class SyncEntry:
    """One attempt's sync log (seed 003's shape) and what it does to the integration."""

    action: str
    resource_id: str
    status: SyncStatus
    started_at: datetime
    error: str | None = None
    meta: dict[str, Any] | None = None


def _write_sync(connection: Connection, integration_id: str, entry: SyncEntry) -> None:
    key = uuid.UUID(integration_id)
    now = utcnow()
    connection.execute(
        insert(_SYNC_LOGS).values(
            id=uuid.uuid4(),
            integration_id=key,
            action=entry.action,
            resource_type="publication",
            resource_id=entry.resource_id,
            status=entry.status.value,
            items_processed=1 if entry.status == SyncStatus.COMPLETED else 0,
            items_failed=1 if entry.status == SyncStatus.FAILED else 0,
            error=entry.error[:ERROR_LIMIT] if entry.error else None,
            metadata=entry.meta or {},
            started_at=entry.started_at,
            completed_at=now,
        )
    )
    values: dict[str, Any] = {"last_sync_at": now} if entry.status == SyncStatus.COMPLETED else {}
    values["last_error"] = entry.error[:ERROR_LIMIT] if entry.error else None
    connection.execute(update(_INTEGRATIONS).where(_INTEGRATIONS.c.id == key).values(**values))


def write_sync(engine: Engine, integration_id: str, entry: SyncEntry) -> None:
    with engine.begin() as connection:
        _write_sync(connection, integration_id, entry)


def publishable_integrations(
    engine: Engine, user_id: str, providers: tuple[str, ...]
) -> list[Row[Any]]:
    """The user's active CONNECTED integrations of a publishing provider, oldest first."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(_INTEGRATIONS)
                .where(
                    _INTEGRATIONS.c.user_id == user_id,
                    _INTEGRATIONS.c.provider.in_(providers),
                    _INTEGRATIONS.c.status == "CONNECTED",
                    _INTEGRATIONS.c.is_active.is_(True),
                )
                .order_by(_INTEGRATIONS.c.created_at, _INTEGRATIONS.c.id)
            )
        )


def account_of(integration: Any) -> dict[str, str]:
    """What an adapter needs of the account (relay.publishing.adapters.PublishRequest):
    from the connection's metadata (an application sets `pageId`, `authorUrn`, … at
    initiate), then what the provider told at connect (providerData: the token response's
    and the userinfo's ids, the catalog's `public_extras` and `account_fields`), then its
    name. LinkedIn's author is the member `urn:li:person:{sub}` (OpenID Connect's subject);
    Instagram's user id is the one its token exchange and userinfo give. No Facebook Page
    id is needed: the adapter finds the user's Page itself (relay.publishing.facebook)."""
    meta = dict(getattr(integration, "meta", None) or {})
    data = dict(getattr(integration, "provider_data", None) or {})
    account: dict[str, str] = {}

    def first(*values: object) -> str | None:
        for value in values:
            if value not in (None, ""):
                return str(value)
        return None

    fields = {
        "page_id": first(meta.get("pageId"), meta.get("page_id"), data.get("page_id")),
        "ig_user_id": first(
            meta.get("igUserId"),
            meta.get("ig_user_id"),
            data.get("ig_user_id"),
            data.get("user_id"),
        ),
        "author_urn": first(
            meta.get("authorUrn"),
            meta.get("author_urn"),
            data.get("author_urn"),
            _person_urn(data.get("sub"))
            if getattr(integration, "provider", None) == "linkedin"
            else None,
        ),
        "username": first(
            meta.get("username"), data.get("username"), getattr(integration, "name", None)
        ),
    }
    for name, value in fields.items():
        if value is not None:
            account[name] = value
    return account


def _person_urn(sub: object) -> str | None:
    """A LinkedIn member's URN from the OpenID Connect subject the userinfo gave."""
    if isinstance(sub, str | int) and str(sub).strip():
        return f"urn:li:person:{str(sub).strip()}"
    return None
