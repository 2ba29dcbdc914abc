"""webhooks: leases name their owner (a pump activity and its attempt) so a retried pump
takes back its lost predecessor's leases at once

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("lease_attempt", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_lease_owner"), ["lease_owner"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_lease_owner"))
        batch_op.drop_column("lease_attempt")
        batch_op.drop_column("lease_owner")
