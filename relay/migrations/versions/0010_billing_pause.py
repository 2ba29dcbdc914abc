"""billing: a subscription's paused collection (behaviour and resume time) in its row

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("pause_behavior", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("pause_resumes_at", relay.models.types.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("pause_resumes_at")
        batch.drop_column("pause_behavior")
