"""The field catalog per connection; field mappings gain a default value and longer sources (raw paths).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "field_catalog",
        sa.Column("connection_id", sa.String(160), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("provider_type", sa.String(64), nullable=False),
        sa.Column("is_custom", sa.Boolean, nullable=False),
        sa.Column("raw_path", sa.String(512), nullable=False),
        sa.Column("discovered_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
        sa.Column("removed_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("connection_id", "entity", "name", name="pk_field_catalog"),
    )
    with op.batch_alter_table("field_mappings") as batch:
        batch.alter_column("source", existing_type=sa.String(63), type_=sa.String(255), existing_nullable=False)
        batch.add_column(sa.Column("default_value", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("field_mappings") as batch:
        batch.drop_column("default_value")
        batch.alter_column("source", existing_type=sa.String(255), type_=sa.String(63), existing_nullable=False)
    op.drop_table("field_catalog")
