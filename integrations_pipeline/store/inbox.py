"""The webhook inbox: every verified notification, stored once, and its way to a run.

pending --(sensor requests a run)--> requested --(run succeeds)--> done
                                              --(run fails)------> pending again, or after MAX_ATTEMPTS failures
                                                                   dead, with a dead_letters row carrying the cause
dead --(replay)--> pending

Rows stay at least DEDUP_WINDOW after they arrive, so a provider's late retry of an event still meets its twin.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite

from integrations_pipeline.store import schema
from integrations_pipeline.store.repository import StateStore, utcnow

MAX_ATTEMPTS = 5
DEDUP_WINDOW = timedelta(days=8)  # above every provider's retry window (HubSpot and Salesforce: about 24 h)


class InboxStatus(StrEnum):
    PENDING = "pending"
    REQUESTED = "requested"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True)
class NewEvent:
    """What a verified request lands. `payload` has had every secret the sender echoes removed."""

    source: str  # the provider, or "standard:<source>"
    event_id: str  # the sender's id, or a digest of the notification where the sender gives none
    kind: str  # "change" | "missed" | "lifecycle" | ...
    connection_id: str | None
    entity: str | None
    partition_key: str | None
    payload: dict[str, Any]


class InboxEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    source: str
    event_id: str
    kind: str
    connection_id: str | None
    entity: str | None
    partition_key: str | None
    payload: dict[str, Any]
    status: InboxStatus
    attempts: int
    run_key: str | None
    last_error: str | None
    received_at: datetime
    updated_at: datetime


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    inbox_id: int
    source: str
    event_id: str
    connection_id: str | None
    entity: str | None
    partition_key: str | None
    payload: dict[str, Any]
    attempts: int
    cause: str
    failed_at: datetime
    replayed_at: datetime | None


@cache
def _insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT that skips a row whose (source, event_id) is already stored and returns the keys of the rows it did
    store, in one statement on either backend (SQLite 3.35+ and PostgreSQL both have RETURNING).
    Built once and executed with parameters: building it (`.values()`) per event cost more CPU than the commit."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = schema.webhook_inbox
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(table.c.source, table.c.event_id)
    )


class WebhookInbox:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- receiving -----------------------------------------------------------------------------------------------

    def receive(self, events: Sequence[NewEvent]) -> int:
        """Store the events in one transaction and return how many were new; duplicates are skipped.

        Commits before returning, so the caller may acknowledge; a database error propagates (the gateway answers
        503 and the sender retries)."""
        if not events:
            return 0
        with self.store.engine.begin() as conn:
            return self.insert(conn, [events])[0]

    def insert(self, conn: sa.Connection, batches: Sequence[Sequence[NewEvent]]) -> list[int]:
        """Insert the events of several requests inside `conn`'s transaction, in one statement, and return how many
        of each request's events were new. An event named twice in the group counts for the first request naming it
        (the gateway's group commit lands many requests per transaction)."""
        now = utcnow()
        owners: dict[tuple[str, str], int] = {}
        rows = []
        for index, events in enumerate(batches):
            for event in events:
                key = (event.source, event.event_id)
                if key in owners:
                    continue  # a repeat inside the group: the first one's row is the one inserted
                owners[key] = index
                rows.append(
                    {
                        "source": event.source,
                        "event_id": event.event_id,
                        "kind": event.kind,
                        "connection_id": event.connection_id,
                        "entity": event.entity,
                        "partition_key": event.partition_key,
                        "payload": event.payload,
                        "status": InboxStatus.PENDING.value,
                        "attempts": 0,
                        "received_at": now,
                        "updated_at": now,
                    }
                )
        stored = [0] * len(batches)
        if rows:
            for source, event_id in conn.execute(_insert_ignoring_duplicates(conn.dialect.name), rows):
                stored[owners[(source, event_id)]] += 1
        return stored

    # -- the sensor's side -----------------------------------------------------------------------------------------

    def pending(self, *, limit: int, kinds: Collection[str] | None = None, after_id: int = 0) -> list[InboxEvent]:
        table = schema.webhook_inbox
        query = (
            sa.select(table)
            .where((table.c.status == InboxStatus.PENDING.value) & (table.c.id > after_id))
            .order_by(table.c.id)
            .limit(limit)
        )
        if kinds is not None:
            query = query.where(table.c.kind.in_(list(kinds)))
        return self._events(query)

    def mark_requested(self, event_ids: Sequence[int], run_key: str) -> None:
        self._set(event_ids, status=InboxStatus.REQUESTED, run_key=run_key)

    def mark_requested_batches(self, batches: Mapping[str, Sequence[int]], chunk: int = 500) -> None:
        """Each batch's events requested under its run key, all in one transaction: a tick marks thousands of
        batches, and a transaction each cost most of the tick. `chunk` bounds the ids per statement."""
        table = schema.webhook_inbox
        statement = (
            table.update()
            .where(table.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values(status=InboxStatus.REQUESTED.value, run_key=sa.bindparam("key"), updated_at=utcnow())
        )
        with self.store.write() as conn:
            for key, ids in batches.items():
                for start in range(0, len(ids), chunk):
                    conn.execute(statement, {"ids": list(ids[start : start + chunk]), "key": key})

    def requested(self, *, run_key: str | None = None) -> list[InboxEvent]:
        table = schema.webhook_inbox
        query = sa.select(table).where(table.c.status == InboxStatus.REQUESTED.value).order_by(table.c.id)
        if run_key is not None:
            query = query.where(table.c.run_key == run_key)
        return self._events(query)

    def requested_batches(self, *, limit: int) -> list[InboxEvent]:
        """One event (the oldest) per run_key still requested, oldest batch first: what the sensor follows up."""
        table = schema.webhook_inbox
        firsts = (
            sa.select(sa.func.min(table.c.id))
            .where(table.c.status == InboxStatus.REQUESTED.value)
            .group_by(table.c.run_key)
            .order_by(sa.func.min(table.c.id))
            .limit(limit)
            .scalar_subquery()
        )
        return self._events(sa.select(table).where(table.c.id.in_(firsts)).order_by(table.c.id))

    def reported_source_ids(
        self, connection_id: str, entity: str, *, cursor_partition: str, day: str | None
    ) -> set[str]:
        """The provider object ids (payload `source_ids`) that change events of this connection and entity named
        since the partition's sync cursor last moved (its previous sync); for events, only those of `day` or of no
        day."""
        table, cursors = schema.webhook_inbox, schema.sync_cursors
        previous_sync = (
            sa.select(cursors.c.updated_at)
            .where(
                (cursors.c.connection_id == connection_id)
                & (cursors.c.entity == entity)
                & (cursors.c.partition_key == cursor_partition)
            )
            .scalar_subquery()
        )
        query = sa.select(table.c.payload).where(
            (table.c.connection_id == connection_id)
            & (table.c.entity == entity)
            & table.c.kind.in_(["change", "missed"])
            & (table.c.received_at >= previous_sync)
        )
        if day is not None:
            query = query.where((table.c.partition_key == day) | table.c.partition_key.is_(None))
        with self.store.engine.connect() as conn:
            payloads = conn.execute(query).scalars().all()
        return {str(source_id) for payload in payloads for source_id in (payload or {}).get("source_ids") or ()}

    def complete(self, run_key: str) -> int:
        """The run for `run_key` succeeded: its requested events are done."""
        table = schema.webhook_inbox
        with self.store.write() as conn:
            result = conn.execute(
                table.update()
                .where((table.c.run_key == run_key) & (table.c.status == InboxStatus.REQUESTED.value))
                .values(status=InboxStatus.DONE.value, last_error=None, updated_at=utcnow())
            )
        return result.rowcount

    def mark_done(self, event_ids: Sequence[int]) -> None:
        """Events that need no run (Google's `sync` handshake, lifecycle notifications already acted on)."""
        self._set(event_ids, status=InboxStatus.DONE)

    def fail(self, run_key: str, cause: str) -> tuple[int, int]:
        """The run for `run_key` failed: each of its events is retried, or dead-lettered at its MAX_ATTEMPTS-th
        failure. Returns (retried, dead). `cause` must carry no secret: run failure messages do not."""
        table = schema.webhook_inbox
        retried = dead = 0
        now = utcnow()
        with self.store.write() as conn:
            rows = conn.execute(
                sa.select(table).where((table.c.run_key == run_key) & (table.c.status == InboxStatus.REQUESTED.value))
            ).all()
            for row in rows:
                attempts = row.attempts + 1
                if attempts < MAX_ATTEMPTS:
                    status, retried = InboxStatus.PENDING, retried + 1
                else:
                    status, dead = InboxStatus.DEAD, dead + 1
                    conn.execute(
                        schema.dead_letters.insert().values(
                            inbox_id=row.id,
                            source=row.source,
                            event_id=row.event_id,
                            connection_id=row.connection_id,
                            entity=row.entity,
                            partition_key=row.partition_key,
                            payload=row.payload,
                            attempts=attempts,
                            cause=cause,
                            failed_at=now,
                        )
                    )
                conn.execute(
                    table.update()
                    .where(table.c.id == row.id)
                    .values(status=status.value, attempts=attempts, run_key=None, last_error=cause, updated_at=now)
                )
        return retried, dead

    # -- dead letters ------------------------------------------------------------------------------------------------

    def dead_letters(self, *, include_replayed: bool = False) -> list[DeadLetter]:
        table = schema.dead_letters
        query = sa.select(table).order_by(table.c.id)
        if not include_replayed:
            query = query.where(table.c.replayed_at.is_(None))
        with self.store.engine.connect() as conn:
            return [DeadLetter.model_validate(row._asdict()) for row in conn.execute(query)]

    def replay(self, dead_letter_ids: Sequence[int] | None, *, actor: str) -> int:
        """Put dead letters back in the inbox as pending with a fresh attempt count; None replays every unreplayed
        one. Returns how many were replayed, and audits it."""
        letters, inbox = schema.dead_letters, schema.webhook_inbox
        now = utcnow()
        with self.store.write() as conn:
            query = sa.select(letters.c.id, letters.c.inbox_id).where(letters.c.replayed_at.is_(None))
            if dead_letter_ids is not None:
                query = query.where(letters.c.id.in_(list(dead_letter_ids)))
            rows = conn.execute(query).all()
            if not rows:
                return 0
            conn.execute(letters.update().where(letters.c.id.in_([r.id for r in rows])).values(replayed_at=now))
            conn.execute(
                inbox.update()
                .where(inbox.c.id.in_([r.inbox_id for r in rows]))
                .values(status=InboxStatus.PENDING.value, attempts=0, run_key=None, updated_at=now)
            )
            self.store.audit(
                conn, "dead_letters.replayed", actor=actor, detail={"dead_letter_ids": sorted(r.id for r in rows)}
            )
        return len(rows)

    # -- upkeep and figures ----------------------------------------------------------------------------------------

    def depth(self) -> dict[str, int]:
        table = schema.webhook_inbox
        with self.store.engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(  # type: ignore[arg-type]
                    sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
                ).all()
            )
        return {status.value: int(counts.get(status.value, 0)) for status in InboxStatus}

    def purge(self, *, older_than: timedelta = DEDUP_WINDOW) -> int:
        """Forget done events received before the dedup window; dead ones stay until replayed and done."""
        table = schema.webhook_inbox
        with self.store.write() as conn:
            result = conn.execute(
                table.delete().where(
                    (table.c.status == InboxStatus.DONE.value) & (table.c.received_at < utcnow() - older_than)
                )
            )
        return result.rowcount

    def _events(self, query: sa.Select[Any]) -> list[InboxEvent]:
        with self.store.engine.connect() as conn:
            return [InboxEvent.model_validate(row._asdict()) for row in conn.execute(query)]

    def _set(self, event_ids: Sequence[int], *, status: InboxStatus, run_key: str | None = None) -> None:
        if not event_ids:
            return
        table = schema.webhook_inbox
        values: dict[str, Any] = {"status": status.value, "updated_at": utcnow()}
        if run_key is not None:
            values["run_key"] = run_key
        with self.store.write() as conn:
            conn.execute(table.update().where(table.c.id.in_(list(event_ids))).values(**values))
