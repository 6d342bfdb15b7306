"""Verifying the audit log: every entry against its hash, its link and its MAC, and the chain's end against its head.

The chain proves each entry against the one before it; each entry's hash also carries an HMAC under a subkey of the
keyring (`mac_key_id` names the key), so someone able to write the table but without the key cannot append an
entry that verifies, however they move the head: since every hash covers the one before it, the newest entry's MAC
vouches for the whole chain. That is why the newest entry must carry a MAC the keyring can check, while older
entries may be under keys since retired, or (written before migration 0009) carry none before the first keyed one.
The head record (`audit_head`, moved in the same transaction as every append) pins the newest entry and the count,
so a deleted tail is caught as well. Rolling the whole database back to an earlier consistent state is beyond any
in-database check: `verify` prints the head hash so an operator can keep it elsewhere and later check, before
anything else, that the entry carrying it is still in the chain (`expected_hash`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from integrations_pipeline.crypto import Keyring
from integrations_pipeline.store import schema
from integrations_pipeline.store.models import AuditEntry
from integrations_pipeline.store.repository import (
    AUDIT_MAC_PURPOSE,
    GENESIS_HASH,
    StateStore,
    _advisory_key,
    audit_hash,
)

SEAL_HINT = "`integrations-pipeline db upgrade` (with INTEGRATIONS_ENCRYPTION_KEYS set) seals a log written before"


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


def check_chain(
    entries: list[AuditEntry], head: AuditHead | None, keyring: Keyring, expected_hash: str | None = None
) -> AuditVerdict:
    """Pure: the verdict on `entries` (oldest first) against the head record and the keyring."""
    count = len(entries)
    # First: a hash kept elsewhere must still be in the log, whatever the log looks like now (empty included).
    if expected_hash is not None and expected_hash not in {entry.entry_hash for entry in entries}:
        missing = f"no entry carries the recorded hash {expected_hash}: the log was rewritten since it was recorded"
        return AuditVerdict(count, problem=missing)
    prev_hash = GENESIS_HASH
    previous_id: int | None = None
    keyed_seen = False
    for entry in entries:
        problem = _entry_problem(entry, prev_hash, previous_id, keyed_seen, keyring)
        if problem is not None:
            return AuditVerdict(count, broken_id=entry.id, problem=problem)
        keyed_seen = keyed_seen or entry.mac is not None
        prev_hash, previous_id = entry.entry_hash, entry.id
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
    newest = entries[-1] if entries else None
    if newest is not None and newest.mac is None:
        problem = f"no entry carries a MAC, so none can be told from a forgery; {SEAL_HINT}"
        return AuditVerdict(count, broken_id=newest.id, problem=problem)
    if newest is not None and newest.mac_key_id not in keyring.key_ids:
        problem = (
            f"its MAC is under key {newest.mac_key_id!r}, which the keyring lacks: the newest entry vouches for the "
            "whole chain, so keep that key in INTEGRATIONS_ENCRYPTION_KEYS until a newer entry is written"
        )
        return AuditVerdict(count, broken_id=newest.id, problem=problem)
    return AuditVerdict(count, head_hash=prev_hash)


def _entry_problem(
    entry: AuditEntry, prev_hash: str, previous_id: int | None, keyed_seen: bool, keyring: Keyring
) -> str | None:
    if entry.prev_hash != prev_hash:
        after = f"entry {previous_id}" if previous_id is not None else "the start of the log"
        return f"its link does not match {after}: an entry between them was deleted or rewritten"
    if audit_hash(entry.model_dump()) != entry.entry_hash:
        return f"its content no longer matches its hash: it was edited (action now {entry.action!r})"
    if entry.mac is None or entry.mac_key_id is None:
        if keyed_seen:
            return "it carries no MAC although entries before it do: it was not written by the product"
        return None
    verified = keyring.verify_mac(entry.entry_hash, entry.mac, key_id=entry.mac_key_id, purpose=AUDIT_MAC_PURPOSE)
    if verified is False:
        return f"its MAC does not hold under key {entry.mac_key_id!r}: it was not written by the product"
    return None  # verified, or under a retired key: a newer entry's MAC vouches for it (checked at the end)


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
    return check_chain(entries, head, store.keyring, expected_hash)


def seal(store: StateStore, actor: str) -> bool:
    """After migration 0009: vouch for entries written before it with one keyed entry (`audit.sealed`).

    Trust on first use: whatever the unkeyed log holds at this moment is what the seal vouches for. Returns whether
    it sealed anything (a log that is empty or ends in a keyed entry needs nothing).
    """
    log = schema.audit_log
    with store.locked("audit_log") as conn:
        newest = conn.execute(sa.select(log.c.id, log.c.mac).order_by(log.c.id.desc()).limit(1)).first()
        if newest is None or newest.mac is not None:
            return False
        unkeyed = conn.execute(sa.select(sa.func.count()).select_from(log).where(log.c.mac.is_(None))).scalar_one()
        store.audit(conn, "audit.sealed", actor=actor, detail={"unkeyed_entries": unkeyed})
    return True
