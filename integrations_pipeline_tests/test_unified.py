"""Unified tables: every provider of a tenant together, shaped by the tenant's mapping, kept current by the provider
syncs themselves (no second run), rewritten for one connection when its mapping changes, rebuilt on request."""

import json

import dagster as dg
import duckdb
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import TENANTS, connection_partitions
from integrations_pipeline_tests.conftest import Stack


def unified_rows(stack: Stack) -> list[tuple]:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        return connection.execute(
            "SELECT tenant, provider, source_id, company, mapped FROM unified.contacts ORDER BY source_id"
        ).fetchall()


def set_mapping(stack: Stack, transform: str) -> None:
    with stack.api() as api:
        mapped = api.put(
            "/tenants/acme/mappings/hubspot",
            json={"contacts": {"crm_company": {"source": "company", "transform": transform}}},
        )
        assert mapped.status_code == 200


def unified_materializations(instance: dg.DagsterInstance) -> int:
    return len(instance.fetch_materializations(dg.AssetKey("contacts"), limit=100).records)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_unified_contacts_follow_syncs_and_the_tenant_mapping(stack: Stack) -> None:
    definitions = build_definitions()
    connection_id = stack.connect("acme")
    set_mapping(stack, "uppercase")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
        instance.add_dynamic_partitions(TENANTS.name, ["acme"])
        sync = definitions.resolve_job_def("hubspot_sync")
        first = sync.execute_in_process(partition_key=connection_id, instance=instance)
        assert first.success and len(instance.get_runs()) == 1  # the unified table followed in the same run
        rows = unified_rows(stack)
        assert len(rows) == 250 and {(tenant, provider) for tenant, provider, *_ in rows} == {("acme", "hubspot")}
        for _, _, _, company, mapped_json in rows:
            assert json.loads(mapped_json) == {"crm_company": company.upper() if company else None}
        # The provider step recorded the tenant's unified partition as materialized.
        assert instance.get_materialized_partitions(dg.AssetKey("contacts")) == {"acme"}

        set_mapping(stack, "lowercase")  # the next sync rewrites this connection's unified rows
        assert sync.execute_in_process(partition_key=connection_id, instance=instance).success
        for _, _, _, company, mapped_json in unified_rows(stack):
            assert json.loads(mapped_json) == {"crm_company": company.lower() if company else None}
        assert unified_materializations(instance) == 2  # the first sync's and the rewrite's
        # Nothing changed at the provider: the unified partition did not change, so nothing new is recorded on it.
        assert sync.execute_in_process(partition_key=connection_id, instance=instance).success
        assert unified_materializations(instance) == 2

        with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
            connection.execute("DELETE FROM unified.contacts")
        rebuild = definitions.resolve_job_def("unified_sync").execute_in_process(
            partition_key="acme", instance=instance
        )
        assert rebuild.success and len(unified_rows(stack)) == 250
        metadata = rebuild.asset_materializations_for_node("contacts")[0].metadata
        assert metadata["dagster/table_name"].value == "unified.contacts"
        assert metadata["dagster/partition_row_count"].value == 250
