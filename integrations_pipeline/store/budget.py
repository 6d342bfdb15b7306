"""One rate-limit budget per (connection, provider), shared by every request of every run through the state store.

Each provider limit is a bucket (`burst`: HubSpot's 10-second window; `daily`: a day's quota; ...) holding the
calls granted in its rolling window as counts per slot of a tenth of the window. A call is granted only when
every bucket has room, counting a slot as long as any part of it lies within the window plus a safety margin:
so the budget never admits more calls in any rolling window than the provider does (what a sliding-window limiter
at the provider checks), while costing a fixed, small row per bucket instead of a log of timestamps.

The provider's own signals correct the budget: an advertised limit or window replaces ours, a reported usage above
our own count (another app, another instance, a tighter limit) is added to the current slot, and a `Retry-After`
or an exhausted quota blocks every caller until it passes. Backfills see only `BACKFILL_SHARE` of each limit, so
the rest stays for scheduled and webhook-driven runs.

One short locked transaction per grant: BEGIN IMMEDIATE on SQLite, an advisory lock per budget on PostgreSQL. A grant
may be a lease of several calls (`lease`), counted at once; the caller must spend them within LEASE_TTL_S, inside
the safety margin, so the provider still never sees more calls in a window than were counted in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from integrations_pipeline.store import schema
from integrations_pipeline.store.repository import StateStore

SLOTS_PER_WINDOW = 10
# Counted on top of every window: covers the time between our grant and the request's arrival at the provider, which
# on two busy cores with ten syncs in one process was seen to exceed half a second.
SAFETY_MARGIN_S = 1.0
LIVE_SHARE = 1.0
BACKFILL_SHARE = 0.5
"""A backfill may not take the last half of any window: scheduled and webhook-driven runs keep it."""
CALL_COUNT_RETENTION = timedelta(days=2)
LEASE_ROOM_DIVISOR = 8
LEASE_TTL_S = 0.1
"""How long leased calls stay spendable: less than SAFETY_MARGIN_S, which covers a grant's way to the provider."""


@dataclass(frozen=True)
class Window:
    """A provider limit: at most `limit` calls in any rolling `window_s` seconds."""

    bucket: str
    limit: int
    window_s: float


@dataclass(frozen=True)
class Observation:
    """What one provider response said about a bucket; None means it said nothing about that part."""

    bucket: str
    limit: int | None = None
    window_s: float | None = None
    used: int | None = None
    """Calls the provider counts in the current window (limit minus remaining)."""
    exhausted: bool = False
    """Refused for this bucket without a Retry-After: treat the window as full until our own calls age out."""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class BucketState:
    bucket: str
    limit: int
    window_s: float
    used: int
    blocked_until: datetime | None


@dataclass
class _Bucket:
    """One row, loaded for a transaction and written back if it changed."""

    bucket: str
    limit: int
    window_s: float
    slots: list[list[float]]  # [[slot_start_epoch_s, calls], ...], oldest first
    blocked_until: float | None
    exists: bool
    changed: bool = False

    @property
    def slot_s(self) -> float:
        return self.window_s / SLOTS_PER_WINDOW

    def forget_old(self, now: float) -> None:
        horizon = now - self.window_s - SAFETY_MARGIN_S
        kept = [slot for slot in self.slots if slot[0] + self.slot_s > horizon]
        if len(kept) != len(self.slots):
            self.slots, self.changed = kept, True

    def used(self) -> int:
        return int(sum(calls for _, calls in self.slots))

    def add(self, now: float, calls: int) -> None:
        start = math.floor(now / self.slot_s) * self.slot_s
        if self.slots and self.slots[-1][0] >= start:
            self.slots[-1][1] += calls
        else:
            self.slots.append([start, calls])
        self.changed = True

    def room(self, now: float, capacity: int) -> int:
        """How many more calls fit under `capacity` now (0 while blocked)."""
        if self.blocked_until is not None and self.blocked_until > now:
            return 0
        return max(capacity - self.used(), 0)

    def seconds_until_room(self, now: float, capacity: int) -> float:
        """0 when one more call fits under `capacity`, else the wait until enough old slots leave the window."""
        if self.blocked_until is not None and self.blocked_until > now:
            return self.blocked_until - now
        excess = self.used() - capacity + 1
        if excess <= 0:
            return 0.0
        for start, calls in self.slots:
            excess -= int(calls)
            if excess <= 0:
                return max(start + self.slot_s + self.window_s + SAFETY_MARGIN_S - now, 0.001)
        # The capacity is 0 (a backfill's share of a tiny limit): wait a whole window and look again.
        return self.window_s

    def apply(self, observation: Observation, now: float) -> None:
        if observation.limit is not None and observation.limit > 0 and observation.limit != self.limit:
            self.limit, self.changed = observation.limit, True
        if observation.window_s is not None and observation.window_s > 0 and observation.window_s != self.window_s:
            self.window_s, self.changed = observation.window_s, True
        self.forget_old(now)
        used = self.limit if observation.exhausted else observation.used
        if used is not None and used > self.used():
            self.add(now, used - self.used())
        if observation.retry_after_s is not None and observation.retry_after_s > 0:
            until = now + observation.retry_after_s
            if self.blocked_until is None or until > self.blocked_until:
                self.blocked_until, self.changed = until, True


class RateBudgets:
    """The repository of rate-limit budgets. `clock` is injectable so tests move time without sleeping."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def acquire(
        self,
        connection_id: str,
        provider: str,
        windows: Sequence[Window],
        *,
        share: float = LIVE_SHARE,
        observations: Sequence[Observation] = (),
    ) -> float:
        """Apply `observations`, then take one call from every bucket if all have room within `share` of their
        limit: 0.0. Otherwise take nothing and return the seconds to wait before asking again."""
        return self.lease(connection_id, provider, windows, share=share, observations=observations)[1]

    def lease(
        self,
        connection_id: str,
        provider: str,
        windows: Sequence[Window],
        *,
        up_to: int = 1,
        share: float = LIVE_SHARE,
        observations: Sequence[Observation] = (),
    ) -> tuple[int, float]:
        """Like `acquire`, but take as many calls as every bucket has room for, up to `up_to`, in one transaction:
        (calls granted, 0.0), or (0, seconds to wait). Granted calls are counted now, whether spent or not."""
        with self._buckets(connection_id, provider, windows, observations) as (conn, buckets, now):
            for bucket in buckets.values():
                bucket.forget_old(now)
            capacities = {name: math.floor(bucket.limit * share) for name, bucket in buckets.items()}
            room = min(bucket.room(now, capacities[name]) for name, bucket in buckets.items())
            # A lease never takes more than an eighth of what is left, so parallel runs under a tight limit still
            # get calls one by one rather than one run holding the window.
            granted = min(up_to, max(room // LEASE_ROOM_DIVISOR, 1)) if room > 0 else 0
            wait = 0.0
            if granted > 0:
                for bucket in buckets.values():
                    bucket.add(now, granted)
                self._count(conn, connection_id, provider, now, calls=granted)
            else:
                wait = max(bucket.seconds_until_room(now, capacities[name]) for name, bucket in buckets.items())
        return granted, wait

    def observe(
        self,
        connection_id: str,
        provider: str,
        windows: Sequence[Window],
        observations: Sequence[Observation],
        *,
        refused: bool = False,
    ) -> None:
        """Apply what a response said, at once (a refusal must stop the other runs before their next call);
        `refused` counts it toward the connection's recent 429 rate."""
        with self._buckets(connection_id, provider, windows, observations) as (conn, _, now):
            if refused:
                self._count(conn, connection_id, provider, now, refused=1)

    @contextmanager
    def _buckets(
        self, connection_id: str, provider: str, windows: Sequence[Window], observations: Sequence[Observation]
    ) -> Iterator[tuple[sa.Connection, dict[str, _Bucket], float]]:
        """The budget's buckets inside its lock, with `observations` applied; what the caller changes is saved."""
        with self._transaction(connection_id, provider) as conn:
            now = self.clock()
            buckets = self._load(conn, connection_id, provider, windows)
            for observation in observations:
                if observation.bucket in buckets:
                    buckets[observation.bucket].apply(observation, now)
            yield conn, buckets, now
            self._save(conn, connection_id, provider, buckets.values())

    @staticmethod
    def _count(
        conn: sa.Connection, connection_id: str, provider: str, now: float, *, calls: int = 0, refused: int = 0
    ) -> None:
        """Add to this hour's call counts (inside the budget's lock, so a read-then-write is safe)."""
        table = schema.rate_call_counts
        hour = datetime.fromtimestamp(now - now % 3600, UTC)
        key = (table.c.connection_id == connection_id) & (table.c.provider == provider) & (table.c.hour == hour)
        updated = conn.execute(
            table.update().where(key).values(calls=table.c.calls + calls, refused=table.c.refused + refused)
        )
        if updated.rowcount == 0:
            conn.execute(
                table.delete().where(
                    (table.c.connection_id == connection_id)
                    & (table.c.provider == provider)
                    & (table.c.hour < hour - CALL_COUNT_RETENTION)
                )
            )
            conn.execute(
                table.insert().values(
                    connection_id=connection_id, provider=provider, hour=hour, calls=calls, refused=refused
                )
            )

    def recent_calls(self, connection_id: str, provider: str) -> tuple[int, int]:
        """(calls, refused) in the current and the previous UTC hour."""
        return recent_call_counts(self.store.engine, self.clock()).get((connection_id, provider), (0, 0))

    def state(self, connection_id: str, provider: str) -> list[BucketState]:
        """Each bucket as it stands now, for operators and tests."""
        table = schema.rate_budgets
        query = sa.select(table).where(table.c.connection_id == connection_id, table.c.provider == provider)
        now = self.clock()
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.bucket)).all()
        states = []
        for row in rows:
            bucket = _from_row(row)
            bucket.forget_old(now)
            blocked = bucket.blocked_until if bucket.blocked_until and bucket.blocked_until > now else None
            states.append(
                BucketState(
                    bucket.bucket,
                    bucket.limit,
                    bucket.window_s,
                    bucket.used(),
                    datetime.fromtimestamp(blocked, UTC) if blocked else None,
                )
            )
        return states

    @contextmanager
    def _transaction(self, connection_id: str, provider: str) -> Iterator[sa.Connection]:
        """The budget's lock. On PostgreSQL the commit does not wait for the WAL flush: a crash may forget the last
        few milliseconds of bookkeeping, which the provider's next headers correct, and each call saves a flush."""
        with self.store.locked(_lock_name(connection_id, provider)) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            yield conn

    def _load(
        self, conn: sa.Connection, connection_id: str, provider: str, windows: Sequence[Window]
    ) -> dict[str, _Bucket]:
        table = schema.rate_budgets
        rows = conn.execute(
            sa.select(table).where(table.c.connection_id == connection_id, table.c.provider == provider)
        ).all()
        stored = {row.bucket: _from_row(row) for row in rows}
        return {
            window.bucket: stored.get(window.bucket)
            or _Bucket(window.bucket, window.limit, window.window_s, [], None, exists=False, changed=True)
            for window in windows
        }

    def _save(self, conn: sa.Connection, connection_id: str, provider: str, buckets: Any) -> None:
        table = schema.rate_budgets
        now = datetime.now(UTC)
        for bucket in buckets:
            if not bucket.changed:
                continue
            values = {
                "call_limit": bucket.limit,
                "window_s": bucket.window_s,
                "slots": bucket.slots,
                "blocked_until": (
                    datetime.fromtimestamp(bucket.blocked_until, UTC) if bucket.blocked_until is not None else None
                ),
                "updated_at": now,
            }
            if bucket.exists:
                conn.execute(
                    table.update()
                    .where(
                        table.c.connection_id == connection_id,
                        table.c.provider == provider,
                        table.c.bucket == bucket.bucket,
                    )
                    .values(**values)
                )
            else:
                conn.execute(
                    table.insert().values(
                        connection_id=connection_id, provider=provider, bucket=bucket.bucket, **values
                    )
                )


def _lock_name(connection_id: str, provider: str) -> str:
    return f"rate-budget:{provider}:{connection_id}"


def _from_row(row: sa.Row[Any]) -> _Bucket:
    blocked = row.blocked_until.timestamp() if row.blocked_until is not None else None
    return _Bucket(row.bucket, row.call_limit, row.window_s, [list(slot) for slot in row.slots], blocked, exists=True)


def recent_call_counts(engine_or_conn: sa.Engine | sa.Connection, now: float) -> dict[tuple[str, str], tuple[int, int]]:
    """(calls, refused) per (connection, provider) over the current and the previous UTC hour."""
    table = schema.rate_call_counts
    since = datetime.fromtimestamp(now - now % 3600 - 3600, UTC)
    query = (
        sa.select(table.c.connection_id, table.c.provider, sa.func.sum(table.c.calls), sa.func.sum(table.c.refused))
        .where(table.c.hour >= since)
        .group_by(table.c.connection_id, table.c.provider)
    )
    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            rows = conn.execute(query).all()
    else:
        rows = engine_or_conn.execute(query).all()
    return {(row[0], row[1]): (int(row[2] or 0), int(row[3] or 0)) for row in rows}
