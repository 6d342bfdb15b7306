"""Every registered provider end to end: the sandbox tenant connects through the gateway's OAuth flow, Dagster
materializes its users, contacts and a day of events, a second sync is incremental, and the unified tables
gather them."""

from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.clients.spec import SyncRequest
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import CONNECTION, DAY, TENANT, TENANTS, connection_partitions
from integrations_pipeline.records import RESPONSE_STATUSES
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline_tests.conftest import Stack

TENANT_ID = "sandbox"
ALL_TIME = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def first_event_day(provider: str, connection_id: str) -> str:
    """A day that holds events with attendees besides their organizer, found through the connector itself over a
    two-year window."""
    spec = next(spec for spec in ENTITIES if spec.provider == provider and spec.entity == "events")
    resource = IntegrationsResource()
    with resource.connector(provider, connection_id) as client:
        request = SyncRequest(connection_id, None, datetime.now(UTC), ALL_TIME)
        pages = list(spec.read(client, request))
    resource.store.engine.dispose()
    starts = [person["start_at"] for page in pages for person in page.attendees if not person["is_organizer"]]
    assert starts, f"the {provider} sandbox has no events with attendees"
    return min(starts).date().isoformat()


def run(
    definitions: dg.Definitions, job: str, key: str | dg.MultiPartitionKey, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    result = definitions.resolve_job_def(job).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )
    failures = [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]  # type: ignore[union-attr]
    assert result.success, failures
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())
    return result


def assert_attendees(stack: Stack, provider: str) -> None:
    """The day's events have their attendees, each once, with a normalized answer, in both tables."""
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        rows = connection.execute(
            f"SELECT a.response_status, a.is_organizer, u.tenant, u.provider FROM {provider}.event_attendees a "
            f"JOIN {provider}.events e ON e.connection_id = a.connection_id AND e.source_id = a.event_source_id "
            "JOIN unified.event_attendees u ON u.connection_id = a.connection_id "
            "AND u.event_source_id = a.event_source_id AND u.email = a.email"
        ).fetchall()
    assert rows and count(stack, f"{provider}.event_attendees") == len(rows)
    assert {status for status, *_ in rows} <= set(RESPONSE_STATUSES)
    assert any(organizer for _, organizer, *_ in rows) and not all(organizer for _, organizer, *_ in rows)
    assert {(tenant, name) for *_, tenant, name in rows} == {(TENANT_ID, provider)}


def count(stack: Stack, table: str) -> int:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("provider", sorted(EMULATORS))
def test_provider_end_to_end(stack: Stack, provider: str) -> None:
    definitions = build_definitions()
    connection_id = stack.connect(TENANT_ID, provider)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(connection_partitions(provider).name, [connection_id])
        instance.add_dynamic_partitions(TENANTS.name, [TENANT_ID])

        first = run(definitions, f"{provider}_sync", connection_id, instance)
        assert count(stack, f"{provider}.users") > 0 and count(stack, f"{provider}.contacts") > 0
        second = run(definitions, f"{provider}_sync", connection_id, instance)
        contacts_first = first.asset_materializations_for_node(f"{provider}_contacts")[0].metadata
        contacts_second = second.asset_materializations_for_node(f"{provider}_contacts")[0].metadata
        assert contacts_first["sync_mode"].value == "full"
        assert contacts_second["sync_mode"].value == "incremental"
        assert contacts_second["rows_fetched"].value < contacts_first["rows_fetched"].value

        day = first_event_day(provider, connection_id)
        day_key = dg.MultiPartitionKey({CONNECTION: connection_id, DAY: day})
        first_events = run(definitions, f"{provider}_events_sync", day_key, instance)
        assert count(stack, f"{provider}.events") > 0
        assert_attendees(stack, provider)
        assert first_events.asset_materializations_for_node(f"{provider}_events")[0].metadata[
            "attendee_rows_written"
        ].value == count(stack, f"{provider}.event_attendees")
        # Incremental (Microsoft: its delta link): whatever events come back, their unchanged attendees stay as
        # they are, none flagged deleted.
        again = run(definitions, f"{provider}_events_sync", day_key, instance)
        again_metadata = again.asset_materializations_for_node(f"{provider}_events")[0].metadata
        assert again_metadata["sync_mode"].value == "incremental"
        assert again_metadata["attendee_rows_written"].value == 0

        run(definitions, "unified_sync", TENANT_ID, instance)
        run(definitions, "unified_events_sync", dg.MultiPartitionKey({TENANT: TENANT_ID, DAY: day}), instance)
    for entity in ("users", "contacts", "events"):
        assert count(stack, f"unified.{entity}") == count(stack, f"{provider}.{entity}")
