"""The audit log: `audit verify` finds an edited entry and a deleted one, the newest included; `audit list` filters."""

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from integrations_pipeline.cli import main
from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.store import StateStore, create_store_engine, schema
from integrations_pipeline.store import audit as audit_log
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.audit import SEAL_HINT
from integrations_pipeline.store.repository import GENESIS_HASH, audit_hash, utcnow

LOG = schema.audit_log


@pytest.fixture
def cli(store: StateStore, store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple]:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", store_url)
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", key_spec)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args))
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    return run


def append(store: StateStore, count: int, **facts: str) -> list[int]:
    with store.locked("audit_log") as conn:
        for number in range(count):
            store.audit(conn, "test.event", actor="test", detail={"n": number}, **facts)
    return [entry.id for entry in store.audit_entries()]


def tamper(store: StateStore, statement: sa.Executable) -> None:
    with store.engine.begin() as conn:
        conn.execute(statement)


def test_an_intact_log_verifies_with_its_count_and_head(store: StateStore, cli: Callable[..., tuple]) -> None:
    assert cli("audit", "verify") == (0, f"audit log intact: 0 entries, head {'0' * 64}\n")
    append(store, 3)
    code, output = cli("audit", "verify")
    head_hash = store.audit_entries()[-1].entry_hash
    assert (code, output) == (0, f"audit log intact: 3 entries, head {head_hash}\n")
    # A recorded head stays checkable after later appends: it is an entry's hash forever.
    append(store, 1)
    assert cli("audit", "verify", "--expect", head_hash)[0] == 0


def test_an_edited_entry_is_named(store: StateStore, cli: Callable[..., tuple]) -> None:
    ids = append(store, 3)
    tamper(store, LOG.update().where(LOG.c.id == ids[1]).values(action="test.innocent"))
    code, output = cli("audit", "verify")
    assert code == 1
    assert output.startswith(f"audit log BROKEN at entry {ids[1]}: its content no longer matches its hash")
    assert output.count("\n") == 1


def test_an_edited_entry_with_a_recomputed_hash_fails_its_mac(store: StateStore) -> None:
    ids = append(store, 3)
    entry = store.audit_entries()[1]
    forged = {**entry.model_dump(), "detail": {"n": 99}}
    tamper(store, LOG.update().where(LOG.c.id == ids[1]).values(detail={"n": 99}, entry_hash=audit_hash(forged)))
    verdict = audit_log.verify(store)
    assert verdict.broken_id == ids[1] and "its MAC does not hold under key" in (verdict.problem or "")


@pytest.mark.parametrize(("position", "broken_position"), [(0, 1), (1, 2)])
def test_a_deleted_entry_breaks_the_link_of_the_one_after(
    store: StateStore, cli: Callable[..., tuple], position: int, broken_position: int
) -> None:
    ids = append(store, 3)
    tamper(store, LOG.delete().where(LOG.c.id == ids[position]))
    code, output = cli("audit", "verify")
    assert code == 1
    assert output.startswith(f"audit log BROKEN at entry {ids[broken_position]}: its link does not match")


def test_a_deleted_newest_entry_is_caught_by_the_head(store: StateStore, cli: Callable[..., tuple]) -> None:
    ids = append(store, 3)
    tamper(store, LOG.delete().where(LOG.c.id == ids[-1]))
    code, output = cli("audit", "verify")
    assert code == 1
    assert output == (
        f"audit log BROKEN at entry {ids[-1]}: the newest entries were deleted: the head records entry {ids[-1]} "
        f"as the last of 3, the log ends at entry {ids[1]} with 2\n"
    )
    tamper(store, LOG.delete())
    assert "the log ends at nothing with 0" in cli("audit", "verify")[1]


def test_a_deleted_head_or_a_rewritten_log_is_caught(store: StateStore, cli: Callable[..., tuple]) -> None:
    append(store, 2)
    recorded = audit_log.verify(store).head_hash
    tamper(store, schema.audit_head.delete())
    assert cli("audit", "verify") == (
        1,
        "audit log BROKEN at the log: the head record is missing while the log holds 2 entries\n",
    )
    # Someone who rewrites the whole log and its head consistently is caught only by a hash kept elsewhere.
    tamper(store, LOG.delete())
    append(store, 2)
    assert audit_log.verify(store).intact
    code, output = cli("audit", "verify", "--expect", recorded)
    assert code == 1 and f"no entry carries the recorded hash {recorded}" in output


def test_list_filters_and_never_shows_a_secret(store: StateStore, cli: Callable[..., tuple]) -> None:
    append(store, 2, tenant="acme", provider="hubspot", connection_id="hubspot-acme")
    append(store, 1, tenant="beta", provider="zoho", connection_id="zoho-beta")
    with store.locked("audit_log") as conn:
        detail = {"client_secret": "canary-7f3a", "nested": [{"refresh_token": "canary-7f3a"}], "token_expires_at": 1}
        store.audit(conn, "test.careless", actor="test", tenant="acme", detail=detail)
    code, output = cli("audit", "list", "--tenant", "acme")
    lines = output.splitlines()
    assert code == 0 and len(lines) == 3
    assert [line.split("\t")[3:5] for line in lines] == [
        ["test.event", "hubspot-acme"],
        ["test.event", "hubspot-acme"],
        ["test.careless", "acme"],
    ]
    assert "canary-7f3a" not in output and '"token_expires_at": 1' in output
    assert len(cli("audit", "list", "--provider", "zoho")[1].splitlines()) == 1
    assert len(cli("audit", "list", "--action", "test.event", "--limit", "1")[1].splitlines()) == 1
    assert cli("audit", "list", "--since", "2999-01-01") == (0, "")
    assert audit_log.verify(store).intact  # the redaction happens before hashing


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_migration_anchors_an_existing_chain(store_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrations.upgrade(engine, "0005")
    old = StateStore(engine, Keyring.from_spec(generate_key_entry("k")))
    with old.engine.begin() as conn:  # entries as the code before the head record wrote them
        prev = GENESIS_HASH
        for number in range(2):
            entry = {
                "occurred_at": utcnow(),
                "actor": "old",
                "action": "test.event",
                "tenant": None,
                "provider": None,
                "connection_id": None,
                "detail": {"n": number},
                "prev_hash": prev,
            }
            prev = audit_hash(entry)
            conn.execute(LOG.insert().values(**entry, entry_hash=prev))
    migrations.upgrade(engine)
    # Unkeyed entries cannot be told from forgeries until a keyed entry vouches for them.
    assert audit_log.verify(old).problem == f"no entry carries a MAC, so none can be told from a forgery; {SEAL_HINT}"
    assert audit_log.seal(old, actor="test") is True
    assert audit_log.seal(old, actor="test") is False  # sealed once
    (*_, sealed) = old.audit_entries()
    assert sealed.action == "audit.sealed" and sealed.detail == {"unkeyed_entries": 2} and sealed.prev_hash == prev
    assert (
        audit_log.verify(old, expected_hash=prev).summary() == f"audit log intact: 3 entries, head {sealed.entry_hash}"
    )
    append(old, 1)
    assert audit_log.verify(old).entries == 4 and audit_log.verify(old).intact
    # An unkeyed entry after keyed ones is a forgery, even chained correctly with the head moved.
    forge(old, mac_key_id=None, mac=None)
    assert "carries no MAC although entries before it do" in (audit_log.verify(old).problem or "")
    engine.dispose()


def forge(store: StateStore, **columns: str | None) -> str:
    """What an attacker with write access to the tables but not the key does: append an entry chained to the
    newest one, with a correct hash, and move the head onto it. Returns the forged entry's hash."""
    newest = store.audit_entries()[-1]
    entry = {
        **newest.model_dump(exclude={"id", "entry_hash"}),
        "action": "key.exported",
        "prev_hash": newest.entry_hash,
    }
    entry_hash = audit_hash(entry)
    with store.engine.begin() as conn:
        inserted = conn.execute(LOG.insert().values(**{**entry, "entry_hash": entry_hash, **columns}))
        forged_id = inserted.inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            schema.audit_head.update().values(
                last_id=forged_id, entry_hash=entry_hash, entries=schema.audit_head.c.entries + 1
            )
        )
    return entry_hash


@pytest.mark.parametrize(
    ("columns", "problem"),
    [
        ({"mac_key_id": None, "mac": None}, "it carries no MAC although entries before it do"),
        ({"mac": "0" * 64}, "its MAC does not hold under key"),
        ({"mac_key_id": "retired", "mac": "0" * 64}, "its MAC is under key 'retired', which the keyring lacks"),
    ],
)
def test_a_forged_entry_with_the_head_moved_fails_with_and_without_expect(
    store: StateStore, cli: Callable[..., tuple], columns: dict[str, str | None], problem: str
) -> None:
    append(store, 2)
    recorded = audit_log.verify(store).head_hash
    forged_hash = forge(store, **columns)
    for expect in ((), ("--expect", recorded), ("--expect", forged_hash)):
        code, output = cli("audit", "verify", *expect)
        assert code == 1 and problem in output, output


def test_a_wiped_log_fails_expect_before_anything_else(store: StateStore, cli: Callable[..., tuple]) -> None:
    append(store, 2)
    recorded = audit_log.verify(store).head_hash
    tamper(store, LOG.delete())
    tamper(store, schema.audit_head.delete())
    assert cli("audit", "verify")[0] == 0  # an empty log with no head is consistent: only a kept hash tells
    assert cli("audit", "verify", "--expect", recorded) == (
        1,
        f"audit log BROKEN at the log: no entry carries the recorded hash {recorded}: the log was rewritten since "
        "it was recorded\n",
    )


def test_entries_stay_verifiable_under_their_own_key_after_rotation(
    store: StateStore, cli: Callable[..., tuple], key_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(store, 2)
    old_key = store.keyring.primary_key_id
    new_entry = generate_key_entry("k2")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", f"{new_entry},{key_spec}")
    assert cli("keys", "rotate")[0] == 0
    entries = store.audit_entries()
    assert [entry.mac_key_id for entry in entries] == [old_key, old_key, "k2"]
    assert entries[-1].action == "keys.rotated" and cli("audit", "verify")[0] == 0
    # Once the old key is retired, the newest entry (under k2) still vouches for the older ones.
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", new_entry)
    assert cli("audit", "verify")[0] == 0
    # A MAC under the current key, on an entry whose content was not written with it, does not hold.
    rotated = StateStore(store.engine, Keyring.from_spec(new_entry))
    tamper(store, LOG.update().where(LOG.c.id == entries[0].id).values(mac_key_id="k2"))
    assert "its MAC does not hold under key 'k2'" in (audit_log.verify(rotated).problem or "")


def test_refusals_are_one_line(cli: Callable[..., tuple]) -> None:
    code, output = cli("audit", "list", "--since", "yesterday")
    assert code == 2 and "Invalid value for '--since'" in output
