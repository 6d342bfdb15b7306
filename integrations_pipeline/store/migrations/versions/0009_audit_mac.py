"""The audit chain keyed, and a reconnect's confirmation to replace the provider account bound into its state.

Audit entries carry an HMAC of their hash under a subkey of the keyring, and the key's id. Entries written before
stay as they are (no MAC): the first keyed entry after them authenticates them through the chain, and
`integrations-pipeline db upgrade` appends one (`audit.sealed`) when keys are configured.
`oauth_states.replace_account`: a reconnect through another provider account is refused unless the connect
request said so.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("mac_key_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))
    with op.batch_alter_table("oauth_states") as batch:
        batch.add_column(sa.Column("replace_account", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("oauth_states") as batch:
        batch.drop_column("replace_account")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("mac")
        batch.drop_column("mac_key_id")
