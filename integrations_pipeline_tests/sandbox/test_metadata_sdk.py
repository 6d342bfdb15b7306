"""The metadata endpoints the field catalog reads, driven by the providers' official SDKs: HubSpot's properties
API (hubspot-api-client's generated models refuse unknown enum values, so a drifted shape fails) and Google
Directory's schemas.list (google-api-python-client with its packaged discovery document)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInput

from integrations_pipeline_tests.sandbox.conftest import ManualClock, ServedHubSpot, run_code_flow, serve_hubspot
from integrations_pipeline_tests.sandbox.test_google_emulator import (
    ALL_SCOPES,
    CLIENT_ID,
    CLIENT_SECRET,
    ServedGoogle,
    serve_google,
)
from integrations_pipeline_tests.sandbox.test_google_emulator import run_code_flow as google_code_flow

USERSCHEMA_SCOPE = "https://www.googleapis.com/auth/admin.directory.userschema.readonly"


@pytest.fixture
def hubspot(clock: ManualClock) -> Iterator[ServedHubSpot]:
    with serve_hubspot(clock) as served:
        yield served


def test_hubspot_sdk_reads_standard_and_custom_properties_and_their_changes(hubspot: ServedHubSpot) -> None:
    tokens = run_code_flow(hubspot.http)
    properties = HubSpot(access_token=tokens["access_token"], host=hubspot.url).crm.properties.core_api
    listed = {p.name: p for p in properties.get_all(object_type="contacts").results}
    assert listed["email"].hubspot_defined is True and listed["email"].type == "string"
    assert listed["lead_score"].hubspot_defined is None and listed["lead_score"].type == "number"
    assert [o.value for o in listed["industries_of_interest"].options] == ["saas", "retail", "health"]

    hubspot.emulator.properties.add("contacts", "nps", type="number", field_type="number")
    hubspot.emulator.properties.archive("contacts", "lead_score")
    after = {p.name for p in properties.get_all(object_type="contacts").results}
    archived = {p.name for p in properties.get_all(object_type="contacts", archived=True).results}
    assert "nps" in after and "lead_score" not in after and archived == {"lead_score"}
    assert {p.name for p in properties.get_all(object_type="meetings").results} >= {"meeting_source", "hs_timestamp"}


def test_records_carry_custom_properties_and_follow_their_changes(hubspot: ServedHubSpot) -> None:
    tokens = run_code_flow(hubspot.http)
    contacts = HubSpot(access_token=tokens["access_token"], host=hubspot.url).crm.contacts.basic_api
    first = contacts.get_page(limit=1, properties=["lead_score", "is_partner", "industries_of_interest"]).results[0]
    assert first.properties["lead_score"].isdigit() and first.properties["is_partner"] in ("true", "false")

    hubspot.emulator.properties.add("contacts", "nps", type="number", field_type="number")
    contacts.update(first.id, SimplePublicObjectInput(properties={"nps": "9"}))
    assert contacts.get_by_id(first.id, properties=["nps"]).properties["nps"] == "9"
    hubspot.emulator.properties.archive("contacts", "nps")  # archived: no longer returned, even when asked for
    assert "nps" not in contacts.get_by_id(first.id, properties=["nps", "email"]).properties


@pytest.fixture
def google(clock: ManualClock) -> Iterator[ServedGoogle]:
    with serve_google(clock) as served:
        yield served


def test_google_sdk_lists_directory_custom_schemas(google: ServedGoogle) -> None:
    tokens = google_code_flow(google.http, scope=f"{ALL_SCOPES} {USERSCHEMA_SCOPE}")
    credentials = Credentials(
        token=tokens["access_token"], token_uri=f"{google.url}/token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    directory = build(
        "admin",
        "directory_v1",
        credentials=credentials,
        client_options={"api_endpoint": google.url + "/"},
        static_discovery=True,
        cache_discovery=False,
    )
    try:
        google.emulator.schemas.add_field("Employment", "badgeNumber", "INT64")
        schemas = directory.schemas().list(customerId="my_customer").execute()
        user = directory.users().list(customer="my_customer", maxResults=1, projection="full").execute()["users"][0]
    finally:
        directory.close()
    assert schemas["kind"] == "admin#directory#schemas"
    employment = next(s for s in schemas["schemas"] if s["schemaName"] == "Employment")
    fields = {f["fieldName"]: f["fieldType"] for f in employment["fields"]}
    assert fields["costCenter"] == "STRING" and fields["badgeNumber"] == "INT64"
    assert user["customSchemas"]["Employment"]["badgeNumber"].isdigit()  # INT64 travels as text
    assert [entry["value"] for entry in user["customSchemas"]["Skills"]["languages"]]
