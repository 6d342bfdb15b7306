"""An index on connections (provider, external_account_id): a webhook names its account (HubSpot's portal id),
and resolving it to the connection must not read every connection of the provider (issue 11).

The column exists since 0001 and every connection already has its account id, so no data moves.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_connections_provider_account", "connections", ["provider", "external_account_id"])


def downgrade() -> None:
    op.drop_index("ix_connections_provider_account", table_name="connections")
