"""Direct database helpers for webhook tests (creating endpoints without the API)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from relay.crypto import Keyring
from relay.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from relay.webhooks.signing import generate_secret, seal_secret

E = WebhookEndpoint.__table__
D = WebhookDelivery.__table__
A = WebhookAttempt.__table__


def create_endpoint(
    engine: Engine, keyring: Keyring, url: str, events: list[str], **values: Any
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=url,
        events=events,
        secret=seal_secret(keyring, endpoint_id, generate_secret()),
        **values,
    )
    row = endpoint.model_dump()
    row["metadata"] = row.pop("meta")
    with engine.begin() as connection:
        connection.execute(E.insert().values(**row))
    return endpoint_id


def endpoint_row(engine: Engine, endpoint_id: uuid.UUID) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(E).where(E.c.id == endpoint_id)).one()


def deliveries_of(engine: Engine, endpoint_id: uuid.UUID) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(D).where(D.c.endpoint_id == endpoint_id).order_by(D.c.created_at)
            )
        )


def attempts_of(engine: Engine, delivery_id: uuid.UUID) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt)
            )
        )
