"""billing and inbound provider webhooks: inbox, reconciliation cursors, customers, subscriptions

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("target", relay.models.types.JSONType, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("claimed_until", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("forwarded_at", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "event_id", name="uq_inbound_events_provider_event"),
    )
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbound_events_status_claimed", ["status", "claimed_until"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_events_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inbound_events_provider"), ["provider"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbound_events_type"), ["type"], unique=False)

    op.create_table(
        "inbound_cursors",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider"),
    )

    op.create_table(
        "billing_customers",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("stripe_customer_id"),
    )

    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("price_id", sa.String(length=255), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("entitled", sa.Boolean(), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("trial_end", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "current_period_end", relay.models.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("grace_until", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decline_code", sa.String(length=100), nullable=True),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_subscription_id"),
    )
    with op.batch_alter_table("billing_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_subscriptions_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_billing_subscriptions_stripe_customer_id"),
            ["stripe_customer_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_billing_subscriptions_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_subscriptions_user_id"))
        batch_op.drop_index(batch_op.f("ix_billing_subscriptions_stripe_customer_id"))
        batch_op.drop_index(batch_op.f("ix_billing_subscriptions_created_at"))
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_customers")
    op.drop_table("inbound_cursors")
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_events_type"))
        batch_op.drop_index(batch_op.f("ix_inbound_events_provider"))
        batch_op.drop_index(batch_op.f("ix_inbound_events_created_at"))
        batch_op.drop_index("ix_inbound_events_status_claimed")
    op.drop_table("inbound_events")
