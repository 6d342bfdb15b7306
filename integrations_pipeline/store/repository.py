"""StateStore: every read and write of integration state, on SQLite or PostgreSQL alike."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from integrations_pipeline.crypto import DecryptionError, Keyring
from integrations_pipeline.mapping import ENTITIES, FieldRule, ProviderMapping, Transform
from integrations_pipeline.store import schema
from integrations_pipeline.store.engine import SQLITE_BEGIN
from integrations_pipeline.store.events import EventType, record_event
from integrations_pipeline.store.models import (
    AuditEntry,
    Connection,
    ConnectionStatus,
    PendingAuthorization,
    TokenSet,
)

OAUTH_STATE_TTL = timedelta(minutes=10)
STATE_BYTES = 32  # 256 bits, above the 128 the design asks for
GENESIS_HASH = "0" * 64
AUDIT_MAC_PURPOSE = "integrations-pipeline audit chain v1"  # the HKDF label of the audit chain's MAC subkey
ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"
LIVE_PARTITION = ""  # the partition_key of a connection's live incremental cursor


class StoreError(Exception):
    """A state store operation cannot proceed; the message says why, with no secret in it."""


class InvalidState(StoreError):
    """The OAuth state is unknown, used, expired, or belongs to another provider."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def connection_id_for(tenant: str, provider: str) -> str:
    return f"{provider}-{tenant}"


def _credential_aad(connection_id: str, name: str) -> str:
    return f"connection:{connection_id}:{name}"


def subscription_secret_aad(subscription_id: str) -> str:
    """The current and the previous secret share it: either may be the one that moves on rotation."""
    return f"webhook_subscription:{subscription_id}:secret"


def _verifier_aad(state_hash: str) -> str:
    return f"oauth_state:{state_hash}:code_verifier"


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# Built once (a webhook's hot path): building the statement per call cost more CPU than running it.
_CONNECTIONS_BY_ACCOUNT = (
    sa.select(schema.connections.c.external_account_id, schema.connections.c.id)
    .where(schema.connections.c.provider == sa.bindparam("provider"))
    .where(schema.connections.c.external_account_id.in_(sa.bindparam("accounts", expanding=True)))
    .where(schema.connections.c.status.in_(sa.bindparam("statuses", expanding=True)))
    .order_by(schema.connections.c.id)
)


class StateStore:
    def __init__(self, engine: sa.Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring

    # -- transactions ---------------------------------------------------------------------------------------

    @contextmanager
    def locked(self, name: str) -> Iterator[sa.Connection]:
        """A write transaction holding an exclusive lock named `name` until it commits.

        PostgreSQL: a transaction-scoped advisory lock, so only holders of the same name wait.
        SQLite: BEGIN IMMEDIATE, the database-wide write lock (SQLite has no finer one); WAL keeps readers going.
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
                yield conn
        else:
            with self.engine.begin() as conn:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_advisory_key(name))))
                yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction; on SQLite it takes the write lock up front, so a read-then-write never deadlocks."""
        with self.locked("store:write") if self.engine.dialect.name == "sqlite" else self.engine.begin() as conn:
            yield conn

    # -- connections ----------------------------------------------------------------------------------------

    def save_connection(
        self,
        conn: sa.Connection,
        *,
        tenant: str,
        provider: str,
        requested_scopes: list[str],
        granted_scopes: list[str],
        tokens: TokenSet,
        external_account_id: str | None = None,
        provider_metadata: dict[str, Any] | None = None,
    ) -> Connection:
        """Create or re-authorize the (tenant, provider) connection with fresh tokens, inside `conn`'s transaction."""
        connection_id = connection_id_for(tenant, provider)
        now = utcnow()
        values = {
            "status": ConnectionStatus.ACTIVE.value,
            "status_reason": None,
            "external_account_id": external_account_id,
            "requested_scopes": sorted(set(requested_scopes)),
            "granted_scopes": sorted(set(granted_scopes)),
            "provider_metadata": provider_metadata or {},
            "token_expires_at": tokens.expires_at,
            "updated_at": now,
        }
        table = schema.connections
        updated = conn.execute(table.update().where(table.c.id == connection_id).values(**values))
        if updated.rowcount == 0:
            conn.execute(
                table.insert().values(id=connection_id, tenant=tenant, provider=provider, created_at=now, **values)
            )
        self.save_tokens(conn, connection_id, tokens)
        return self._get_connection(conn, connection_id)

    def get_connection(self, connection_id: str, conn: sa.Connection | None = None) -> Connection | None:
        """The connection as it stands (inside `conn`'s transaction when given, e.g. under its lock)."""
        if conn is not None:
            return self._get_connection(conn, connection_id, required=False)
        with self.engine.connect() as fresh:
            return self._get_connection(fresh, connection_id, required=False)

    def _get_connection(self, conn: sa.Connection, connection_id: str, *, required: bool = True) -> Connection:
        row = conn.execute(sa.select(schema.connections).where(schema.connections.c.id == connection_id)).first()
        if row is None:
            if required:
                raise StoreError(f"connection {connection_id!r} does not exist")
            return None  # type: ignore[return-value]
        return Connection.model_validate(row._asdict())

    def get_connections(self, connection_ids: Collection[str]) -> dict[str, Connection]:
        """The named connections that exist, in one query."""
        if not connection_ids:
            return {}
        query = sa.select(schema.connections).where(schema.connections.c.id.in_(sorted(set(connection_ids))))
        with self.engine.connect() as conn:
            return {row.id: Connection.model_validate(row._asdict()) for row in conn.execute(query)}

    def list_connections(
        self, *, provider: str | None = None, statuses: tuple[ConnectionStatus, ...] | None = None
    ) -> list[Connection]:
        query = sa.select(schema.connections).order_by(schema.connections.c.id)
        if provider is not None:
            query = query.where(schema.connections.c.provider == provider)
        if statuses is not None:
            query = query.where(schema.connections.c.status.in_([status.value for status in statuses]))
        with self.engine.connect() as conn:
            return [Connection.model_validate(row._asdict()) for row in conn.execute(query)]

    def connections_by_account(
        self,
        provider: str,
        account_ids: Collection[str],
        statuses: tuple[ConnectionStatus, ...],
        conn: sa.Connection | None = None,
    ) -> dict[str, str]:
        """{account id: connection id} for the named accounts (an indexed lookup, whatever the number of
        connections), inside `conn`'s transaction when given. An account two tenants connected resolves to the
        connection with the greatest id."""
        if not account_ids:
            return {}
        if conn is None:
            with self.engine.connect() as own:
                return self.connections_by_account(provider, account_ids, statuses, own)
        parameters = {
            "provider": provider,
            "accounts": sorted(set(account_ids)),
            "statuses": [status.value for status in statuses],
        }
        return {account: connection_id for account, connection_id in conn.execute(_CONNECTIONS_BY_ACCOUNT, parameters)}

    def set_status(self, conn: sa.Connection, connection_id: str, status: ConnectionStatus, reason: str | None) -> None:
        """Set the status inside `conn`'s transaction; turning needs_reauth also records the outgoing event."""
        table = schema.connections
        before = conn.execute(sa.select(table.c.status).where(table.c.id == connection_id)).scalar()
        now = utcnow()
        conn.execute(
            table.update()
            .where(table.c.id == connection_id)
            .values(status=status.value, status_reason=reason, updated_at=now)
        )
        if status == ConnectionStatus.NEEDS_REAUTH and before not in (None, status.value):
            connection = self._get_connection(conn, connection_id)
            data = {"connection_id": connection_id, "tenant": connection.tenant, "provider": connection.provider}
            record_event(
                conn, EventType.NEEDS_REAUTH, connection_id=connection_id, at=now, data={**data, "reason": reason}
            )

    def disconnect(self, conn: sa.Connection, connection_id: str) -> None:
        """Forget the tokens and mark the connection disconnected; its history and cursors stay."""
        conn.execute(schema.credentials.delete().where(schema.credentials.c.connection_id == connection_id))
        self.set_status(conn, connection_id, ConnectionStatus.DISCONNECTED, "disconnected by an operator")
        conn.execute(
            schema.connections.update().where(schema.connections.c.id == connection_id).values(token_expires_at=None)
        )

    def record_sync(self, connection_id: str, at: datetime | None = None) -> None:
        with self.write() as conn:
            conn.execute(
                schema.connections.update()
                .where(schema.connections.c.id == connection_id)
                .values(last_sync_at=at or utcnow())
            )

    # -- tokens -----------------------------------------------------------------------------------------------

    def save_tokens(self, conn: sa.Connection, connection_id: str, tokens: TokenSet) -> None:
        secrets_by_name = {ACCESS_TOKEN: tokens.access_token, REFRESH_TOKEN: tokens.refresh_token}
        now = utcnow()
        for name, secret in secrets_by_name.items():
            table = schema.credentials
            where = (table.c.connection_id == connection_id) & (table.c.name == name)
            conn.execute(table.delete().where(where))
            if secret is not None:
                ciphertext = self.keyring.encrypt(
                    secret.get_secret_value(), associated_data=_credential_aad(connection_id, name)
                )
                conn.execute(
                    table.insert().values(
                        connection_id=connection_id,
                        name=name,
                        key_id=self.keyring.primary_key_id,
                        ciphertext=ciphertext,
                        updated_at=now,
                    )
                )
        conn.execute(
            schema.connections.update()
            .where(schema.connections.c.id == connection_id)
            .values(token_expires_at=tokens.expires_at, updated_at=now)
        )

    def load_tokens(self, connection_id: str, conn: sa.Connection | None = None) -> TokenSet | None:
        """Decrypt the connection's tokens (inside `conn`'s transaction when given, e.g. under its lock)."""
        if conn is None:
            with self.engine.connect() as fresh:
                return self.load_tokens(connection_id, fresh)
        # One statement, so the tokens and their expiry come from the same snapshot: under READ COMMITTED two
        # statements could pair the old token with the new expiry while a refresh commits in between.
        credentials, connections = schema.credentials, schema.connections
        rows = conn.execute(
            sa.select(credentials.c.name, credentials.c.ciphertext, connections.c.token_expires_at)
            .select_from(credentials.join(connections, connections.c.id == credentials.c.connection_id))
            .where(credentials.c.connection_id == connection_id)
        ).all()
        plain = {
            name: self.keyring.decrypt(ciphertext, associated_data=_credential_aad(connection_id, name))
            for name, ciphertext, _ in rows
        }
        if ACCESS_TOKEN not in plain:
            return None
        refresh = plain.get(REFRESH_TOKEN)
        return TokenSet(access_token=plain[ACCESS_TOKEN], refresh_token=refresh, expires_at=rows[0].token_expires_at)

    # -- OAuth states ---------------------------------------------------------------------------------------

    def create_oauth_state(
        self,
        *,
        tenant: str,
        provider: str,
        redirect_uri: str,
        return_path: str | None,
        scopes: list[str],
        code_verifier: str,
        replace_account: bool = False,
    ) -> tuple[str, datetime]:
        """Store a fresh single-use state and return it with its expiry; only its hash is kept."""
        state = secrets.token_urlsafe(STATE_BYTES)
        state_hash = _hash_state(state)
        now = utcnow()
        expires_at = now + OAUTH_STATE_TTL
        with self.write() as conn:
            conn.execute(schema.oauth_states.delete().where(schema.oauth_states.c.expires_at < now - OAUTH_STATE_TTL))
            conn.execute(
                schema.oauth_states.insert().values(
                    state_hash=state_hash,
                    tenant=tenant,
                    provider=provider,
                    redirect_uri=redirect_uri,
                    return_path=return_path,
                    scopes=scopes,
                    key_id=self.keyring.primary_key_id,
                    code_verifier_ciphertext=self.keyring.encrypt(
                        code_verifier, associated_data=_verifier_aad(state_hash)
                    ),
                    created_at=now,
                    expires_at=expires_at,
                    replace_account=replace_account,
                )
            )
        return state, expires_at

    def consume_oauth_state(self, state: str, provider: str) -> PendingAuthorization:
        """Use a state exactly once: unknown, reused, expired or cross-provider states raise InvalidState."""
        state_hash = _hash_state(state)
        table = schema.oauth_states
        now = utcnow()
        with self.write() as conn:
            row = conn.execute(sa.select(table).where(table.c.state_hash == state_hash)).first()
            if row is None:
                raise InvalidState("unknown authorization state; start the connection again")
            if row.provider != provider:
                raise InvalidState("this authorization state was issued for another provider")
            claimed = conn.execute(
                table.update()
                .where((table.c.state_hash == state_hash) & table.c.consumed_at.is_(None) & (table.c.expires_at > now))
                .values(consumed_at=now)
            )
            if claimed.rowcount != 1:
                used = row.consumed_at is not None
                raise InvalidState(
                    "this authorization state was already used" if used else "this authorization state has expired"
                )
            verifier = self.keyring.decrypt(row.code_verifier_ciphertext, associated_data=_verifier_aad(state_hash))
        return PendingAuthorization(
            tenant=row.tenant,
            provider=row.provider,
            redirect_uri=row.redirect_uri,
            return_path=row.return_path,
            scopes=list(row.scopes),
            code_verifier=verifier,
            replace_account=row.replace_account,
        )

    # -- sync cursors -----------------------------------------------------------------------------------------

    def get_cursor(self, connection_id: str, entity: str, partition_key: str = LIVE_PARTITION) -> str | None:
        table = schema.sync_cursors
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(table.c.cursor).where(
                    (table.c.connection_id == connection_id)
                    & (table.c.entity == entity)
                    & (table.c.partition_key == partition_key)
                )
            ).scalar_one_or_none()

    def set_cursor(self, connection_id: str, entity: str, cursor: str, partition_key: str = LIVE_PARTITION) -> None:
        table = schema.sync_cursors
        key = (table.c.connection_id == connection_id) & (table.c.entity == entity)
        key &= table.c.partition_key == partition_key
        with self.write() as conn:
            if conn.execute(table.update().where(key).values(cursor=cursor, updated_at=utcnow())).rowcount == 0:
                conn.execute(
                    table.insert().values(
                        connection_id=connection_id,
                        entity=entity,
                        partition_key=partition_key,
                        cursor=cursor,
                        updated_at=utcnow(),
                    )
                )

    def clear_cursor(self, connection_id: str, entity: str, partition_key: str = LIVE_PARTITION) -> None:
        table = schema.sync_cursors
        with self.write() as conn:
            conn.execute(
                table.delete().where(
                    (table.c.connection_id == connection_id)
                    & (table.c.entity == entity)
                    & (table.c.partition_key == partition_key)
                )
            )

    # -- field mappings -------------------------------------------------------------------------------------

    def get_mapping(self, tenant: str, provider: str) -> ProviderMapping:
        table = schema.field_mappings
        query = sa.select(table).where((table.c.tenant == tenant) & (table.c.provider == provider))
        rules: dict[str, dict[str, FieldRule]] = {entity: {} for entity in ENTITIES}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                rules[row.entity][row.target] = FieldRule(
                    source=row.source, transform=Transform(row.transform), default=row.default_value
                )
        return ProviderMapping(**rules)

    def save_mapping(self, conn: sa.Connection, tenant: str, provider: str, mapping: ProviderMapping) -> None:
        """Replace the tenant's mapping for the provider inside `conn`'s transaction."""
        table = schema.field_mappings
        conn.execute(table.delete().where((table.c.tenant == tenant) & (table.c.provider == provider)))
        rows = [
            {
                "tenant": tenant,
                "provider": provider,
                "entity": entity,
                "target": target,
                "source": rule.source,
                "transform": rule.transform.value,
                "default_value": rule.default,
                "updated_at": utcnow(),
            }
            for entity in ENTITIES
            for target, rule in mapping.rules(entity).items()
        ]
        if rows:
            conn.execute(table.insert(), rows)

    # -- audit log ----------------------------------------------------------------------------------------------

    def audit(
        self,
        conn: sa.Connection,
        action: str,
        *,
        actor: str,
        tenant: str | None = None,
        provider: str | None = None,
        connection_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append a hash-chained entry inside `conn`'s transaction and move the chain's head with it.

        The entry's hash is MACed under the primary key's audit subkey: without the key, no one can append an entry
        that verifies, and since every hash covers the one before it, the newest MAC vouches for the whole chain.
        Callers pass facts, never secrets; detail keys that name a secret are redacted all the same.
        """
        if self.engine.dialect.name != "sqlite":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_advisory_key("audit_log"))))
        table, head = schema.audit_log, schema.audit_head
        prev_hash = conn.execute(sa.select(table.c.entry_hash).order_by(table.c.id.desc()).limit(1)).scalar()
        entry = {
            "occurred_at": utcnow(),
            "actor": actor,
            "action": action,
            "tenant": tenant,
            "provider": provider,
            "connection_id": connection_id,
            "detail": redact_secrets(detail or {}),
            "prev_hash": prev_hash or GENESIS_HASH,
        }
        entry_hash = audit_hash(entry)
        mac_key_id, mac = self.keyring.mac(entry_hash, purpose=AUDIT_MAC_PURPOSE)
        inserted = conn.execute(
            table.insert().values(**entry, entry_hash=entry_hash, mac_key_id=mac_key_id, mac=mac)
        ).inserted_primary_key
        assert inserted is not None
        entry_id = inserted[0]
        anchor = {"last_id": entry_id, "entry_hash": entry_hash, "updated_at": entry["occurred_at"]}
        moved = conn.execute(head.update().where(head.c.id == 1).values(**anchor, entries=head.c.entries + 1))
        if moved.rowcount == 0:
            entries = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            conn.execute(head.insert().values(id=1, entries=entries, **anchor))

    def audit_entries(
        self,
        *,
        connection_id: str | None = None,
        tenant: str | None = None,
        provider: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries oldest first; with `limit`, the newest `limit` of those that match."""
        log = schema.audit_log
        query = sa.select(log)
        for column, wanted in (
            (log.c.connection_id, connection_id),
            (log.c.tenant, tenant),
            (log.c.provider, provider),
            (log.c.action, action),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if since is not None:
            query = query.where(log.c.occurred_at >= since)
        if limit is not None:
            query = query.order_by(log.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            entries = [AuditEntry.model_validate(row._asdict()) for row in conn.execute(query)]
        return sorted(entries, key=lambda entry: entry.id)

    # -- key rotation -----------------------------------------------------------------------------------------

    def key_usage(self) -> dict[str, int]:
        """How many stored ciphertexts each key id still protects."""
        usage: dict[str, int] = {}
        with self.engine.connect() as conn:
            subscriptions = schema.webhook_subscriptions
            for column in (
                schema.credentials.c.key_id,
                schema.oauth_states.c.key_id,
                subscriptions.c.key_id,
                subscriptions.c.previous_key_id,
            ):
                for key_id, count in conn.execute(
                    sa.select(column, sa.func.count()).where(column.is_not(None)).group_by(column)
                ):
                    usage[key_id] = usage.get(key_id, 0) + count
        return usage

    def rotate_keys(self, batch_size: int = 500) -> KeyRotation:
        """Re-encrypt every ciphertext not under the primary key.

        A row that cannot be decrypted (its key is gone, or the key under its id is another one) is left as it is
        and reported; every other row still moves, so one bad row never holds a rotation half-done. Each
        credential is re-read and rewritten inside its own connection's lock, so a concurrent refresh either sees
        the old row or the new one, never a half-written pair.
        """
        rotation = KeyRotation()
        primary = self.keyring.primary_key_id
        credentials = schema.credentials
        after = ("", "")
        while True:
            with self.engine.connect() as conn:
                batch = conn.execute(
                    sa.select(credentials.c.connection_id, credentials.c.name)
                    .where(credentials.c.key_id != primary)
                    .where(sa.tuple_(credentials.c.connection_id, credentials.c.name) > after)
                    .order_by(credentials.c.connection_id, credentials.c.name)
                    .limit(batch_size)
                ).all()
            if not batch:
                break
            after = tuple(batch[-1])
            for connection_id, name in batch:
                with self.locked(connection_id) as conn:
                    where = (credentials.c.connection_id == connection_id) & (credentials.c.name == name)
                    row = conn.execute(sa.select(credentials.c.ciphertext, credentials.c.key_id).where(where)).first()
                    if row is None or row.key_id == primary:
                        continue
                    aad = _credential_aad(connection_id, name)
                    unreadable = unreadable_credential(connection_id, name, row.key_id)
                    ciphertext = self._reencrypt(row.ciphertext, aad, unreadable, rotation)
                    if ciphertext is not None:
                        conn.execute(credentials.update().where(where).values(ciphertext=ciphertext, key_id=primary))
        states = schema.oauth_states
        with self.write() as conn:
            for row in conn.execute(sa.select(states).where(states.c.key_id != primary)).all():
                aad = _verifier_aad(row.state_hash)
                unreadable = unreadable_verifier(row.state_hash, row.key_id)
                ciphertext = self._reencrypt(row.code_verifier_ciphertext, aad, unreadable, rotation)
                if ciphertext is not None:
                    conn.execute(
                        states.update()
                        .where(states.c.state_hash == row.state_hash)
                        .values(code_verifier_ciphertext=ciphertext, key_id=primary)
                    )
        self._rotate_subscription_secrets(rotation)
        return rotation

    def _reencrypt(self, ciphertext: str, aad: str, unreadable: UnreadableSecret, rotation: KeyRotation) -> str | None:
        """The ciphertext under the primary key, counted as moved; None (and reported) when it cannot be read."""
        try:
            plain = self.keyring.decrypt(ciphertext, associated_data=aad)
        except DecryptionError:
            rotation.unreadable.append(unreadable)
            return None
        rotation.moved += 1
        return self.keyring.encrypt(plain, associated_data=aad)

    def _rotate_subscription_secrets(self, rotation: KeyRotation) -> None:
        """Outgoing webhook secrets (current and, during a rotation overlap, previous) onto the primary key."""
        primary = self.keyring.primary_key_id
        table = schema.webhook_subscriptions
        with self.write() as conn:
            stale = (table.c.key_id != primary) | (table.c.previous_key_id != primary)
            for row in conn.execute(sa.select(table).where(stale)).all():
                aad = subscription_secret_aad(row.id)
                values: dict[str, str] = {}
                for key_column, text_column, name in (
                    ("key_id", "secret_ciphertext", "secret"),
                    ("previous_key_id", "previous_secret_ciphertext", "previous_secret"),
                ):
                    key_id = getattr(row, key_column)
                    if key_id in (None, primary):
                        continue
                    unreadable = unreadable_subscription_secret(row.id, name, key_id)
                    ciphertext = self._reencrypt(getattr(row, text_column), aad, unreadable, rotation)
                    if ciphertext is not None:
                        values |= {key_column: primary, text_column: ciphertext}
                if values:
                    conn.execute(table.update().where(table.c.id == row.id).values(**values))


# What an operator can do about a secret the keyring cannot read, by table.
UNREADABLE_REMEDIES = {
    "credentials": "reconnect it (POST /connections/<provider>/connect) to store fresh tokens",
    "oauth_states": "nothing: the pending authorization expires within minutes and a new connect replaces it",
    "webhook_subscriptions": "delete the subscription and create it again (a new secret)",
}


@dataclass(frozen=True)
class UnreadableSecret:
    """A stored ciphertext the keyring cannot decrypt, named without its value."""

    table: str
    row: str
    name: str
    key_id: str
    connection_id: str | None = None

    def describe(self) -> str:
        return (
            f"{self.table}: {self.row}, field {self.name} (under key {self.key_id!r}) cannot be decrypted with the "
            "keyring: put the key that encrypted it back in INTEGRATIONS_ENCRYPTION_KEYS (as a secondary) and "
            f"rotate again, or {UNREADABLE_REMEDIES[self.table]}"
        )


def unreadable_credential(connection_id: str, name: str, key_id: str) -> UnreadableSecret:
    return UnreadableSecret("credentials", f"connection {connection_id}", name, key_id, connection_id)


def unreadable_verifier(state_hash: str, key_id: str) -> UnreadableSecret:
    return UnreadableSecret("oauth_states", f"state {state_hash[:12]}", "code_verifier", key_id)


def unreadable_subscription_secret(subscription_id: str, name: str, key_id: str) -> UnreadableSecret:
    return UnreadableSecret("webhook_subscriptions", f"subscription {subscription_id}", name, key_id)


def unreadable_secrets(
    conn: sa.Connection, keyring: Keyring, *, credentials_only: bool = False
) -> list[UnreadableSecret]:
    """Every stored secret the keyring cannot decrypt (a key missing, or another key under a reused id): what
    health, `connections list` and `keys status` report, so a connection is never shown fine while no sync can
    read its tokens. Decrypting is cheap (AES-GCM on a few hundred bytes per secret)."""
    found: list[UnreadableSecret] = []

    def readable(ciphertext: str, aad: str) -> bool:
        try:
            keyring.decrypt(ciphertext, associated_data=aad)
        except DecryptionError:
            return False
        return True

    credentials = schema.credentials
    for row in conn.execute(sa.select(credentials).order_by(credentials.c.connection_id, credentials.c.name)):
        if not readable(row.ciphertext, _credential_aad(row.connection_id, row.name)):
            found.append(unreadable_credential(row.connection_id, row.name, row.key_id))
    if credentials_only:
        return found
    subscriptions = schema.webhook_subscriptions
    for row in conn.execute(sa.select(subscriptions).order_by(subscriptions.c.id)):
        for name, key_id, ciphertext in (
            ("secret", row.key_id, row.secret_ciphertext),
            ("previous_secret", row.previous_key_id, row.previous_secret_ciphertext),
        ):
            if ciphertext is not None and not readable(ciphertext, subscription_secret_aad(row.id)):
                found.append(unreadable_subscription_secret(row.id, name, key_id))
    states = schema.oauth_states
    for row in conn.execute(sa.select(states).where(states.c.consumed_at.is_(None))):
        if not readable(row.code_verifier_ciphertext, _verifier_aad(row.state_hash)):
            found.append(unreadable_verifier(row.state_hash, row.key_id))
    return found


@dataclass
class KeyRotation:
    moved: int = 0
    unreadable: list[UnreadableSecret] = field(default_factory=list)


def audit_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and a canonical JSON of the entry's facts."""
    facts = {key: entry[key] for key in ("actor", "action", "tenant", "provider", "connection_id", "detail")}
    occurred_at: datetime = entry["occurred_at"]
    facts["occurred_at"] = occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((entry["prev_hash"] + canonical).encode()).hexdigest()


SECRET_KEY_ENDINGS = ("secret", "token", "password", "authorization", "api_key", "code_verifier")
REDACTED = "[redacted]"


def redact_secrets(detail: dict[str, Any]) -> dict[str, Any]:
    """A guard behind the callers' own care: a value under a key that names a secret never reaches the log.

    A key is secret-named when it ends so (`client_secret`, `refresh_token`); `token_expires_at` passes through.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: REDACTED if _names_secret(str(key)) else clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return clean(detail)  # type: ignore[no-any-return]


def _names_secret(key: str) -> bool:
    return key.lower().endswith(SECRET_KEY_ENDINGS)


def verify_audit_chain(entries: list[AuditEntry]) -> int | None:
    """The id of the first entry whose hash or link does not hold, or None when the chain is intact."""
    prev_hash = GENESIS_HASH
    for entry in entries:
        facts = entry.model_dump()
        if entry.prev_hash != prev_hash or audit_hash(facts) != entry.entry_hash:
            return entry.id
        prev_hash = entry.entry_hash
    return None
