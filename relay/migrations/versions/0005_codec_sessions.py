"""server-side codec sessions

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = relay.models.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "codec_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("revoked_at", UTC(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("codec_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_codec_sessions_api_key_id", ["api_key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("codec_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_codec_sessions_api_key_id")
    op.drop_table("codec_sessions")
