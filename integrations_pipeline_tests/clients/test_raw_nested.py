"""The raw column keeps every key a provider sent, nested ones included: each provider's models keep undeclared
keys at every depth (`extra="allow"`), so nothing the typed fields do not name is lost on the way to `raw`."""

import json
from typing import Any

import pytest
from pydantic import BaseModel

from integrations_pipeline.clients.google import CalendarEvent, DirectoryUser, Person
from integrations_pipeline.clients.hubspot import HubSpotObject, HubSpotOwner
from integrations_pipeline.clients.microsoft import GraphContact, GraphEvent, GraphUser
from integrations_pipeline.clients.salesforce import SalesforceContact, SalesforceEvent
from integrations_pipeline.clients.values import raw_json
from integrations_pipeline.clients.zoho import ZohoContact, ZohoEvent

SENT: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        SalesforceContact,
        {
            "attributes": {"type": "Contact", "url": "/x"},
            "Id": "003Dn0000000001AAA",
            "SystemModstamp": "2026-01-01T00:00:00.000+0000",
            "Account": {"attributes": {"type": "Account"}, "Name": "Acme", "Industry": "Energy"},
            "Lead_Score__c": 12.5,
        },
    ),
    (
        SalesforceEvent,
        {
            "Id": "00UDn0000000001AAA",
            "SystemModstamp": "2026-01-01T00:00:00.000+0000",
            "Who": {"Email": "a@x.io", "Title": "CTO", "attributes": {"type": "Contact"}},
        },
    ),
    (
        ZohoContact,
        {
            "id": "1",
            "Modified_Time": "2026-01-01T00:00:00+05:30",
            "Account_Name": {"name": "Acme", "id": "9", "module": "Accounts"},
            "Customer_Tier": "Gold",
        },
    ),
    (
        ZohoEvent,
        {
            "id": "2",
            "Event_Title": "Demo",
            "Start_DateTime": "2026-01-01T10:00:00+05:30",
            "End_DateTime": "2026-01-01T11:00:00+05:30",
            "Modified_Time": "2026-01-01T00:00:00+05:30",
            "Owner": {"name": "Ann", "id": "7", "email": "ann@x.io", "zuid": "42"},
            "Participants": [{"Email": "b@x.io", "status": "accepted", "invited": True, "type": "contact"}],
        },
    ),
    (
        DirectoryUser,
        {
            "id": "u1",
            "name": {"givenName": "Ann", "familyName": "Lee", "fullName": "Ann Lee", "displayName": "Ann"},
            "organizations": [{"title": "CTO", "primary": True, "department": "R&D", "costCenter": "CC-1"}],
            "relations": [{"value": "boss@x.io", "type": "manager"}],
            "customSchemas": {"Employment": {"employeeLevel": "3"}},
        },
    ),
    (
        Person,
        {
            "resourceName": "people/c1",
            "names": [
                {
                    "metadata": {"primary": True, "source": {"type": "CONTACT", "id": "1"}},
                    "givenName": "A",
                    "phoneticGivenName": "ay",
                }
            ],
            "organizations": [{"name": "Acme", "department": "Sales", "metadata": {"verified": True}}],
            "userDefined": [{"key": "tier", "value": "gold"}],
        },
    ),
    (
        CalendarEvent,
        {
            "id": "e1",
            "status": "confirmed",
            "start": {"dateTime": "2026-01-01T10:00:00Z", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2026-01-01T11:00:00Z", "timeZone": "Europe/Paris"},
            "organizer": {"email": "o@x.io", "self": True, "displayName": "O"},
            "attendees": [{"email": "a@x.io", "responseStatus": "accepted", "comment": "ok", "optional": True}],
            "conferenceData": {"entryPoints": [{"entryPointType": "video", "uri": "https://meet"}]},
        },
    ),
    (GraphUser, {"id": "g1", "businessPhones": ["+1"], "department": "Sales", "employeeOrgData": {"division": "B"}}),
    (
        GraphContact,
        {
            "id": "c1",
            "emailAddresses": [{"name": "A", "address": "a@x.io", "type": "work"}],
            "businessAddress": {"city": "Paris", "countryOrRegion": "FR"},
        },
    ),
    (
        GraphEvent,
        {
            "id": "ev1",
            "start": {"dateTime": "2026-01-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-01-01T11:00:00", "timeZone": "UTC"},
            "location": {"displayName": "HQ", "address": {"city": "Paris"}, "locationType": "default"},
            "organizer": {"emailAddress": {"name": "O", "address": "o@x.io"}},
            "attendees": [
                {
                    "type": "required",
                    "status": {"response": "accepted", "time": "x"},
                    "emailAddress": {"name": "A", "address": "a@x.io"},
                },
            ],
        },
    ),
    (
        HubSpotObject,
        {
            "id": "1",
            "properties": {"email": "a@x.io", "lead_score": "3"},
            "updatedAt": "2026-01-01T00:00:00Z",
            "associations": {"companies": {"results": [{"id": "9", "type": "contact_to_company"}]}},
        },
    ),
    (HubSpotOwner, {"id": "1", "teams": [{"id": "5", "name": "EMEA", "primary": True}], "type": "PERSON"}),
]


def keys(value: Any, path: str = "") -> set[str]:
    """Every key path in a JSON value (lists by their items), so a nested key dropped anywhere shows."""
    if isinstance(value, dict):
        return {f"{path}.{key}" for key in value} | {
            found for key, inner in value.items() for found in keys(inner, f"{path}.{key}")
        }
    if isinstance(value, list):
        return {found for item in value for found in keys(item, path + "[]")}
    return set()


@pytest.mark.parametrize(("model", "sent"), SENT, ids=[model.__name__ for model, _ in SENT])
def test_raw_keeps_every_key_sent_at_every_depth(model: type[BaseModel], sent: dict[str, Any]) -> None:
    assert keys(json.loads(raw_json(model.model_validate(sent)))) == keys(sent)
