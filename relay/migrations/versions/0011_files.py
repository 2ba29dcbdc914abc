"""files: each file's read model (status, keys, metadata, renditions)

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("conversation_id", sa.String(length=255), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("declared_size", sa.BigInteger(), nullable=False),
        sa.Column("upload_key", sa.String(length=1024), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("detected_type", sa.String(length=255), nullable=True),
        sa.Column("metadata", relay.models.types.JSONType, nullable=False),
        sa.Column("renditions", relay.models.types.JSONType, nullable=False),
        sa.Column(
            "upload_expires_at", relay.models.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_user_id"))
        batch_op.drop_index(batch_op.f("ix_files_status"))
        batch_op.drop_index(batch_op.f("ix_files_message_id"))
        batch_op.drop_index(batch_op.f("ix_files_created_at"))
    op.drop_table("files")
