"""Billing's database reads and writes (synchronous; async callers use `asyncio.to_thread`).

`billing_subscriptions` is the subscriptions' read model: only the subscription
workflow's activities write it (the workflow is the single writer), the routes read it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Select, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from relay.billing.contracts import SubscriptionView
from relay.db import utcnow
from relay.errors import ErrorCode, RelayError
from relay.models.billing import BillingCustomer, BillingSubscription

S = BillingSubscription.__table__  # type: ignore[attr-defined]
C = BillingCustomer.__table__  # type: ignore[attr-defined]


def relay_id_of(engine: Engine, stripe_subscription_id: str) -> str | None:
    """Relay's id of a Stripe subscription it knows, or None (not yet, or never: adopted)."""
    with engine.connect() as connection:
        return connection.execute(
            select(S.c.id).where(S.c.stripe_subscription_id == stripe_subscription_id)
        ).scalar_one_or_none()


def customer_of(engine: Engine, user_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            select(C.c.stripe_customer_id).where(C.c.user_id == user_id)
        ).scalar_one_or_none()


def save_customer(engine: Engine, user_id: str, stripe_customer_id: str) -> str:
    """Record the user's customer; when another was recorded first, that one wins."""
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(C).values(
                    user_id=user_id, stripe_customer_id=stripe_customer_id, created_at=utcnow()
                )
            )
        return stripe_customer_id
    except IntegrityError:
        existing = customer_of(engine, user_id)
        if existing is None:
            raise
        return existing


def _values(view: SubscriptionView) -> dict[str, Any]:
    return {
        "user_id": view.user_id or "",
        "stripe_customer_id": view.stripe_customer_id,
        "stripe_subscription_id": view.stripe_subscription_id,
        "status": view.status.value,
        "price_id": view.price_id,
        "quantity": view.quantity,
        "entitled": view.entitled,
        "cancel_at_period_end": view.cancel_at_period_end,
        "trial_end": view.trial_end,
        "current_period_end": view.current_period_end,
        "grace_until": view.grace_until,
        "decline_code": view.decline_code,
        "pause_behavior": view.pause_behavior,
        "pause_resumes_at": view.pause_resumes_at,
        "updated_at": utcnow(),
    }


def save_view(engine: Engine, view: SubscriptionView) -> None:
    """Upsert the read model of one subscription (the workflow's view of it)."""
    values = _values(view)
    with engine.begin() as connection:
        updated = connection.execute(update(S).where(S.c.id == view.id).values(**values)).rowcount
        if not updated:
            connection.execute(insert(S).values(id=view.id, created_at=utcnow(), **values))


def load(engine: Engine, subscription_id: str) -> Row[Any]:
    with engine.connect() as connection:
        row = connection.execute(select(S).where(S.c.id == subscription_id)).first()
    if row is None:
        raise RelayError(ErrorCode.NOT_FOUND, "no subscription with that id")
    return row


def subscriptions_query(*, user_id: str | None = None, status: str | None = None) -> Select[Any]:
    query = select(S)
    if user_id:
        query = query.where(S.c.user_id == user_id)
    if status:
        query = query.where(S.c.status == status)
    return query
