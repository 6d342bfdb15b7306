"""Connectors request every field of the connection's catalog, within each API's limits, over real HTTP to the
emulators: a field added at the provider reaches the raw column of the next incremental sync (Dagster runs for
Salesforce and Zoho), a field deleted at the provider before the catalog knows it is dropped without failing the
sync, wide catalogs are split into several requests whose records are merged whole, and Graph `$select`, People
`personFields` and Directory `projection=full` carry the catalog's fields."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import dagster as dg
import duckdb
import pytest

from integrations_pipeline.clients.catalog import CatalogRefresher
from integrations_pipeline.clients.connector import open_connector
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.clients.spec import SyncRequest
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.store.catalog import FieldCatalog
from integrations_pipeline_tests.conftest import Stack, changed_a_second_ago

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is not what is tested


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def refresh(stack: Stack, connection_id: str, entity: str) -> list[str]:
    refresher = CatalogRefresher(stack.store, lambda p, c: open_connector(stack.settings, stack.store, p, c))
    refresher.refresh(connection_id, [entity])
    return FieldCatalog(stack.store).field_names(connection_id, entity)


def read(stack: Stack, provider: str, connection_id: str, entity: str) -> list[dict[str, Any]]:
    """A full read of the entity with the connection's catalog, as the asset asks for it; each record's raw parsed."""
    spec = next(spec for spec in ENTITIES if spec.provider == provider and spec.entity == entity)
    fields = tuple(FieldCatalog(stack.store).field_names(connection_id, entity))
    request = SyncRequest(connection_id, None, datetime.now(UTC), fields=fields)
    with open_connector(stack.settings, stack.store, provider, connection_id) as client:
        records = [record for page in spec.read(client, request) for record in page.records]
    return [json.loads(record["raw"]) for record in records if record.get("raw")]


def queries(stack: Stack, provider: str, since: int, path_part: str) -> list[dict[str, list[str]]]:
    log = stack.emulators[provider].request_log[since:]
    return [parse_qs(record.query) for record in log if path_part in record.path]


# -- a field added at the provider, through Dagster into the raw column -------------------------------------------

# provider -> (the contacts id key, the field added, its kind, the value written, a custom field deleted later)
CHANGES = {
    "salesforce": ("Id", "Churn_Risk__c", "double", 0.8, "Tier__c"),
    "zoho": ("id", "Churn_Risk", "double", 0.8, "Customer_Tier"),
}


def sync(instance: dg.DagsterInstance, provider: str, connection_id: str) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def(f"{provider}_sync")
    result = job.execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)
    assert result.success, [event.event_specific_data for event in result.all_events if event.is_failure]
    return result


def raw_of(stack: Stack, provider: str, connection_id: str, source_id: str) -> dict[str, Any]:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        row = connection.execute(
            f"SELECT raw FROM {provider}.contacts WHERE connection_id = ? AND source_id = ?",
            [connection_id, source_id],
        ).fetchone()
    assert row is not None
    return json.loads(row[0])  # type: ignore[no-any-return]


@pytest.mark.e2e
@pytest.mark.parametrize("provider", sorted(CHANGES))
def test_a_field_added_at_the_provider_reaches_the_raw_column_and_a_deleted_one_fails_nothing(
    stack: Stack, instance: dg.DagsterInstance, provider: str
) -> None:
    key, added, kind, value, deleted = CHANGES[provider]
    emulator = stack.emulators[provider]
    connection_id = stack.connect("acme", provider)
    instance.add_dynamic_partitions(connection_partitions(provider).name, [connection_id])
    assert deleted in refresh(stack, connection_id, "contacts")
    sync(instance, provider, connection_id)
    contact_id = emulator.contact_records()[2][key]
    first = raw_of(stack, provider, connection_id, contact_id)
    assert deleted in first and added not in first  # the catalog's custom fields are requested by name

    emulator.add_custom_field("Contact" if provider == "salesforce" else "Contacts", added, kind)
    changed_a_second_ago(emulator, lambda: emulator.update_contact(contact_id, {added: value}))
    assert added in refresh(stack, connection_id, "contacts")  # no restart: the next sync asks for it
    # Deleted at the provider after the catalog was refreshed: the sync asks for it, is refused, and drops it.
    emulator.remove_custom_field("Contact" if provider == "salesforce" else "Contacts", deleted)
    since = len(emulator.request_log)
    second = sync(instance, provider, connection_id)
    metadata = second.asset_materializations_for_node(f"{provider}_contacts")[0].metadata
    assert metadata["sync_mode"].value == "incremental"
    after = raw_of(stack, provider, connection_id, contact_id)
    assert after[added] == value and deleted not in after
    asked = [" ".join(query.get("q", query.get("fields", []))) for query in queries(stack, provider, since, "")]
    named = [text for text in asked if added in text]
    assert any(deleted in text for text in named) and any(deleted not in text for text in named)

    assert deleted not in refresh(stack, connection_id, "contacts")  # the refresh drops it from the catalog


# -- wide catalogs: split within the API's limits, merged whole -----------------------------------------------------


# provider -> (object, id key, fields added: wider than one request may name, kind). Zoho: 60 fields over the
# 50-field cap; Salesforce: 400 fields of 30 characters, about 14,400 URL-encoded bytes of field list.
WIDE = {
    "zoho": ("Contacts", "id", [f"Survey_Answer_{number}" for number in range(60)], "text"),
    "salesforce": ("Contact", "Id", [f"Quarterly_Survey_Answer_{number:03d}__c" for number in range(400)], "string"),
}


@pytest.mark.parametrize("provider", sorted(WIDE))
def test_a_catalog_wider_than_one_request_is_read_in_lookups_by_id_and_merged_whole(
    stack: Stack, provider: str
) -> None:
    sobject, key, extra, kind = WIDE[provider]
    emulator = stack.emulators[provider]
    connection_id = stack.connect("acme", provider)
    for name in extra:
        emulator.add_custom_field(sobject, name, kind)
    catalog = refresh(stack, connection_id, "contacts")
    since = len(emulator.request_log)
    raws = read(stack, provider, connection_id, "contacts")
    truth = {record[key]: record for record in emulator.contact_records()}
    assert len(raws) == len(truth) == 250
    for raw in raws:
        assert set(catalog) <= set(raw) and all(raw[name] == truth[raw[key]][name] for name in extra)
    log = emulator.request_log[since:]
    assert all(len(record.path) + 1 + len(record.query) < 16_384 for record in log)
    if provider == "zoho":
        asked = queries(stack, "zoho", since, "/crm/v8/Contacts")
        assert all(len(query["fields"][0].split(",")) <= 50 for query in asked if "fields" in query)
        lookups = [query for query in asked if "ids" in query]
        assert lookups and all(len(query["ids"][0].split(",")) <= 100 for query in lookups)
    else:
        soql = [" ".join(query["q"]) for query in queries(stack, "salesforce", since, "/query")]
        assert any(" WHERE Id IN (" in text for text in soql) and all(len(text) < 16_384 for text in soql)


# -- Graph $select, People personFields, Directory custom schemas --------------------------------------------------


def test_graph_and_google_requests_carry_the_catalog(stack: Stack) -> None:
    microsoft = stack.connect("acme", "microsoft")
    assert "department" in refresh(stack, microsoft, "users")
    users = read(stack, "microsoft", microsoft, "users")
    assert users and all(user["department"] for user in users)  # not among Graph's default properties

    google = stack.connect("acme", "google")
    assert "biographies" in refresh(stack, google, "contacts")
    since = len(stack.emulators["google"].request_log)
    assert read(stack, "google", google, "contacts")
    [asked] = queries(stack, "google", since, "/people/me/connections")
    assert {"names", "emailAddresses", "biographies", "userDefined"} <= set(asked["personFields"][0].split(","))

    stack.emulators["google"].schemas.add_field("Employment", "badgeNumber", "INT64")
    assert "Employment.badgeNumber" in refresh(stack, google, "users")
    users = read(stack, "google", google, "users")
    assert users and all("badgeNumber" in user["customSchemas"]["Employment"] for user in users)
