"""SQLAlchemy Core tables of the integration state store. Changes go through Alembic migrations only.

Sections follow the migrations that created them: 0001 connections and audit, 0002 field mappings, 0003 webhooks
in, 0004 rate-limit budgets, 0005 webhooks out, 0006 the audit chain's head, 0007 rate call counts, 0008
connections by account, 0009 the audit MAC, 0010 the field catalog.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.String(160), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | needs_reauth | disconnected
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("external_account_id", sa.String(255), nullable=True),
    sa.Column("requested_scopes", sa.JSON, nullable=False),
    sa.Column("granted_scopes", sa.JSON, nullable=False),
    sa.Column("provider_metadata", sa.JSON, nullable=False),  # api_domain, instance_url, ...: never a secret
    sa.Column("token_expires_at", UTCDateTime, nullable=True),
    sa.Column("last_sync_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant", "provider"),
    # Webhooks name the account, not the connection (migration 0008).
    sa.Index("ix_connections_provider_account", "provider", "external_account_id"),
)

# One row per secret of a connection (access_token, refresh_token). `key_id` repeats the ciphertext's key id so
# that key rotation can find the rows still under an old key with an index instead of a scan.
credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("connection_id", sa.String(160), sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False, index=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Only the SHA-256 of a state is stored: the state itself travels in the browser and is single use.
oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("return_path", sa.Text, nullable=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False, index=True),
    sa.Column("code_verifier_ciphertext", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("consumed_at", UTCDateTime, nullable=True),
    # 0009: the tenant confirmed that this authorization may replace the connection's provider account.
    sa.Column("replace_account", sa.Boolean, nullable=False, server_default=sa.false()),
)

# `partition_key` is "" for the live incremental cursor; a backfill of a partition keeps its own row.
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("connection_id", sa.String(160), sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("partition_key", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Append-only and hash-chained; no foreign key, because the trail outlives the connections it speaks of.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=True),
    sa.Column("provider", sa.String(32), nullable=True),
    sa.Column("connection_id", sa.String(160), nullable=True, index=True),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    # 0009: HMAC-SHA256 of entry_hash under a subkey of keyring key `mac_key_id`; NULL on entries written before.
    sa.Column("mac_key_id", sa.String(32), nullable=True),
    sa.Column("mac", sa.String(64), nullable=True),
)

# A tenant's field mapping, one row per (provider, entity, target column). Tenants, not connections: a mapping
# outlives reconnecting, and applies to every connection of that tenant at the provider.
field_mappings = sa.Table(
    "field_mappings",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("target", sa.String(63), primary_key=True),
    sa.Column("source", sa.String(255), nullable=False),  # 0010: widened for raw paths and catalog names
    sa.Column("transform", sa.String(16), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("default_value", sa.JSON, nullable=True),  # 0010: the value a missing source field gets
)

# -- 0003: webhooks in -------------------------------------------------------------------------------------------

# What a provider was asked to push to us for one connection: a Graph subscription, a Google channel, a Zoho watch
# channel. The secret it echoes (Graph clientState, Google channel token, Zoho token) is kept only as its SHA-256:
# verification compares hashes in constant time, and nothing here needs the secret back.
push_subscriptions = sa.Table(
    "push_subscriptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # ours; the channel id where the provider lets us choose it
    sa.Column("connection_id", sa.String(160), sa.ForeignKey("connections.id", ondelete="CASCADE"), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("resource", sa.Text, nullable=False),  # what is watched, as the provider names it
    sa.Column("external_id", sa.String(255), nullable=True, index=True),  # the provider's id (Graph, Google resource)
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | removed | failed
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("renewed_at", UTCDateTime, nullable=False),  # start of the current life: renew past its half
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Every verified notification, committed before it is acknowledged. (source, event_id) deduplicates: `source` is
# the provider or `standard:<name>`, `event_id` the sender's id (or a digest where the sender gives none). Rows stay
# at least the dedup window after they are done, so a late retry still finds its twin.
webhook_inbox = sa.Table(
    "webhook_inbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(96), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # change | missed | lifecycle | ...
    sa.Column("connection_id", sa.String(160), nullable=True, index=True),
    sa.Column("entity", sa.String(32), nullable=True),
    sa.Column("partition_key", sa.String(64), nullable=True),  # the day, where the event names one
    sa.Column("payload", sa.JSON, nullable=False),  # as received, minus any secret the sender echoes
    sa.Column("status", sa.String(16), nullable=False),  # pending | requested | done | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_key", sa.String(160), nullable=True, index=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("source", "event_id"),
    sa.Index("ix_webhook_inbox_status_id", "status", "id"),
)

# Inbox events that failed five times, with the cause; the inbox row stays (status `dead`) so duplicates still
# deduplicate. A replay puts the inbox row back to pending and stamps `replayed_at` here.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("inbox_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False, index=True),
    sa.Column("source", sa.String(96), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("connection_id", sa.String(160), nullable=True, index=True),
    sa.Column("entity", sa.String(32), nullable=True),
    sa.Column("partition_key", sa.String(64), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.Column("replayed_at", UTCDateTime, nullable=True),
)

# -- 0004: rate-limit budgets ------------------------------------------------------------------------------------

# One row per provider limit (bucket) of a connection, shared by every run (store/budget.py). `slots` holds the
# calls granted in the rolling window as [slot_start_epoch_s, calls] pairs, oldest first: ten per window at most.
rate_budgets = sa.Table(
    "rate_budgets",
    metadata,
    sa.Column("connection_id", sa.String(160), primary_key=True),
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("bucket", sa.String(16), primary_key=True),  # burst | window | daily
    sa.Column("call_limit", sa.Integer, nullable=False),
    sa.Column("window_s", sa.Float, nullable=False),
    sa.Column("slots", sa.JSON, nullable=False),
    sa.Column("blocked_until", UTCDateTime, nullable=True),  # a Retry-After or an exhausted quota, for everyone
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Calls granted and calls the provider refused for its rate limit, per connection and UTC hour (migration 0007): the
# "recent 429 rate" of /health/integrations. Written in the budget's own transactions; rows older than
# CALL_COUNT_RETENTION are dropped as new hours begin.
rate_call_counts = sa.Table(
    "rate_call_counts",
    metadata,
    sa.Column("connection_id", sa.String(160), primary_key=True),
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("hour", UTCDateTime, primary_key=True),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("refused", sa.Integer, nullable=False),
)

# -- 0005: webhooks out ------------------------------------------------------------------------------------------

# A receiver of our signed events. Its `whsec_` secret is needed again to sign, so it is kept encrypted under the
# keyring (bound to the subscription id); during a rotation the previous secret also signs until its expiry.
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # active | disabled
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("key_id", sa.String(32), nullable=False, index=True),
    sa.Column("secret_ciphertext", sa.Text, nullable=False),
    sa.Column("previous_key_id", sa.String(32), nullable=True, index=True),
    sa.Column("previous_secret_ciphertext", sa.Text, nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# The outbox: every event, written in the transaction of the change it reports. `id` is the `webhook-id` that
# receivers deduplicate on, the same for every attempt and replay.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("connection_id", sa.String(160), nullable=True, index=True),
    sa.Column("data", sa.JSON, nullable=False),  # facts only, never a secret
    sa.Column("occurred_at", UTCDateTime, nullable=False),
)

# One event to one subscription: fanned out when the event is written. Claimed by moving `next_attempt_at` ahead.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "subscription_id",
        sa.String(64),
        sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    sa.Column("replay_of", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# Every attempt at a delivery, successful or not: the history the gateway shows.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.String(64),
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempted_at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("response_excerpt", sa.Text, nullable=True),
)

# -- 0006: audit anchor ------------------------------------------------------------------------------------------

# The audit chain's head, one row (id 1) rewritten in the same transaction as every append. A hash chain proves
# each entry against the one before it, but not that nothing followed the last one: deleting the newest entries
# leaves a perfect shorter chain. The head pins the last entry's id and hash and the number of entries, so
# `audit verify` sees a truncated tail too.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Column("entries", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# -- 0010: field catalog -----------------------------------------------------------------------------------------

# Every field each connection's provider describes for each entity (store/catalog.py). A field the provider no
# longer describes keeps its row with `removed_at` set, so mappings naming it get a clear message and a field that
# comes back is the same row again. `seen_at` is the last discovery that listed it.
field_catalog = sa.Table(
    "field_catalog",
    metadata,
    sa.Column("connection_id", sa.String(160), primary_key=True),
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("provider_type", sa.String(64), nullable=False),
    sa.Column("is_custom", sa.Boolean, nullable=False),
    sa.Column("raw_path", sa.String(512), nullable=False),
    sa.Column("discovered_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    sa.Column("removed_at", UTCDateTime, nullable=True),
)
