"""Verifying the audit log: every entry against its hash and its link, and the chain's end against its head record.

The chain alone proves each entry against the one before it; the head record (`audit_head`, moved in the same
transaction as every append) pins the newest entry and the count, so a deleted tail is caught as well. Both live in
the same database, so someone able to rewrite the whole table and the head consistently is out of reach of any
in-database check: `verify` prints the head hash so an operator can keep it elsewhere and later check that the
entry carrying it is still in an intact chain (`expected_hash`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from integrations_pipeline.store import schema
from integrations_pipeline.store.models import AuditEntry
from integrations_pipeline.store.repository import GENESIS_HASH, StateStore, _advisory_key, audit_hash


@dataclass(frozen=True)
class AuditVerdict:
    entries: int
    head_hash: str = GENESIS_HASH
    broken_id: int | None = None  # the first entry that does not hold, where one can be named
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.intact:
            return f"audit log intact: {self.entries} entries, head {self.head_hash}"
        where = f"entry {self.broken_id}" if self.broken_id is not None else "the log"
        return f"audit log BROKEN at {where}: {self.problem}"


@dataclass(frozen=True)
class AuditHead:
    last_id: int
    entry_hash: str
    entries: int


def check_chain(entries: list[AuditEntry], head: AuditHead | None, expected_hash: str | None = None) -> AuditVerdict:
    """Pure: the verdict on `entries` (oldest first) against the head record."""
    prev_hash = GENESIS_HASH
    previous_id: int | None = None
    for entry in entries:
        if entry.prev_hash != prev_hash:
            after = f"entry {previous_id}" if previous_id is not None else "the start of the log"
            problem = f"its link does not match {after}: an entry between them was deleted or rewritten"
            return AuditVerdict(len(entries), broken_id=entry.id, problem=problem)
        if audit_hash(entry.model_dump()) != entry.entry_hash:
            problem = f"its content no longer matches its hash: it was edited (action now {entry.action!r})"
            return AuditVerdict(len(entries), broken_id=entry.id, problem=problem)
        prev_hash, previous_id = entry.entry_hash, entry.id
    count = len(entries)
    if head is None:
        if count:
            return AuditVerdict(count, problem=f"the head record is missing while the log holds {count} entries")
        return AuditVerdict(0)
    if (head.last_id, head.entry_hash, head.entries) != (previous_id, prev_hash, count):
        ends = f"entry {previous_id}" if previous_id is not None else "nothing"
        problem = (
            f"the newest entries were deleted: the head records entry {head.last_id} as the last of "
            f"{head.entries}, the log ends at {ends} with {count}"
        )
        return AuditVerdict(count, broken_id=head.last_id, problem=problem)
    if expected_hash is not None and expected_hash not in {entry.entry_hash for entry in entries}:
        problem = f"no entry carries the recorded hash {expected_hash}: the log was rewritten since it was recorded"
        return AuditVerdict(count, head_hash=prev_hash, problem=problem)
    return AuditVerdict(count, head_hash=prev_hash)


def verify(store: StateStore, expected_hash: str | None = None) -> AuditVerdict:
    """Read the log and its head in one snapshot (appenders wait on PostgreSQL) and judge them."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name != "sqlite":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_advisory_key("audit_log"))))
        # On SQLite, one read transaction is one snapshot already (WAL).
        head_row = conn.execute(sa.select(schema.audit_head).where(schema.audit_head.c.id == 1)).first()
        log = schema.audit_log
        entries = [AuditEntry.model_validate(row._asdict()) for row in conn.execute(sa.select(log).order_by(log.c.id))]
    head = AuditHead(head_row.last_id, head_row.entry_hash, head_row.entries) if head_row is not None else None
    return check_chain(entries, head, expected_hash)
