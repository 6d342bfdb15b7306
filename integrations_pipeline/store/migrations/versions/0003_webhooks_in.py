"""Webhooks in: push subscriptions, the inbox and dead letters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("renewed_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_subscriptions"),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name="fk_push_subscriptions_connection_id_connections",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_push_subscriptions_external_id", "push_subscriptions", ["external_id"])
    op.create_index("ix_push_subscriptions_expires_at", "push_subscriptions", ["expires_at"])
    op.create_table(
        "webhook_inbox",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("source", sa.String(96), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("connection_id", sa.String(160), nullable=True),
        sa.Column("entity", sa.String(32), nullable=True),
        sa.Column("partition_key", sa.String(64), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_key", sa.String(160), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_inbox"),
        sa.UniqueConstraint("source", "event_id", name="uq_webhook_inbox_source"),
    )
    op.create_index("ix_webhook_inbox_connection_id", "webhook_inbox", ["connection_id"])
    op.create_index("ix_webhook_inbox_run_key", "webhook_inbox", ["run_key"])
    op.create_index("ix_webhook_inbox_status_id", "webhook_inbox", ["status", "id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("inbox_id", ID, nullable=False),
        sa.Column("source", sa.String(96), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("connection_id", sa.String(160), nullable=True),
        sa.Column("entity", sa.String(32), nullable=True),
        sa.Column("partition_key", sa.String(64), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("failed_at", UTCDateTime, nullable=False),
        sa.Column("replayed_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_inbox_id", "dead_letters", ["inbox_id"])
    op.create_index("ix_dead_letters_connection_id", "dead_letters", ["connection_id"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("webhook_inbox")
    op.drop_table("push_subscriptions")
