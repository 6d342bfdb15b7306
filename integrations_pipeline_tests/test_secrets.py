"""No secret is ever written anywhere: every flow runs (failures included) with canary secrets, then every byte
the product wrote — logs, the Dagster instance (event log, run storage, compute logs), the state database, the
warehouse and its read replica — is searched for them. A provider that echoes the Authorization header in its error
bodies is one of the flows; so is a connection whose tokens cannot be decrypted."""

import logging
from pathlib import Path

import dagster as dg
import httpx
import pytest

from integrations_pipeline.clients.errors import REDACTED
from integrations_pipeline.crypto import generate_key_entry
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.replica import read_replica_path
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import API_KEY, Stack


def sync(instance: dg.DagsterInstance, connection_id: str) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def("hubspot_sync")
    return job.execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)


def run_sync(instance: dg.DagsterInstance, connection_id: str) -> bool:
    return sync(instance, connection_id).success


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """What each failed step says (the description a person reads in the UI)."""
    return [
        str(event.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.STEP_FAILURE
    ]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # files to scan: the state store is a file here
def test_no_secret_reaches_logs_dagster_state_or_warehouse(stack: Stack, tmp_path: Path) -> None:
    log_file = tmp_path / "everything.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    try:
        with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
            connection_id = stack.connect("canary")
            instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
            assert run_sync(instance, connection_id)  # full sync
            stack.emulator._oauth.echo_authorization = True  # a provider that quotes the header in its errors
            echoed = sync(instance, connection_id)
            stack.emulator._oauth.echo_authorization = False
            assert not echoed.success and failures(echoed)
            assert all(f'"authorization": "{REDACTED}"' in failure for failure in failures(echoed)), failures(echoed)
            stack.emulator.expire_access_tokens()
            stack.emulator.update_contact("7", {"company": "Canary Co"})
            assert run_sync(instance, connection_id)  # 401, refresh, retry, incremental sync
            stack.emulator.revoke_refresh_tokens()
            stack.emulator.expire_access_tokens()
            assert not run_sync(instance, connection_id)  # invalid_grant: needs_reauth, a failed run
            stack.connect("canary")  # re-authorization
            with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
                assert api.get("/connections").status_code == 200
                assert api.post("/connections/hubspot/connect", json={"tenant": 5}).status_code == 422
                assert api.delete(f"/connections/{connection_id}").status_code == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
    stack.store.engine.dispose()  # checkpoint nothing away: the WAL file is scanned as it is

    canaries = set().union(*(emulator.issued_tokens() for emulator in stack.emulators.values()))
    canaries |= stack.client_secrets() | {API_KEY}
    key_spec = stack.settings.encryption_keys
    assert key_spec is not None
    canaries.add(key_spec.get_secret_value().split(":", 1)[1])
    assert len(canaries) > 8  # codes, several access tokens, refresh tokens, the app and gateway secrets
    state_files = [Path(str(stack.store.engine.url.database) + suffix) for suffix in ("", "-wal", "-shm")]
    warehouse = stack.settings.warehouse_path
    replica = read_replica_path(warehouse)  # what analysts query: a copy of the warehouse after every write
    written = [log_file, warehouse, replica, *state_files, *dagster_home.rglob("*")]
    scanned = [path for path in written if path.is_file()]
    assert len(scanned) > 5 and any(path.suffix == ".db" for path in scanned)
    assert {warehouse, replica} <= set(scanned)  # both written, so both searched
    hits = {
        str(path.relative_to(tmp_path)): sorted(canary[:6] + "…" for canary in canaries if canary.encode() in data)
        for path in scanned
        if any(canary.encode() in (data := path.read_bytes()) for canary in canaries)
    }
    assert hits == {}
    assert "GET /connections" in log_file.read_text()  # the scan covered a log that did record the flows


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store's side runs on both in test_refresh
def test_undecryptable_tokens_fail_the_sync_at_once_and_say_what_to_do(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = stack.connect()
    # The code server reads a keyring without the key the tokens were stored under (a regenerated .env, say).
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", generate_key_entry("other1"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
        result = sync(instance, connection_id)
    assert not result.success
    restarts = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert restarts == []  # not retryable: no attempt spent, no "Exceeded max_retries"
    assert all("cannot be decrypted" in failure for failure in failures(result)), failures(result)
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.NEEDS_REAUTH
    assert "INTEGRATIONS_ENCRYPTION_KEYS" in (connection.status_reason or "")
    audits = stack.store.audit_entries(connection_id=connection_id, action="connection.needs_reauth")
    assert [entry.detail["cause"] for entry in audits] == ["undecryptable_tokens"]
