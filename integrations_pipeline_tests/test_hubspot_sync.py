"""HubSpot contacts end to end: OAuth connect through the gateway, Dagster runs the real job, DuckDB holds
exactly the emulator's contacts; changes at the emulator arrive incrementally."""

import gc
from collections.abc import Iterator

import dagster as dg
import duckdb
import pandas as pd
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline_tests.conftest import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def sync(instance: dg.DagsterInstance, connection_id: str) -> dg.ExecuteInProcessResult:
    result = (
        build_definitions()
        .resolve_job_def("hubspot_sync")
        .execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)
    )
    assert result.success, [event.event_specific_data for event in result.all_events if event.is_failure]
    return result


def warehouse(stack: Stack, connection_id: str) -> pd.DataFrame:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        return connection.execute(
            "SELECT * FROM hubspot.contacts WHERE connection_id = ? ORDER BY source_id", [connection_id]
        ).df()


def expected(stack: Stack) -> dict[str, tuple[object, ...]]:
    """The emulator's contacts as the table should hold them: id -> (email, first, last, company, deleted)."""
    return {
        record["id"]: (
            record["properties"].get("email"),
            record["properties"].get("firstname"),
            record["properties"].get("lastname"),
            record["properties"].get("company"),
            record["archived"],
        )
        for record in stack.emulator.contact_records(include_archived=True)
    }


def actual(frame: pd.DataFrame) -> dict[str, tuple[object, ...]]:
    return {
        row.source_id: (row.email, row.first_name, row.last_name, row.company, bool(row.is_deleted))
        for row in frame.itertuples()
    }


def contacts_requests(stack: Stack, since: int) -> list[str]:
    log = stack.emulator.request_log[since:]
    return [f"{r.method} {r.path}?{r.query}" for r in log if r.path.startswith("/crm/v3/objects/contacts")]


def test_connect_sync_change_and_sync_again(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = stack.connect("acme")
    instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])

    first = sync(instance, connection_id)
    table = warehouse(stack, connection_id)
    assert actual(table) == expected(stack)
    assert len(table) == 250 and list(table.columns)[:2] == ["connection_id", "source_id"]
    checks = {(e.check_name, e.partition, e.passed) for e in first.get_asset_check_evaluations()}
    assert checks == {("partition_integrity", connection_id, True)}
    metadata = first.asset_materializations_for_node("hubspot_contacts")[0].metadata
    assert metadata["sync_mode"].value == "full"
    assert metadata["dagster/partition_row_count"].value == metadata["rows_written"].value == 250
    assert metadata["dagster/table_name"].value == "hubspot.contacts"
    columns = {c.name: c for c in metadata["dagster/column_schema"].value.columns}  # type: ignore[attr-defined]
    assert columns["modified_at"].type == "TIMESTAMP WITH TIME ZONE" and columns["source_id"].description
    # The field catalog's discovery, the live count (a search), 3 pages of live contacts, 1 (empty) archived page.
    assert metadata["api_calls"].value == 6
    assert "x-hubspot-ratelimit-remaining" in metadata["rate_limit_remaining"].value
    assert stack.store.get_cursor(connection_id, "contacts") == metadata["cursor"].value
    assert "modified_since" in metadata["cursor"].value
    assert gc.get_freeze_count() == 0  # the heap, frozen while pages were read, is back under the collector

    changed_ids = ["3", "17", "120"]
    for contact_id in changed_ids:
        stack.emulator.update_contact(contact_id, {"company": "Renamed Ltd", "firstname": "Changed"})
    created = [stack.emulator.create_contact({"email": f"new{n}@example.com", "firstname": "New"}) for n in range(2)]
    stack.emulator.archive_contact("42")
    log_position = len(stack.emulator.request_log)

    second = sync(instance, connection_id)
    table = warehouse(stack, connection_id)
    assert actual(table) == expected(stack)
    assert len(table) == 252 and table.loc[table.source_id == "42", "is_deleted"].item()
    requests = contacts_requests(stack, log_position)
    # Only changes travel: the live count, one search page (6 changed contacts fit in it) and, since the count
    # shows a deletion, the one page of archived contacts.
    assert len(requests) == 3, requests
    assert all(request.startswith("POST /crm/v3/objects/contacts/search") for request in requests[:2])
    assert "archived=true" in requests[2]
    metadata = second.asset_materializations_for_node("hubspot_contacts")[0].metadata
    assert metadata["sync_mode"].value == "incremental"
    assert metadata["rows_fetched"].value == len(changed_ids) + len(created) + 1
    # Only the changed rows are written, and the same rows on to the unified table.
    assert [metadata[f"rows_{kind}"].value for kind in ("inserted", "updated", "deleted")] == [2, 3, 1]
    assert metadata["rows_written"].value == metadata["unified_rows_written"].value == 6

    third = sync(instance, connection_id)
    assert third.asset_materializations_for_node("hubspot_contacts")[0].metadata["rows_written"].value == 0
    again = warehouse(stack, connection_id)
    pd.testing.assert_frame_equal(again, table)  # an unchanged source leaves the table exactly as it was


def test_a_failed_write_keeps_the_partition_and_the_cursor(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = stack.connect("acme")
    instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
    sync(instance, connection_id)
    before, cursor = warehouse(stack, connection_id), stack.store.get_cursor(connection_id, "contacts")
    # The warehouse refuses the next write part-way: the partition's DELETE runs, then its INSERT fails.
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        connection.execute("ALTER TABLE hubspot.contacts ALTER COLUMN phone SET NOT NULL")
    stack.emulator.create_contact({"email": "no-phone@example.com", "firstname": "Nophone"})
    job = build_definitions().resolve_job_def("hubspot_sync")
    result = job.execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)
    assert not result.success
    pd.testing.assert_frame_equal(warehouse(stack, connection_id), before)  # rolled back, not emptied
    assert stack.store.get_cursor(connection_id, "contacts") == cursor


def test_a_connection_needing_reauth_fails_with_advice_and_no_secret(
    stack: Stack, instance: dg.DagsterInstance
) -> None:
    connection_id = stack.connect("acme")
    instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
    stack.emulator.revoke_refresh_tokens()
    stack.emulator.expire_access_tokens()
    result = (
        build_definitions()
        .resolve_job_def("hubspot_sync")
        .execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    description = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "reconnect" in description and connection_id in description
    assert stack.settings.hubspot is not None
    assert stack.settings.hubspot.client_secret.get_secret_value() not in description


def test_a_batched_run_isolates_a_connection_that_needs_reauth(stack: Stack, instance: dg.DagsterInstance) -> None:
    """A run over a range of connections: the one whose refresh token the provider refuses (invalid_grant) fails
    with its own reason; every other connection is synced and materialized."""
    connection_ids = [stack.connect(tenant) for tenant in ("acme", "beta", "gamma")]
    instance.add_dynamic_partitions(connection_partitions("hubspot").name, connection_ids)
    refused = connection_ids[1]
    tokens = stack.store.load_tokens(refused)
    assert tokens is not None and stack.emulator._oauth.revoke_refresh_token(tokens.refresh_token.get_secret_value())
    stack.emulator.expire_access_tokens()  # every connection refreshes on its first call; one is refused
    result = (
        build_definitions()
        .resolve_job_def("hubspot_sync")
        .execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("hubspot_contacts")],
            tags={
                "dagster/asset_partition_range_start": connection_ids[0],
                "dagster/asset_partition_range_end": connection_ids[-1],
            },
            raise_on_error=False,
        )
    )
    assert not result.success
    synced = {connection_ids[0], connection_ids[2]}
    assert instance.get_materialized_partitions(dg.AssetKey("hubspot_contacts")) == synced
    # Each synced partition's check is decided on that partition (passed), the refused one's is not evaluated; the
    # unified partitions of tenants Dagster does not know yet get no materialization.
    checks = {(e.partition, e.passed) for e in result.get_asset_check_evaluations()}
    assert checks == {(connection_id, True) for connection_id in synced}
    assert not instance.get_materialized_partitions(dg.AssetKey("contacts"))
    for connection_id in synced:
        assert actual(warehouse(stack, connection_id)) == expected(stack)
    assert warehouse(stack, refused).empty
    observations = [e.asset_observation_data.asset_observation for e in result.all_events if e.is_asset_observation]  # type: ignore[union-attr]
    assert [(o.partition, o.metadata["error_type"].value) for o in observations] == [(refused, "NeedsReauth")]
    failure = next(event for event in result.all_events if event.is_step_failure)
    description = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "1 of the run's partitions failed" in description and f"- {refused}: NeedsReauth" in description
    assert "reconnect" in description and not any(c in description for c in synced)


def raw_property(stack: Stack, connection_id: str, contact_id: str, name: str) -> str | None:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        row = connection.execute(
            "SELECT json_extract_string(raw, '$.properties.' || ?) FROM hubspot.contacts "
            "WHERE connection_id = ? AND source_id = ?",
            [name, connection_id, contact_id],
        ).fetchone()
    assert row is not None
    return row[0]


def test_a_property_added_at_hubspot_reaches_the_raw_column_of_the_next_incremental_sync(
    stack: Stack, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's catalog is requested by name and discovered by the sync itself when older than
    INTEGRATIONS_CATALOG_MAX_AGE_S: a custom property created after the first sync is in the raw record of the next
    (incremental) sync and in the fields endpoint, without a restart or a code change."""
    connection_id = stack.connect("acme")
    instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
    sync(instance, connection_id)  # nobody listed the catalog: the sync discovered it
    assert raw_property(stack, connection_id, "3", "lead_score") is not None  # a custom property of the catalog
    assert raw_property(stack, connection_id, "3", "email") == expected(stack)["3"][0]

    stack.emulator.properties.add("contacts", "churn_risk", type="number", field_type="number", label="Churn risk")
    stack.emulator.update_contact("3", {"churn_risk": "0.8"})
    with stack.api() as api:  # an active connection's fields are asked for now
        listed = api.get(f"/connections/{connection_id}/fields", params={"entity": "contacts"}).json()
    assert listed["refreshed"] and "churn_risk" in {field["name"] for field in listed["fields"]}
    stack.emulator.properties.add("contacts", "nps", type="number", field_type="number", label="NPS")
    stack.emulator.update_contact("3", {"nps": "9"})
    monkeypatch.setenv("INTEGRATIONS_CATALOG_MAX_AGE_S", "0")  # the catalog the endpoint just stored is stale
    second = sync(instance, connection_id)
    assert raw_property(stack, connection_id, "3", "nps") == "9"
    metadata = second.asset_materializations_for_node("hubspot_contacts")[0].metadata
    assert metadata["sync_mode"].value == "incremental"
    assert raw_property(stack, connection_id, "3", "churn_risk") == "0.8"
    # The UI's column schema lists the catalog's fields as columns of raw, the new one included.
    columns = {c.name: c for c in metadata["dagster/column_schema"].value.columns}  # type: ignore[attr-defined]
    churn = columns["raw.properties.churn_risk"]
    assert churn.type == "number (number)" and "Churn risk: custom field `churn_risk`" in (churn.description or "")
    assert "raw.properties.lead_score" in columns and "email" in columns
