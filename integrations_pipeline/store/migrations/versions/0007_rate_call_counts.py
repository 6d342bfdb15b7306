"""Calls granted and refused per connection and hour, for the recent 429 rate.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_call_counts",
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("hour", UTCDateTime, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("refused", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "provider", "hour", name="pk_rate_call_counts"),
    )


def downgrade() -> None:
    op.drop_table("rate_call_counts")
