"""Rate-limit budgets per connection, shared by every run (issue 5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_budgets",
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("call_limit", sa.Integer, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("slots", sa.JSON, nullable=False),
        sa.Column("blocked_until", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "provider", "bucket", name="pk_rate_budgets"),
    )


def downgrade() -> None:
    op.drop_table("rate_budgets")
