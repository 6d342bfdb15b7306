"""Unified tables: every provider of a tenant together, shaped by the tenant's mapping, refreshed after syncs."""

import json

import dagster as dg
import duckdb
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import TENANTS, connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline_tests.conftest import Stack


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_unified_contacts_follow_syncs_and_the_tenant_mapping(stack: Stack) -> None:
    definitions = build_definitions()
    connection_id = stack.connect("acme")
    with stack.api() as api:
        mapped = api.put(
            "/tenants/acme/mappings/hubspot",
            json={"contacts": {"crm_company": {"source": "company", "transform": "uppercase"}}},
        )
        assert mapped.status_code == 200
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
        instance.add_dynamic_partitions(TENANTS.name, ["acme"])
        sync = definitions.resolve_job_def("hubspot_sync").execute_in_process(
            partition_key=connection_id, instance=instance
        )
        assert sync.success

        # The unified sensor turns the successful sync into the tenant's unified run, deterministically.
        sensor = definitions.resolve_sensor_def("unified_sensor")
        success = next(
            e
            for e in instance.all_logs(sync.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS"
        )
        requests = []
        for _ in range(2):  # as after a daemon restart: the same run is seen again
            with dg.build_run_status_sensor_context(
                sensor_name="unified_sensor",
                dagster_event=success.dagster_event,
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(sync.run_id),
                resources={"integrations": IntegrationsResource()},
            ) as context:
                requests.append(sensor(context))
        assert requests[0].partition_key == "acme" and requests[0].job_name == "unified_sync"
        assert requests[0].run_key == requests[1].run_key == f"unified:{sync.run_id}"

        unified = definitions.resolve_job_def("unified_sync").execute_in_process(
            partition_key="acme", instance=instance
        )
        assert unified.success
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        rows = connection.execute(
            "SELECT tenant, provider, source_id, company, mapped FROM unified.contacts ORDER BY source_id"
        ).fetchall()
        provider_rows = connection.execute("SELECT count(*) FROM hubspot.contacts").fetchone()
    assert len(rows) == provider_rows[0] == 250
    assert {(tenant, provider) for tenant, provider, *_ in rows} == {("acme", "hubspot")}
    for _, _, _, company, mapped_json in rows:
        assert json.loads(mapped_json) == {"crm_company": company.upper() if company else None}
