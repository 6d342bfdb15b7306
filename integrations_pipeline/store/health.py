"""Health facts read from the state database at the moment they are asked for.

Everything here is derived from rows, not from a process's memory, so every gateway process, the metrics scrape
and the Dagster health sensor report the same figures. One pass of a few grouped queries, whatever the number of
connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from integrations_pipeline.crypto import Keyring
from integrations_pipeline.store import schema
from integrations_pipeline.store.budget import recent_call_counts
from integrations_pipeline.store.models import Connection, ConnectionStatus
from integrations_pipeline.store.repository import UnreadableSecret, unreadable_secrets, utcnow

# The hourly events schedule and the connections sensor sync every connection at least hourly: two missed hours
# are worth a look.
SYNC_LAG_WARNING = timedelta(hours=2)
# The push sensor (each minute) renews a subscription once half its granted life has passed. A normal lifetime,
# however short (Google and Graph grant hours to days), is no problem; a renewal this far past its due time is.
PUSH_RENEWAL_GRACE = timedelta(minutes=10)


class Health(StrEnum):
    OK = "ok"
    WARNING = "warning"  # syncing, but something needs a look soon
    CRITICAL = "critical"  # not syncing until someone acts
    OFF = "off"  # disconnected on purpose


@dataclass(frozen=True)
class ConnectionHealth:
    connection_id: str
    tenant: str
    provider: str
    status: ConnectionStatus
    status_reason: str | None
    token_expires_at: datetime | None
    last_sync_at: datetime | None
    lag_seconds: float | None  # since the last successful sync; None before the first
    recent_429_rate: float | None  # share of calls refused for a rate limit this hour and last; None: no calls
    rate_limited_until: datetime | None  # a provider's Retry-After or exhausted quota, shared by every run
    dead_letters: int  # not yet replayed
    inbox_pending: int  # received, not yet synced
    push_subscriptions: int  # active ones
    push_expires_at: datetime | None  # the soonest expiry among the active ones
    health: Health
    problems: tuple[str, ...]


@dataclass(frozen=True)
class StateFigures:
    """What `/metrics` reports from the database."""

    connections: list[ConnectionHealth]
    inbox_by_status: dict[str, int] = field(default_factory=dict)
    dead_letters_unreplayed: int = 0
    deliveries_by_status: dict[str, int] = field(default_factory=dict)
    delivery_attempts_by_outcome: dict[str, int] = field(default_factory=dict)


def _grouped(conn: sa.Connection, query: sa.Select[Any]) -> dict[str, int]:
    """{key: count} from a `SELECT key, count(*) ... GROUP BY key`."""
    return {str(row[0]): int(row[1]) for row in conn.execute(query) if row[0] is not None}


def judge(
    connection: Connection,
    *,
    now: datetime,
    dead_letters: int,
    push_expires_at: datetime | None,
    recent_429_rate: float | None,
    rate_limited_until: datetime | None = None,
    push_renewal_due_at: datetime | None = None,
    unreadable: tuple[UnreadableSecret, ...] = (),
) -> tuple[Health, tuple[str, ...]]:
    """Pure: the connection's health and the problems behind it, worst first."""
    if connection.status == ConnectionStatus.DISCONNECTED:
        return Health.OFF, ()
    critical: list[str] = []
    warnings: list[str] = []
    if connection.status == ConnectionStatus.NEEDS_REAUTH:
        critical.append(f"needs re-authorization: {connection.status_reason or 'the grant is gone'}")
    if unreadable:
        names = ", ".join(f"{secret.name} (key {secret.key_id!r})" for secret in unreadable)
        critical.append(
            f"its secrets cannot be decrypted with the keyring: {names}; no sync can run. Put the key that "
            "encrypted them back in INTEGRATIONS_ENCRYPTION_KEYS, or reconnect"
        )
    synced_or_created = connection.last_sync_at or connection.created_at
    if now - synced_or_created > SYNC_LAG_WARNING:
        since = "connected" if connection.last_sync_at is None else "the last successful sync"
        warnings.append(f"{_hours(now - synced_or_created)} since {since}")
    if dead_letters:
        warnings.append(f"{dead_letters} webhook events in dead letters")
    if push_expires_at is not None and push_expires_at <= now:
        warnings.append("a push subscription expired without renewal")
    elif push_renewal_due_at is not None and now - push_renewal_due_at > PUSH_RENEWAL_GRACE:
        warnings.append(
            f"a push subscription's renewal is {_hours(now - push_renewal_due_at)} overdue "
            f"(it expires in {_hours(push_expires_at - now) if push_expires_at else 'unknown time'})"
        )
    if rate_limited_until is not None and rate_limited_until > now:
        warnings.append(f"rate limited by the provider until {rate_limited_until:%Y-%m-%d %H:%M:%S} UTC")
    if recent_429_rate is not None and recent_429_rate >= 0.1:
        warnings.append(f"{recent_429_rate:.0%} of recent provider calls were rate limited (429)")
    if critical:
        return Health.CRITICAL, (*critical, *warnings)
    return (Health.WARNING if warnings else Health.OK), tuple(warnings)


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def connection_health(conn: sa.Connection, now: datetime, keyring: Keyring | None = None) -> list[ConnectionHealth]:
    """Every connection's health; with the keyring, a connection whose stored tokens it cannot decrypt is critical."""
    connections = [
        Connection.model_validate(row._asdict())
        for row in conn.execute(sa.select(schema.connections).order_by(schema.connections.c.id))
    ]
    letters = schema.dead_letters
    dead = _grouped(
        conn,
        sa.select(letters.c.connection_id, sa.func.count())
        .where(letters.c.replayed_at.is_(None))
        .group_by(letters.c.connection_id),
    )
    inbox = schema.webhook_inbox
    pending = _grouped(
        conn,
        sa.select(inbox.c.connection_id, sa.func.count())
        .where(inbox.c.status.in_(("pending", "requested")))
        .group_by(inbox.c.connection_id),
    )
    active_push = _active_push(conn)
    unreadable: dict[str, list[UnreadableSecret]] = {}
    for secret in unreadable_secrets(conn, keyring, credentials_only=True) if keyring is not None else []:
        unreadable.setdefault(secret.connection_id or "", []).append(secret)
    rates = recent_429_rates(conn, now)
    budgets = schema.rate_budgets
    blocked = {
        row.connection_id: row.until
        for row in conn.execute(
            sa.select(budgets.c.connection_id, sa.func.max(budgets.c.blocked_until).label("until"))
            .where(budgets.c.blocked_until > now)
            .group_by(budgets.c.connection_id)
        )
    }
    report = []
    for connection in connections:
        push_count, push_expires_at, push_renewal_due_at = active_push.get(connection.id, (0, None, None))
        health, problems = judge(
            connection,
            now=now,
            dead_letters=dead.get(connection.id, 0),
            push_expires_at=push_expires_at,
            recent_429_rate=rates.get(connection.id),
            rate_limited_until=blocked.get(connection.id),
            push_renewal_due_at=push_renewal_due_at,
            unreadable=tuple(unreadable.get(connection.id, ())),
        )
        report.append(
            ConnectionHealth(
                connection_id=connection.id,
                tenant=connection.tenant,
                provider=connection.provider,
                status=connection.status,
                status_reason=connection.status_reason,
                token_expires_at=connection.token_expires_at,
                last_sync_at=connection.last_sync_at,
                lag_seconds=(now - connection.last_sync_at).total_seconds() if connection.last_sync_at else None,
                recent_429_rate=rates.get(connection.id),
                rate_limited_until=blocked.get(connection.id),
                dead_letters=dead.get(connection.id, 0),
                inbox_pending=pending.get(connection.id, 0),
                push_subscriptions=push_count,
                push_expires_at=push_expires_at,
                health=health,
                problems=problems,
            )
        )
    return report


def _active_push(conn: sa.Connection) -> dict[str, tuple[int, datetime, datetime]]:
    """Per connection: active push subscriptions, the soonest expiry, and the soonest renewal due (half-life)."""
    push = schema.push_subscriptions
    found: dict[str, tuple[int, datetime, datetime]] = {}
    rows = conn.execute(
        sa.select(push.c.connection_id, push.c.renewed_at, push.c.expires_at).where(push.c.status == "active")
    )
    for connection_id, renewed_at, expires_at in rows:
        due = renewed_at + (expires_at - renewed_at) / 2  # as PushSubscription.half_life_passed
        count, soonest, earliest_due = found.get(connection_id, (0, expires_at, due))
        found[connection_id] = (count + 1, min(soonest, expires_at), min(earliest_due, due))
    return found


def recent_429_rates(conn: sa.Connection, now: datetime) -> dict[str, float]:
    """Share of provider calls refused for a rate limit (429, or the provider's equivalent) in the current and the
    previous UTC hour, per connection, from the counts the rate budget keeps; absent where no call was made."""
    rates: dict[str, float] = {}
    for (connection_id, _), (calls, refused) in recent_call_counts(conn, now.timestamp()).items():
        if calls:
            rates[connection_id] = refused / calls
    return rates


def state_figures(engine: sa.Engine, now: datetime | None = None, keyring: Keyring | None = None) -> StateFigures:
    """Every figure in one read transaction, so they agree with each other."""
    now = now or utcnow()
    with engine.connect() as conn:
        inbox, letters = schema.webhook_inbox, schema.dead_letters
        deliveries, attempts = schema.webhook_deliveries, schema.webhook_attempts
        outcome = sa.case(
            (attempts.c.status_code.between(200, 299), "success"),
            (attempts.c.status_code.is_(None), "no_response"),
            else_="http_error",
        )
        return StateFigures(
            connections=connection_health(conn, now, keyring),
            inbox_by_status=_grouped(conn, sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status)),
            dead_letters_unreplayed=conn.execute(
                sa.select(sa.func.count()).select_from(letters).where(letters.c.replayed_at.is_(None))
            ).scalar_one(),
            deliveries_by_status=_grouped(
                conn, sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
            ),
            delivery_attempts_by_outcome=_grouped(conn, sa.select(outcome, sa.func.count()).group_by(outcome)),
        )
