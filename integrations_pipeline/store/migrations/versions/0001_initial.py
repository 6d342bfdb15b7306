"""Connections, encrypted credentials, OAuth states, sync cursors and the hash-chained audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.String(160), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("external_account_id", sa.String(255), nullable=True),
        sa.Column("requested_scopes", sa.JSON, nullable=False),
        sa.Column("granted_scopes", sa.JSON, nullable=False),
        sa.Column("provider_metadata", sa.JSON, nullable=False),
        sa.Column("token_expires_at", UTCDateTime, nullable=True),
        sa.Column("last_sync_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        sa.UniqueConstraint("tenant", "provider", name="uq_connections_tenant"),
    )
    op.create_table(
        "credentials",
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"], name="fk_credentials_connection_id_connections", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("connection_id", "name", name="pk_credentials"),
    )
    op.create_index("ix_credentials_key_id", "credentials", ["key_id"])
    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("return_path", sa.Text, nullable=True),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("code_verifier_ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("consumed_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("state_hash", name="pk_oauth_states"),
    )
    op.create_index("ix_oauth_states_key_id", "oauth_states", ["key_id"])
    op.create_index("ix_oauth_states_expires_at", "oauth_states", ["expires_at"])
    op.create_table(
        "sync_cursors",
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("partition_key", sa.String(64), nullable=False),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"], name="fk_sync_cursors_connection_id_connections", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("connection_id", "entity", "partition_key", name="pk_sync_cursors"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(32), nullable=True),
        sa.Column("connection_id", sa.String(160), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sa.UniqueConstraint("entry_hash", name="uq_audit_log_entry_hash"),
    )
    op.create_index("ix_audit_log_connection_id", "audit_log", ["connection_id"])


def downgrade() -> None:
    for table in ("audit_log", "sync_cursors", "oauth_states", "credentials", "connections"):
        op.drop_table(table)
