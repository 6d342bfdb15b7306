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
    checks = {evaluation.check_name: evaluation.passed for evaluation in first.get_asset_check_evaluations()}
    assert checks == {"primary_key_unique": True, "required_fields_present": True}
    metadata = first.asset_materializations_for_node("hubspot_contacts")[0].metadata
    assert metadata["sync_mode"].value == "full"
    assert metadata["dagster/partition_row_count"].value == 250
    assert metadata["api_calls"].value == 4  # 3 pages of live contacts + 1 (empty) page of archived ones
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
    # Only changes travel: one search page (6 changed contacts fit in it) and one page of archived contacts.
    assert len(requests) == 2, requests
    assert requests[0].startswith("POST /crm/v3/objects/contacts/search")
    assert "archived=true" in requests[1]
    metadata = second.asset_materializations_for_node("hubspot_contacts")[0].metadata
    assert metadata["sync_mode"].value == "incremental"
    assert metadata["rows_fetched"].value == len(changed_ids) + len(created) + 1
    assert metadata["rows_deleted"].value == 1

    sync(instance, connection_id)
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
