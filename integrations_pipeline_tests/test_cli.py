"""The CLI: every refusal is one line and exit status 1, never a stack trace."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from integrations_pipeline.cli import main
from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.devstack import dev_environment, ensure_env_file
from integrations_pipeline.store import StateStore, TokenSet, schema
from integrations_pipeline.store import migrate as migrations


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_db_upgrade_creates_the_store_and_is_idempotent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    head = migrations.head_revision()
    assert head is not None and head > "0002"
    assert run("db", "upgrade") == (0, f"state store at revision {head}\n")
    assert run("db", "upgrade") == (0, f"state store at revision {head}\n")
    assert run("db", "current") == (0, f"applied: {head}; latest: {head}\n")


def test_keys_generate_rotate_and_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    code, entry = run("keys", "generate", "--key-id", "first")
    assert code == 0 and entry.startswith("first:")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", entry.strip())
    run("db", "upgrade")
    assert run("keys", "status") == (0, "first\tprimary\t0 secrets\n")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", generate_key_entry("second") + "," + entry.strip())
    code, output = run("keys", "rotate")
    assert code == 0 and output.startswith("re-encrypted 0 secrets under key second")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("keys", "status"), "INTEGRATIONS_ENCRYPTION_KEYS is missing"),
        (("connections", "list"), "INTEGRATIONS_ENCRYPTION_KEYS is missing"),
        (("gateway",), "INTEGRATIONS_API_KEY is missing"),
        (("sandbox", "myspace"), "no sandbox emulator for 'myspace'"),
        (("keys", "generate", "--key-id", "bad id"), "key id must be"),
    ],
)
def test_refusals_are_one_clear_line(command: tuple[str, ...], message: str) -> None:
    code, output = run(*command)
    assert code == 1
    assert message in output and output.startswith("Error: ")


def test_invalid_keys_are_named_without_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", "k:c2VjcmV0LWJ1dC1zaG9ydA==")
    code, output = run("keys", "status")
    assert code == 1 and "INTEGRATIONS_ENCRYPTION_KEYS is invalid" in output
    assert "c2VjcmV0" not in output


def test_dev_env_file_is_written_once_and_respects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_API_KEY", "from-the-environment-0123")
    written = ensure_env_file(dev_environment(8080, 8101), Path(".env"))
    assert "INTEGRATIONS_API_KEY" not in written and "INTEGRATIONS_ENCRYPTION_KEYS" in written
    first = Path(".env").read_text()
    assert ensure_env_file(dev_environment(8080, 8101), Path(".env")) == []
    assert Path(".env").read_text() == first  # keys are generated once and kept
    assert oct(Path(".env").stat().st_mode & 0o777) == "0o600"
    # Deleted and written again, the new key gets a new id: ciphertexts under the old id are never misread.
    Path(".env").unlink()
    ensure_env_file(dev_environment(8080, 8101), Path(".env"))
    key_ids = [
        next(line for line in text.splitlines() if line.startswith("INTEGRATIONS_ENCRYPTION_KEYS=")).split("=")[1][:11]
        for text in (first, Path(".env").read_text())
    ]
    assert key_ids[0] != key_ids[1] and all(key_id.startswith("k") for key_id in key_ids)


def test_mappings_set_show_preview_and_refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", generate_key_entry("k"))
    run("db", "upgrade")
    good, bad, broken = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "broken.json"
    good.write_text('{"contacts": {"crm_company": {"source": "company", "transform": "uppercase"}}}')
    bad.write_text('{"contacts": {"Bad-Name": {"source": "company"}}}')
    broken.write_text('{"contacts": {"x": {"transform": "reverse"}}}')
    code, output = run("mappings", "set", "acme", "hubspot", str(good))
    assert code == 0 and '"crm_company"' in output
    code, output = run("mappings", "show", "acme", "hubspot")
    assert code == 0 and '"uppercase"' in output
    code, output = run("mappings", "preview", "acme", "hubspot")
    assert code == 0 and "SAMPLE COMPANY" in output
    code, output = run("mappings", "set", "acme", "hubspot", str(bad))
    assert code == 1 and "contacts.Bad-Name: target columns are identifiers" in output
    code, output = run("mappings", "set", "acme", "hubspot", str(broken))
    assert code == 1 and "the mapping file is invalid" in output and "source" in output
    code, output = run("mappings", "show", "acme", "myspace")
    assert code == 1 and "unknown provider 'myspace'" in output


def test_keys_rotate_names_an_undecryptable_row_moves_the_rest_and_exits_1(
    store: StateStore, store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve secrets, one encrypted under another key that reuses the id: the other eleven move, that one is named
    (table, connection, field) with what to do, the rotation is audited, and no traceback."""
    old_id = store.keyring.primary_key_id
    for number in range(6):
        connect_hubspot(store, f"t{number}")
    impostor = Keyring.from_spec(generate_key_entry(old_id))  # `make dev` after deleting .env, before the fix
    with store.engine.begin() as conn:
        credentials = schema.credentials
        where = (credentials.c.connection_id == "hubspot-t3") & (credentials.c.name == "refresh_token")
        aad = "connection:hubspot-t3:refresh_token"
        conn.execute(credentials.update().where(where).values(ciphertext=impostor.encrypt("RT", associated_data=aad)))
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", store_url)
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", f"{generate_key_entry('second')},{key_spec}")

    result = CliRunner().invoke(main, ["keys", "rotate"])

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout.startswith("re-encrypted 11 secrets under key second\n")
    assert result.stdout.splitlines()[1:] == [
        "second\tprimary\t11 secrets",
        f"{old_id}\tsecondary\t1 secrets (1 CANNOT BE DECRYPTED: this key is not the one that encrypted them)",
        f"UNREADABLE: credentials: connection hubspot-t3, field refresh_token (under key {old_id!r}) cannot be "
        "decrypted with the keyring: put the key that encrypted it back in INTEGRATIONS_ENCRYPTION_KEYS (as a "
        "secondary) and rotate again, or reconnect it (POST /connections/<provider>/connect) to store fresh tokens",
    ]
    assert result.stderr == "Error: 1 secrets could not be decrypted and were left as they were\n"
    # The connection is not shown as active while its tokens cannot be read.
    listed = dict(line.split("\t")[:2] for line in run("connections", "list")[1].splitlines())
    assert listed["hubspot-t3"].startswith("UNREADABLE") and listed["hubspot-t2"] == "active"
    (audited,) = store.audit_entries(action="keys.rotated")
    assert audited.detail == {
        "rows": 11,
        "primary": "second",
        "unreadable": ["credentials:connection hubspot-t3:refresh_token"],
    }


def connect_hubspot(store: StateStore, tenant: str) -> str:
    with store.locked("setup") as conn:
        tokens = TokenSet(access_token=f"AT-{tenant}", refresh_token=f"RT-{tenant}", expires_at=None)
        return store.save_connection(
            conn, tenant=tenant, provider="hubspot", requested_scopes=[], granted_scopes=[], tokens=tokens
        ).id
