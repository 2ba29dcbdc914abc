"""calendar: scheduled meetings (Zoom meeting, calendar event, reminders, recordings)

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import relay.models.types

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "meetings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("start_time", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("agenda", sa.String(length=2000), nullable=True),
        sa.Column("recurrence", sa.String(length=500), nullable=True),
        sa.Column("settings", relay.models.types.JSONType, nullable=True),
        sa.Column("attendees", relay.models.types.JSONType, nullable=False),
        sa.Column("zoom_meeting_id", sa.String(length=32), nullable=True),
        sa.Column("zoom_status", sa.String(length=16), nullable=False),
        sa.Column("join_url", sa.String(length=2000), nullable=True),
        sa.Column("start_url_sealed", sa.Text(), nullable=True),
        sa.Column("password_sealed", sa.String(length=512), nullable=True),
        sa.Column("integration_id", sa.String(length=64), nullable=True),
        sa.Column("zoom_integration_id", sa.String(length=64), nullable=True),
        sa.Column("calendar_id", sa.String(length=255), nullable=False),
        sa.Column("calendar_event_id", sa.String(length=1024), nullable=True),
        sa.Column("calendar_status", sa.String(length=16), nullable=False),
        sa.Column("reminders", relay.models.types.JSONType, nullable=False),
        sa.Column("recordings", relay.models.types.JSONType, nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.String(length=1000), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_meetings_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_meetings_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_meetings_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_meetings_zoom_meeting_id"), ["zoom_meeting_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meetings_zoom_meeting_id"))
        batch_op.drop_index(batch_op.f("ix_meetings_user_id"))
        batch_op.drop_index(batch_op.f("ix_meetings_status"))
        batch_op.drop_index(batch_op.f("ix_meetings_created_at"))
    op.drop_table("meetings")
