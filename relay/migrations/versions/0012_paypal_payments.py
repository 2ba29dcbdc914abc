"""payments: PayPal's order, capture and approval link, and the client's metadata, in the
read model

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("paypal_order_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("paypal_capture_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("approve_url", sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column("metadata", relay.models.types.JSONType, nullable=True))
        batch.create_index(batch.f("ix_payments_paypal_order_id"), ["paypal_order_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_index(batch.f("ix_payments_paypal_order_id"))
        batch.drop_column("metadata")
        batch.drop_column("approve_url")
        batch.drop_column("paypal_capture_id")
        batch.drop_column("paypal_order_id")
