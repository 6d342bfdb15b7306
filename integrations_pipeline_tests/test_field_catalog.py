"""The field catalog: discovery from each provider's metadata API over real HTTP, the store on SQLite and
PostgreSQL, `GET /connections/{id}/fields`, `fields list`, and mappings that read catalog fields, typed."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integrations_pipeline.catalog_refresh import refresh_field_catalogs_job
from integrations_pipeline.cli import main
from integrations_pipeline.clients.catalog import CatalogRefresher, salesforce_fields
from integrations_pipeline.clients.salesforce import DATA_PATH, SalesforceClient
from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import StateStore
from integrations_pipeline.store.catalog import FieldCatalog
from integrations_pipeline_tests.conftest import Stack

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def field(name: str, kind: FieldType = FieldType.STRING, *, custom: bool = False) -> FieldInfo:
    return FieldInfo("contacts", name, name.title(), kind, kind.value, is_custom=custom)


def test_the_catalog_adds_updates_removes_and_brings_back_fields(store: StateStore) -> None:
    catalog = FieldCatalog(store)
    first = catalog.record("c1", "contacts", [field("email"), field("lead_score", custom=True)], T0)
    assert first.added == ["email", "lead_score"] and first.removed == []

    later = T0 + timedelta(hours=1)
    second = catalog.record("c1", "contacts", [field("email"), field("tier", FieldType.ENUM, custom=True)], later)
    assert second.added == ["tier"] and second.removed == ["lead_score"]
    assert catalog.field_names("c1", "contacts") == ["email", "tier"]
    removed = {f.name: f for f in catalog.fields("c1", include_removed=True)}["lead_score"]
    assert removed.removed_at == later and removed.discovered_at == T0 and removed.is_custom
    assert catalog.last_discovered_at("c1", "contacts") == later

    back = catalog.record("c1", "contacts", [field("email"), field("lead_score", FieldType.NUMBER, custom=True)], later)
    assert back.added == ["lead_score"] and back.removed == ["tier"]
    assert catalog.field_names("c1", "contacts") == ["email", "lead_score"]
    assert catalog.fields("c1", "contacts")[1].type == FieldType.NUMBER
    assert catalog.fields("c2") == []


@pytest.fixture
def hubspot(stack: Stack) -> Iterator[tuple[Stack, str]]:
    yield stack, stack.connect("acme", "hubspot")


def listed(stack: Stack, connection_id: str, **params: str) -> dict[str, dict]:
    with stack.api() as api:
        response = api.get(f"/connections/{connection_id}/fields", params=params)
    assert response.status_code == 200, response.text
    return {f"{f['entity']}.{f['name']}": f for f in response.json()["fields"]}


def test_hubspot_properties_land_in_the_catalog_and_follow_the_portal(hubspot: tuple[Stack, str]) -> None:
    stack, connection_id = hubspot
    first = listed(stack, connection_id)  # nothing stored yet: discovered on first use
    assert first["contacts.lead_score"] | {"discovered_at": None} == {
        "entity": "contacts",
        "name": "lead_score",
        "label": "Lead Score",
        "type": "number",
        "provider_type": "number",
        "custom": True,
        "discovered_at": None,
        "removed_at": None,
    }
    assert first["contacts.email"]["custom"] is False and first["contacts.is_partner"]["type"] == "boolean"
    assert first["contacts.industries_of_interest"]["type"] == "multi_enum"
    assert first["events.meeting_source"]["type"] == "enum" and "users.email" in first

    stack.emulator.properties.add("contacts", "churn_risk", type="number", field_type="number", label="Churn risk")
    stack.emulator.properties.archive("contacts", "renewal_date")
    assert "contacts.churn_risk" not in listed(stack, connection_id, refresh="false")  # the stored catalog
    refreshed = listed(stack, connection_id, entity="contacts")  # an active connection's: asked for now
    assert refreshed["contacts.churn_risk"]["label"] == "Churn risk" and refreshed["contacts.churn_risk"]["custom"]
    assert "contacts.renewal_date" not in refreshed and all(key.startswith("contacts.") for key in refreshed)
    assert listed(stack, connection_id, include_removed="true")["contacts.renewal_date"]["removed_at"] is not None

    result = CliRunner().invoke(main, ["fields", "list", connection_id, "--entity", "contacts"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ENTITY", "NAME", "TYPE", "ORIGIN", "LABEL"]
    assert any(line.split()[:4] == ["contacts", "churn_risk", "number", "custom"] for line in lines)
    assert not any("renewal_date" in line for line in lines)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is covered on both backends above
def test_fields_endpoint_refusals_are_clear(hubspot: tuple[Stack, str]) -> None:
    stack, connection_id = hubspot
    with stack.api() as api:
        assert api.get("/connections/hubspot-nobody/fields").json()["error"] == "unknown_connection"
        bad_entity = api.get(f"/connections/{connection_id}/fields", params={"entity": "deals"})
        assert bad_entity.status_code == 400 and "'users', 'contacts' or 'events'" in bad_entity.json()["message"]
        assert api.get(f"/connections/{connection_id}/fields", params={"refresh": "yes"}).status_code == 400
    result = CliRunner().invoke(main, ["fields", "list", "hubspot-nobody"])
    assert result.exit_code == 1 and "no connection 'hubspot-nobody'" in result.output


def test_a_catalog_is_stale_when_never_discovered_or_older_than_the_max_age(hubspot: tuple[Stack, str]) -> None:
    stack, connection_id = hubspot
    refresher = CatalogRefresher(stack.store, lambda provider, cid: _connector(stack, provider, cid))
    minute = timedelta(minutes=1)
    assert refresher.is_stale(connection_id, "contacts", minute, now=T0)  # never discovered
    refresher.refresh(connection_id, ["contacts"], now=T0)
    assert not refresher.is_stale(connection_id, "contacts", minute, now=T0 + timedelta(seconds=59))
    assert refresher.is_stale(connection_id, "contacts", minute, now=T0 + minute)
    assert refresher.is_stale(connection_id, "users", minute, now=T0)  # per entity
    stack.emulator.properties.add("contacts", "nps", type="number", field_type="number")
    assert refresher.refresh(connection_id, ["contacts"], now=T0 + timedelta(hours=1))["contacts"].added == ["nps"]

    # The schedule's pass: users and events were never discovered, so the connection is stale; then it is not.
    stack.emulator.properties.archive("contacts", "nps")
    day = timedelta(days=1)
    outcome = refresher.refresh_stale(day, now=T0 + timedelta(hours=2))
    assert list(outcome) == [connection_id] and outcome[connection_id].endswith(" added, 1 removed")
    after = listed(stack, connection_id)
    assert "contacts.nps" not in after and "events.meeting_source" in after
    assert refresher.refresh_stale(day, now=T0 + timedelta(hours=3)) == {}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is covered on both backends above
def test_the_daily_job_discovers_catalogs_through_dagster(hubspot: tuple[Stack, str]) -> None:
    stack, connection_id = hubspot
    result = refresh_field_catalogs_job.execute_in_process(resources={"integrations": IntegrationsResource()})
    assert result.success
    assert "lead_score" in FieldCatalog(stack.store).field_names(connection_id, "contacts")


def _connector(stack: Stack, provider: str, connection_id: str):  # type: ignore[no-untyped-def]
    from integrations_pipeline.clients.connector import open_connector

    return open_connector(stack.settings, stack.store, provider, connection_id)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is covered on both backends above
def test_google_zoho_and_microsoft_catalogs(stack: Stack) -> None:
    google = listed(stack, stack.connect("acme", "google"))
    assert (
        google["users.Employment.employeeLevel"]["type"] == "number" and google["users.Employment.costCenter"]["custom"]
    )
    assert google["users.Skills.languages"]["type"] == "object" and google["users.primaryEmail"]["custom"] is False
    assert "contacts.emailAddresses" in google and "events.attendees" in google
    stack.emulators["google"].schemas.add_field("Employment", "badgeNumber", "INT64")
    refreshed = listed(stack, "google-acme", refresh="true", entity="users")
    assert refreshed["users.Employment.badgeNumber"]["type"] == "number"

    zoho = listed(stack, stack.connect("acme", "zoho"))
    assert zoho["contacts.Last_Name"]["type"] == "string" and zoho["events.All_day"]["type"] == "boolean"
    assert zoho["contacts.Account_Name"]["type"] == "reference" and "users.email" in zoho

    microsoft = listed(stack, stack.connect("acme", "microsoft"))
    assert microsoft["users.department"]["type"] == "string" and microsoft["events.isAllDay"]["type"] == "boolean"


def test_salesforce_describe_is_read_into_fields() -> None:
    """The documented describe shape, served over real HTTP (the Salesforce emulator's describe lands with its
    own work; this reads the fields array as Salesforce documents it)."""
    describe = {
        "name": "Contact",
        "custom": False,
        "fields": [
            {"name": "Id", "label": "Contact ID", "type": "id", "custom": False},
            {"name": "Email", "label": "Email", "type": "email", "custom": False},
            {"name": "Lead_Score__c", "label": "Lead Score", "type": "double", "custom": True},
            {"name": "Tier__c", "label": "Tier", "type": "picklist", "custom": True},
            {"name": "Is_Partner__c", "label": "Partner", "type": "boolean", "custom": True},
        ],
    }

    async def serve(request: Request) -> JSONResponse:
        return JSONResponse(describe)

    app = Starlette(routes=[Route(f"{DATA_PATH}/sobjects/Contact/describe", serve)])
    with BackgroundServer(app) as server, SalesforceClient(server.url) as client:
        fields = {f.name: f for f in salesforce_fields(client, "contacts")}
    assert fields["Lead_Score__c"] == FieldInfo(
        "contacts", "Lead_Score__c", "Lead Score", FieldType.NUMBER, "double", True
    )
    assert fields["Tier__c"].type == FieldType.ENUM and fields["Id"].type == FieldType.REFERENCE
    assert not fields["Email"].is_custom and fields["Is_Partner__c"].type == FieldType.BOOLEAN


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is covered on both backends above
def test_mappings_over_catalog_fields_are_checked_typed_and_previewed_on_stored_rows(
    hubspot: tuple[Stack, str],
) -> None:
    stack, connection_id = hubspot
    listed(stack, connection_id)  # the first discovery
    with stack.api() as api:
        misspelt = api.put("/tenants/acme/mappings/hubspot", json={"contacts": {"score": {"source": "lead_scor"}}})
        assert misspelt.status_code == 422
        assert misspelt.json()["fields"]["contacts.score.source"] == (
            "'lead_scor' is not a field of hubspot contacts; did you mean 'lead_score'?"
        )
        boolean = {"contacts": {"partner": {"source": "is_partner", "transform": "to_number"}}}
        refused = api.put("/tenants/acme/mappings/hubspot", json=boolean)
        assert refused.status_code == 422 and "a boolean field" in refused.json()["fields"]["contacts.partner.source"]
        score = {"contacts": {"score": {"source": "lead_score", "transform": "to_number", "default": 0}}}
        assert api.put("/tenants/acme/mappings/hubspot", json=score).status_code == 200
        samples = {"contacts": [{"raw": {"properties": {"lead_score": "87"}}}, {"raw": {"properties": {}}}]}
        preview = api.post("/tenants/acme/mappings/hubspot/preview", json={"samples": samples}).json()
        assert [row["score"] for row in preview["preview"]["contacts"]] == [87.0, 0.0]
        assert preview["types"] == {"contacts": {"score": "number"}} and preview["sources"] == {"contacts": "samples"}

    # Previews read the connection's stored rows from the warehouse when there are some.
    with duckdb.connect(str(stack.settings.warehouse_path)) as warehouse:
        warehouse.execute("CREATE SCHEMA hubspot")
        warehouse.execute(
            "CREATE TABLE hubspot.contacts (connection_id VARCHAR, source_id VARCHAR, email VARCHAR, raw JSON)"
        )
        warehouse.execute(
            "INSERT INTO hubspot.contacts VALUES (?, '1', 'a@x.io', ?), ('hubspot-other', '2', 'b@x.io', ?)",
            [connection_id, json.dumps({"properties": {"lead_score": "12.5"}}), "{}"],
        )
    result = CliRunner().invoke(main, ["mappings", "preview", "acme", "hubspot"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["sources"] == {"contacts": "stored"}
    assert shown["preview"]["contacts"] == [
        {"connection_id": connection_id, "source_id": "1", "email": "a@x.io", "score": 12.5}
    ]
