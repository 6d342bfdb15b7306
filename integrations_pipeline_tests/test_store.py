"""The state store on a real SQLite file and a real PostgreSQL server (see conftest.BACKENDS)."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from integrations_pipeline.crypto import DecryptionError, Keyring, generate_key_entry
from integrations_pipeline.store import ConnectionStatus, InvalidState, StateStore, TokenSet, schema
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.repository import verify_audit_chain


def connect(store: StateStore, tenant: str = "acme", access: str = "AT-1", refresh: str = "RT-1") -> str:
    with store.locked("setup") as conn:
        connection = store.save_connection(
            conn,
            tenant=tenant,
            provider="hubspot",
            requested_scopes=["a", "b"],
            granted_scopes=["a"],
            tokens=TokenSet(access_token=access, refresh_token=refresh, expires_at=datetime.now(UTC)),
        )
    return connection.id


def test_migrations_reach_head_and_match_the_schema(store: StateStore) -> None:
    assert migrations.current_revision(store.engine) == migrations.head_revision()
    with store.engine.begin() as conn:  # the newest migration round-trips
        command.downgrade(migrations._config(conn), "-1")
    migrations.upgrade(store.engine)
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert differences == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    from integrations_pipeline.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_connection_round_trip_and_missing_scopes(store: StateStore) -> None:
    connection_id = connect(store)
    connection = store.get_connection(connection_id)
    assert connection is not None
    assert (connection.tenant, connection.provider, connection.status) == ("acme", "hubspot", ConnectionStatus.ACTIVE)
    assert connection.missing_scopes == ["b"]
    assert store.get_connection("hubspot-nobody") is None
    assert [c.id for c in store.list_connections(provider="hubspot")] == [connection_id]
    assert store.list_connections(provider="zoho") == []


def test_reconnecting_updates_the_same_connection(store: StateStore) -> None:
    first = connect(store, access="AT-1")
    second = connect(store, access="AT-2")
    assert first == second
    tokens = store.load_tokens(first)
    assert tokens is not None and tokens.access_token.get_secret_value() == "AT-2"
    assert len(store.list_connections()) == 1


def test_tokens_are_encrypted_at_rest_and_bound_to_their_row(store: StateStore) -> None:
    first, second = connect(store, "acme", "AT-acme", "RT-acme"), connect(store, "beta", "AT-beta", "RT-beta")
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(schema.credentials)).all()
    assert len(stored) == 4
    assert not any("AT-" in row.ciphertext or "RT-" in row.ciphertext for row in stored)
    # Copy acme's refresh token ciphertext onto beta's row: it must not decrypt there.
    acme_refresh = next(r.ciphertext for r in stored if r.connection_id == first and r.name == "refresh_token")
    with store.engine.begin() as conn:
        conn.execute(
            schema.credentials.update()
            .where((schema.credentials.c.connection_id == second) & (schema.credentials.c.name == "refresh_token"))
            .values(ciphertext=acme_refresh)
        )
    with pytest.raises(DecryptionError):
        store.load_tokens(second)


def test_a_store_with_the_wrong_key_fails_closed(store: StateStore) -> None:
    connection_id = connect(store)
    stranger = StateStore(store.engine, Keyring.from_spec(generate_key_entry("test1")))
    with pytest.raises(DecryptionError):
        stranger.load_tokens(connection_id)


def test_oauth_state_is_single_use_bound_to_provider_and_expires(store: StateStore) -> None:
    state, expires_at = store.create_oauth_state(
        tenant="acme", provider="hubspot", redirect_uri="http://cb", return_path=None, scopes=["a"], code_verifier="v"
    )
    assert len(state) >= 32 and expires_at - datetime.now(UTC) <= timedelta(minutes=10)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.oauth_states.c.state_hash)).scalar() != state  # only a hash is kept
    with pytest.raises(InvalidState, match="another provider"):
        store.consume_oauth_state(state, "zoho")
    pending = store.consume_oauth_state(state, "hubspot")
    assert (pending.tenant, pending.code_verifier.get_secret_value()) == ("acme", "v")
    with pytest.raises(InvalidState, match="already used"):
        store.consume_oauth_state(state, "hubspot")
    with pytest.raises(InvalidState, match="unknown"):
        store.consume_oauth_state("forged", "hubspot")
    old, _ = store.create_oauth_state(
        tenant="acme", provider="hubspot", redirect_uri="http://cb", return_path=None, scopes=[], code_verifier="v"
    )
    with store.engine.begin() as conn:
        conn.execute(schema.oauth_states.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(InvalidState, match="expired"):
        store.consume_oauth_state(old, "hubspot")


def test_cursors_are_kept_per_connection_entity_and_partition(store: StateStore) -> None:
    connection_id = connect(store)
    assert store.get_cursor(connection_id, "contacts") is None
    store.set_cursor(connection_id, "contacts", "live-1")
    store.set_cursor(connection_id, "contacts", "live-2")
    store.set_cursor(connection_id, "contacts", "backfill", partition_key="2026-01-01")
    assert store.get_cursor(connection_id, "contacts") == "live-2"
    assert store.get_cursor(connection_id, "contacts", "2026-01-01") == "backfill"
    store.clear_cursor(connection_id, "contacts")
    assert store.get_cursor(connection_id, "contacts") is None


def test_disconnect_forgets_tokens_and_keeps_history(store: StateStore) -> None:
    connection_id = connect(store)
    with store.locked(connection_id) as conn:
        store.disconnect(conn, connection_id)
        store.audit(conn, "connection.disconnected", actor="test", connection_id=connection_id)
    connection = store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.DISCONNECTED
    assert store.load_tokens(connection_id) is None
    assert [entry.action for entry in store.audit_entries(connection_id=connection_id)] == ["connection.disconnected"]


def test_audit_chain_detects_edits_and_deletions(store: StateStore) -> None:
    with store.engine.begin() as conn:
        for number in range(3):
            store.audit(conn, "test.event", actor="test", detail={"n": number})
    entries = store.audit_entries()
    assert verify_audit_chain(entries) is None
    with store.engine.begin() as conn:
        conn.execute(schema.audit_log.update().where(schema.audit_log.c.id == entries[1].id).values(detail={"n": 9}))
    assert verify_audit_chain(store.audit_entries()) == entries[1].id
    with store.engine.begin() as conn:
        conn.execute(schema.audit_log.update().where(schema.audit_log.c.id == entries[1].id).values(detail={"n": 1}))
        conn.execute(schema.audit_log.delete().where(schema.audit_log.c.id == entries[0].id))
    assert verify_audit_chain(store.audit_entries()) == entries[1].id


def test_key_rotation_reencrypts_every_secret_and_frees_the_old_key(store_url: str) -> None:
    from integrations_pipeline.store import create_store_engine

    old_entry, new_entry = generate_key_entry("old"), generate_key_entry("new")
    engine = create_store_engine(store_url)
    migrations.upgrade(engine)
    before = StateStore(engine, Keyring.from_spec(old_entry))
    ids = [connect(before, tenant=f"t{n}", access=f"AT-{n}", refresh=f"RT-{n}") for n in range(5)]
    before.create_oauth_state(
        tenant="t", provider="hubspot", redirect_uri="http://cb", return_path=None, scopes=[], code_verifier="v"
    )
    assert before.key_usage() == {"old": 11}
    after = StateStore(engine, Keyring.from_spec(f"{new_entry},{old_entry}"))
    assert after.rotate_keys(batch_size=3).moved == 11
    assert after.key_usage() == {"new": 11}
    assert after.rotate_keys().moved == 0
    only_new = StateStore(engine, Keyring.from_spec(new_entry))
    for number, connection_id in enumerate(ids):
        tokens = only_new.load_tokens(connection_id)
        assert tokens is not None and tokens.refresh_token is not None
        assert tokens.refresh_token.get_secret_value() == f"RT-{number}"
    engine.dispose()


def test_a_webhook_account_resolves_to_its_live_connection_among_many(store: StateStore) -> None:
    tokens = TokenSet(access_token="AT", refresh_token="RT", expires_at=datetime.now(UTC))
    with store.locked("setup") as conn:
        for n in range(200):
            for provider in ("hubspot", "zoho"):  # the same account ids at another provider never match
                store.save_connection(
                    conn,
                    tenant=f"t{n:03d}",
                    provider=provider,
                    requested_scopes=["a"],
                    granted_scopes=["a"],
                    tokens=tokens,
                    external_account_id=str(1000 + n),
                )
        store.set_status(conn, "hubspot-t007", ConnectionStatus.NEEDS_REAUTH, "test")
        store.disconnect(conn, "hubspot-t008")
    live = (ConnectionStatus.ACTIVE, ConnectionStatus.NEEDS_REAUTH)
    found = store.connections_by_account("hubspot", ["1123", "1007", "1008", "999"], live)
    assert found == {"1123": "hubspot-t123", "1007": "hubspot-t007"}
    assert store.connections_by_account("zoho", ["1008"], live) == {"1008": "zoho-t008"}
    assert store.connections_by_account("hubspot", [], live) == {}
