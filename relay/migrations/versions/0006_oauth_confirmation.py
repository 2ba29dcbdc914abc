"""OAuth connection confirmation (connection fixation defence) and sealed provider extras

- oauth_states: `require_confirmation` and the confirmation code's SHA-256, deadline,
  wrong attempts and confirmation time (requireConfirmation, RFC 9700 section 4.7);
- integrations.status: wide enough for PENDING_CONFIRMATION;
- integration_credentials.extras: the token response's other fields, sealed with the
  tokens (Slack's incoming_webhook.url, Discord's webhook).

Downgrading drops the sealed extras and turns connections still waiting for their
confirmation into EXPIRED ones without tokens (the older code cannot confirm them).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

import relay.models.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = relay.models.types.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
    with op.batch_alter_table("integration_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extras", sa.Text(), nullable=True))
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        # Server defaults: rows inserted by an API still on the previous release.
        batch_op.add_column(
            sa.Column(
                "require_confirmation", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("confirmation_hash", AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("confirmation_expires_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "confirmation_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )
        batch_op.add_column(sa.Column("confirmed_at", UTC(timezone=True), nullable=True))


def downgrade() -> None:
    integrations = sa.table(
        "integrations",
        sa.column("id", sa.Uuid()),
        sa.column("status", sa.String()),
        sa.column("is_active", sa.Boolean()),
    )
    credentials = sa.table("integration_credentials", sa.column("integration_id", sa.Uuid()))
    waiting = sa.select(integrations.c.id).where(integrations.c.status == "PENDING_CONFIRMATION")
    op.execute(credentials.delete().where(credentials.c.integration_id.in_(waiting)))
    op.execute(
        integrations.update()
        .where(integrations.c.status == "PENDING_CONFIRMATION")
        .values(status="EXPIRED", is_active=False)
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("confirmation_attempts")
        batch_op.drop_column("confirmation_expires_at")
        batch_op.drop_column("confirmation_hash")
        batch_op.drop_column("require_confirmation")
    with op.batch_alter_table("integration_credentials", schema=None) as batch_op:
        batch_op.drop_column("extras")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
