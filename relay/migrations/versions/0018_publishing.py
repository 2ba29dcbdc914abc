"""publishing: publications, their targets, and the shared publish rate-limit windows

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("content_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=2000), nullable=True),
        sa.Column("media_file_ids", relay.models.types.JSONType, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_id", "idempotency_key", name="uq_publications_content_key"),
    )
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_publications_content_id"), ["content_id"])
        batch_op.create_index(batch_op.f("ix_publications_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_publications_status"), ["status"])
        batch_op.create_index(batch_op.f("ix_publications_user_id"), ["user_id"])

    op.create_table(
        "publication_targets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("publication_id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("remote", relay.models.types.JSONType, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("delete_error", sa.String(length=1000), nullable=True),
        sa.Column("published_at", relay.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "publication_id", "integration_id", name="uq_publication_targets_integration"
        ),
    )
    with op.batch_alter_table("publication_targets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_publication_targets_integration_id"), ["integration_id"]
        )
        batch_op.create_index(
            batch_op.f("ix_publication_targets_publication_id"), ["publication_id"]
        )

    op.create_table(
        "publish_rate_windows",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("publish_rate_windows")
    with op.batch_alter_table("publication_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publication_targets_publication_id"))
        batch_op.drop_index(batch_op.f("ix_publication_targets_integration_id"))
    op.drop_table("publication_targets")
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publications_user_id"))
        batch_op.drop_index(batch_op.f("ix_publications_status"))
        batch_op.drop_index(batch_op.f("ix_publications_created_at"))
        batch_op.drop_index(batch_op.f("ix_publications_content_id"))
    op.drop_table("publications")
