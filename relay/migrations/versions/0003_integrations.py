"""integrations tables: integrations, sealed credentials, OAuth states, sync and access logs

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

import relay.models.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = relay.models.types.JSONType
UTC = relay.models.types.UTCDateTime


def _string(length: int) -> sa.types.TypeEngine:
    return AutoString(length=length)


def _integration_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", _string(255), nullable=False),
        sa.Column("organization_id", _string(255), nullable=True),
        sa.Column("provider", _string(64), nullable=False),
        sa.Column("name", _string(255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("token_type", _string(40), nullable=True),
        sa.Column("expires_at", UTC(timezone=True), nullable=True),
        sa.Column("scope", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("connection_config", JSON, nullable=False),
        sa.Column("provider_data", JSON, nullable=False),
        sa.Column("last_sync_at", UTC(timezone=True), nullable=True),
        sa.Column("last_error", _string(1000), nullable=True),
        sa.Column("connected_at", UTC(timezone=True), nullable=True),
        sa.Column("disconnected_at", UTC(timezone=True), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.create_index("ix_integrations_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_integrations_organization_id", ["organization_id"], unique=False)
        batch_op.create_index("ix_integrations_provider", ["provider"], unique=False)
        batch_op.create_index("ix_integrations_user_id", ["user_id"], unique=False)
        batch_op.create_index(
            "ix_integrations_user_provider", ["user_id", "provider"], unique=False
        )

    op.create_table(
        "integration_credentials",
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("key_id", _string(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        _integration_fk(),
        sa.PrimaryKeyConstraint("integration_id"),
    )
    with op.batch_alter_table("integration_credentials", schema=None) as batch_op:
        batch_op.create_index("ix_integration_credentials_key_id", ["key_id"], unique=False)

    op.create_table(
        "oauth_states",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state_hash", _string(64), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("provider", _string(64), nullable=False),
        sa.Column("user_id", _string(255), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("provider_error", _string(500), nullable=True),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("used_at", UTC(timezone=True), nullable=True),
        sa.Column("exchanged_at", UTC(timezone=True), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        _integration_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("state_hash"),
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.create_index("ix_oauth_states_expires_at", ["expires_at"], unique=False)
        batch_op.create_index("ix_oauth_states_integration_id", ["integration_id"], unique=False)

    op.create_table(
        "integration_sync_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("action", _string(64), nullable=False),
        sa.Column("resource_type", _string(64), nullable=True),
        sa.Column("resource_id", _string(255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("items_processed", sa.Integer(), nullable=False),
        sa.Column("items_failed", sa.Integer(), nullable=False),
        sa.Column("error", _string(1000), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("started_at", UTC(timezone=True), nullable=False),
        sa.Column("completed_at", UTC(timezone=True), nullable=True),
        _integration_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("integration_sync_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_integration_sync_logs_integration_started",
            ["integration_id", "started_at"],
            unique=False,
        )

    op.create_table(
        "integration_credential_access",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("refreshed", sa.Boolean(), nullable=False),
        sa.Column("client_address", _string(64), nullable=True),
        sa.Column("accessed_at", UTC(timezone=True), nullable=False),
        _integration_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("integration_credential_access", schema=None) as batch_op:
        batch_op.create_index(
            "ix_integration_credential_access_integration",
            ["integration_id", "accessed_at"],
            unique=False,
        )


def downgrade() -> None:
    for table, indexes in (
        ("integration_credential_access", ["ix_integration_credential_access_integration"]),
        ("integration_sync_logs", ["ix_integration_sync_logs_integration_started"]),
        ("oauth_states", ["ix_oauth_states_integration_id", "ix_oauth_states_expires_at"]),
        ("integration_credentials", ["ix_integration_credentials_key_id"]),
        (
            "integrations",
            [
                "ix_integrations_user_provider",
                "ix_integrations_user_id",
                "ix_integrations_provider",
                "ix_integrations_organization_id",
                "ix_integrations_created_at",
            ],
        ),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for index in indexes:
                batch_op.drop_index(index)
        op.drop_table(table)
