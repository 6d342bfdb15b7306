"""The audit chain's head record, so a deleted newest entry is detected too (issue 6).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from integrations_pipeline.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    # Anchor the chain as it stands: from here on every append moves the head in the same transaction.
    bind = op.get_bind()
    log = sa.table("audit_log", sa.column("id"), sa.column("entry_hash"))
    last = bind.execute(sa.select(log.c.id, log.c.entry_hash).order_by(log.c.id.desc()).limit(1)).first()
    if last is not None:
        count = bind.execute(sa.select(sa.func.count()).select_from(log)).scalar_one()
        anchor = {"id": 1, "last_id": last.id, "entry_hash": last.entry_hash, "entries": count}
        op.bulk_insert(head, [{**anchor, "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("audit_head")
