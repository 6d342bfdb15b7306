"""Field discovery: each provider's metadata API read into `FieldInfo`s, and the refresher that keeps the
connection's catalog (store/catalog.py) in step with it.

- HubSpot: GET /crm/v3/properties/{contacts,meetings}; users (owners) have no metadata: documented list.
- Salesforce: GET sobjects/{User,Contact,Event}/describe.
- Zoho: GET settings/fields?module={Contacts,Events}; users have no metadata: documented list.
- Google: users are the documented Directory user plus the customer's custom schemas (GET customer/my_customer/
  schemas); contacts (People personFields) and events (Calendar) are documented lists.
- Microsoft Graph: documented lists of the user, contact and event properties.

"Documented" lists are static: those APIs have no metadata endpoint for their fixed schema (Graph's `$metadata` is
a 3 MB CSDL document of every entity, not worth parsing for three types; open extensions are not used here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations_pipeline.clients import salesforce
from integrations_pipeline.clients.errors import ProviderError
from integrations_pipeline.clients.providers import ENTITIES as ENTITY_SPECS
from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.mapping import SourceFields, ValueType
from integrations_pipeline.records import RAW_COLUMN, ContactRecord, EventRecord, UserRecord
from integrations_pipeline.settings import SettingsError
from integrations_pipeline.store import ConnectionStatus, StateStore, connection_id_for
from integrations_pipeline.store.catalog import CatalogChange, FieldCatalog

S, N, B, DT, D, E, M, R, OBJ = (
    FieldType.STRING,
    FieldType.NUMBER,
    FieldType.BOOLEAN,
    FieldType.DATETIME,
    FieldType.DATE,
    FieldType.ENUM,
    FieldType.MULTI_ENUM,
    FieldType.REFERENCE,
    FieldType.OBJECT,
)
ENTITY_NAMES = ("users", "contacts", "events")


def _label(name: str) -> str:
    """`lastName` / `last_name` / `Last_Name` -> "Last Name"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.split(".")[-1]).replace("_", " ")
    return " ".join(word[:1].upper() + word[1:] for word in spaced.split())


def documented(entity: str, fields: Iterable[tuple[str, FieldType]], raw_prefix: str = "") -> list[FieldInfo]:
    """A static list: fields an API documents but serves no metadata for."""
    return [
        FieldInfo(entity, name, _label(name), kind, kind.value, raw_path=raw_prefix + name) for name, kind in fields
    ]


# -- HubSpot --------------------------------------------------------------------------------------------------------

HUBSPOT_OBJECTS = {"contacts": "contacts", "events": "meetings"}
HUBSPOT_OWNER_FIELDS = (
    ("id", S), ("email", S), ("firstName", S), ("lastName", S), ("userId", N), ("createdAt", DT),
    ("updatedAt", DT), ("archived", B), ("teams", OBJ),
)  # fmt: skip


def hubspot_type(kind: str, field_type: str) -> FieldType:
    if kind == "enumeration":
        return {"checkbox": M, "booleancheckbox": B}.get(field_type, E)
    return {"number": N, "bool": B, "date": D, "datetime": DT}.get(kind, S)


def hubspot_fields(client: Any, entity: str) -> list[FieldInfo]:
    """GET /crm/v3/properties/{object}: every property, `hubspotDefined` false for the account's own."""
    if entity == "users":
        return documented(entity, HUBSPOT_OWNER_FIELDS)
    body = client.get_json(f"/crm/v3/properties/{HUBSPOT_OBJECTS[entity]}", params={"archived": "false"})
    return [
        FieldInfo(
            entity,
            prop["name"],
            prop.get("label") or prop["name"],
            hubspot_type(prop.get("type", "string"), prop.get("fieldType", "")),
            prop.get("type", "string"),
            is_custom=not prop.get("hubspotDefined", False),
            raw_path=f"properties.{prop['name']}",
        )
        for prop in body.get("results", [])
    ]


# -- Salesforce -----------------------------------------------------------------------------------------------------

SALESFORCE_OBJECTS = {"users": "User", "contacts": "Contact", "events": "Event"}
SALESFORCE_TYPES = {
    "boolean": B, "int": N, "double": N, "currency": N, "percent": N, "long": N, "date": D, "datetime": DT,
    "picklist": E, "multipicklist": M, "reference": R, "id": R, "address": OBJ, "location": OBJ,
}  # fmt: skip


def salesforce_fields(client: Any, entity: str) -> list[FieldInfo]:
    """GET sobjects/{Object}/describe: `fields[]` with name, label, type and `custom` (the `__c` fields)."""
    body = client.get_json(f"{salesforce.DATA_PATH}/sobjects/{SALESFORCE_OBJECTS[entity]}/describe")
    return [
        FieldInfo(
            entity,
            spec["name"],
            spec.get("label") or spec["name"],
            SALESFORCE_TYPES.get(spec.get("type", "string"), S),
            spec.get("type", "string"),
            is_custom=bool(spec.get("custom", False)),
        )
        for spec in body.get("fields", [])
    ]


# -- Zoho -----------------------------------------------------------------------------------------------------------

ZOHO_MODULES = {"contacts": "Contacts", "events": "Events"}
ZOHO_USER_FIELDS = (
    ("id", S), ("email", S), ("first_name", S), ("last_name", S), ("full_name", S), ("status", E), ("role", OBJ),
    ("profile", OBJ), ("confirm", B), ("created_time", DT), ("Modified_Time", DT), ("time_zone", S), ("locale", S),
)  # fmt: skip
ZOHO_TYPES = {
    "integer": N, "bigint": N, "double": N, "currency": N, "decimal": N, "percent": N, "boolean": B, "date": D,
    "datetime": DT, "picklist": E, "multiselectpicklist": M, "lookup": R, "ownerlookup": R, "userlookup": R,
    "multiselectlookup": OBJ, "subform": OBJ, "fileupload": OBJ, "imageupload": OBJ,
}  # fmt: skip


def zoho_fields(client: Any, entity: str) -> list[FieldInfo]:
    """GET settings/fields?module=: `fields[]` with api_name, field_label, data_type and `custom_field`."""
    if entity == "users":
        return documented(entity, ZOHO_USER_FIELDS)
    response = client.request("GET", "/crm/v8/settings/fields", params={"module": ZOHO_MODULES[entity]})
    body = response.json() if response.content else {}
    return [
        FieldInfo(
            entity,
            spec["api_name"],
            spec.get("field_label") or spec.get("display_label") or spec["api_name"],
            ZOHO_TYPES.get(spec.get("data_type", "text"), S),
            spec.get("data_type", "text"),
            is_custom=bool(spec.get("custom_field", False)),
        )
        for spec in body.get("fields", [])
    ]


# -- Google ---------------------------------------------------------------------------------------------------------

GOOGLE_USER_FIELDS = (
    ("id", S), ("primaryEmail", S), ("name", OBJ), ("isAdmin", B), ("suspended", B), ("archived", B),
    ("orgUnitPath", S), ("creationTime", DT), ("lastLoginTime", DT), ("organizations", OBJ), ("relations", OBJ),
    ("phones", OBJ), ("addresses", OBJ), ("locations", OBJ), ("externalIds", OBJ), ("emails", OBJ), ("languages", OBJ),
    ("recoveryEmail", S), ("thumbnailPhotoUrl", S),
)  # fmt: skip
# People API personFields (the `personFields` mask lists these; each holds a list of objects).
GOOGLE_PERSON_FIELDS = (
    ("names", OBJ), ("emailAddresses", OBJ), ("phoneNumbers", OBJ), ("organizations", OBJ), ("addresses", OBJ),
    ("biographies", OBJ), ("birthdays", OBJ), ("urls", OBJ), ("userDefined", OBJ), ("memberships", OBJ),
    ("nicknames", OBJ), ("occupations", OBJ), ("relations", OBJ), ("locations", OBJ), ("externalIds", OBJ),
    ("metadata", OBJ),
)  # fmt: skip
GOOGLE_EVENT_FIELDS = (
    ("id", S), ("status", E), ("summary", S), ("description", S), ("location", S), ("start", OBJ), ("end", OBJ),
    ("created", DT), ("updated", DT), ("organizer", OBJ), ("creator", OBJ), ("attendees", OBJ), ("recurrence", OBJ),
    ("recurringEventId", S), ("hangoutLink", S), ("conferenceData", OBJ), ("visibility", E), ("transparency", E),
    ("eventType", E), ("colorId", S), ("htmlLink", S), ("iCalUID", S), ("extendedProperties", OBJ),
)  # fmt: skip
GOOGLE_SCHEMA_TYPES = {"INT64": N, "DOUBLE": N, "BOOL": B, "DATE": D}


def google_fields(client: Any, entity: str) -> list[FieldInfo]:
    """Users: the Directory user resource plus the customer's custom schemas (`Schema.field`, under the user's
    `customSchemas`); contacts and events: the documented resources."""
    if entity == "contacts":
        return documented(entity, GOOGLE_PERSON_FIELDS)
    if entity == "events":
        return documented(entity, GOOGLE_EVENT_FIELDS)
    directory = client.users_url.removesuffix("/users")
    try:
        body = client.get_json(f"{directory}/customer/my_customer/schemas")
    except ProviderError as refused:
        if refused.status_code != 403:
            raise
        body = {}  # connected before the userschema scope was asked for: the standard fields still stand
    custom = [
        FieldInfo(
            entity,
            f"{schema['schemaName']}.{spec['fieldName']}",
            spec.get("displayName") or spec["fieldName"],
            OBJ if spec.get("multiValued") else GOOGLE_SCHEMA_TYPES.get(spec.get("fieldType", "STRING"), S),
            spec.get("fieldType", "STRING"),
            is_custom=True,
            raw_path=f"customSchemas.{schema['schemaName']}.{spec['fieldName']}",
        )
        for schema in body.get("schemas", [])
        for spec in schema.get("fields", [])
    ]
    return documented(entity, GOOGLE_USER_FIELDS) + custom


# -- Microsoft Graph ------------------------------------------------------------------------------------------------

MICROSOFT_FIELDS = {
    "users": (
        ("id", S), ("userPrincipalName", S), ("mail", S), ("givenName", S), ("surname", S), ("displayName", S),
        ("jobTitle", S), ("department", S), ("officeLocation", S), ("businessPhones", OBJ), ("mobilePhone", S),
        ("companyName", S), ("employeeId", S), ("accountEnabled", B), ("createdDateTime", DT),
        ("preferredLanguage", S), ("usageLocation", S), ("city", S), ("country", S),
    ),
    "contacts": (
        ("id", S), ("givenName", S), ("surname", S), ("displayName", S), ("emailAddresses", OBJ),
        ("businessPhones", OBJ), ("mobilePhone", S), ("homePhones", OBJ), ("companyName", S), ("jobTitle", S),
        ("department", S), ("officeLocation", S), ("businessAddress", OBJ), ("birthday", DT), ("personalNotes", S),
        ("categories", OBJ), ("createdDateTime", DT), ("lastModifiedDateTime", DT),
    ),
    "events": (
        ("id", S), ("subject", S), ("bodyPreview", S), ("start", OBJ), ("end", OBJ), ("isAllDay", B), ("location", OBJ),
        ("organizer", OBJ), ("attendees", OBJ), ("showAs", E), ("importance", E), ("sensitivity", E),
        ("isCancelled", B), ("isOnlineMeeting", B), ("onlineMeeting", OBJ), ("categories", OBJ), ("webLink", S),
        ("createdDateTime", DT), ("lastModifiedDateTime", DT), ("seriesMasterId", S), ("type", E),
    ),
}  # fmt: skip


def microsoft_fields(client: Any, entity: str) -> list[FieldInfo]:
    return documented(entity, MICROSOFT_FIELDS[entity])


# (data client, entity) -> the entity's fields as the provider describes them now.
DISCOVERERS: dict[str, Callable[[Any, str], list[FieldInfo]]] = {
    "hubspot": hubspot_fields,
    "salesforce": salesforce_fields,
    "zoho": zoho_fields,
    "google": google_fields,
    "microsoft": microsoft_fields,
}


# -- refreshing the catalog -------------------------------------------------------------------------------------------

OpenClient = Callable[[str, str], AbstractContextManager[Any]]  # (provider, connection id) -> data client


class CatalogRefresher:
    """Discovery into the catalog: when people list the fields (gateway, CLI), at the start of a sync whose catalog
    is older than `INTEGRATIONS_CATALOG_MAX_AGE_S` (`is_stale`, `discover`), and daily on a schedule."""

    def __init__(self, store: StateStore, open_client: OpenClient) -> None:
        self.store = store
        self.catalog = FieldCatalog(store)
        self.open_client = open_client

    def _provider(self, connection_id: str) -> str:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            raise LookupError(f"no connection {connection_id!r}")
        return connection.provider

    def refresh(
        self, connection_id: str, entities: Iterable[str] = ENTITY_NAMES, now: datetime | None = None
    ) -> dict[str, CatalogChange]:
        """Discover the entities' fields now; raises the client's typed errors (ProviderError, NeedsReauth)."""
        provider = self._provider(connection_id)
        with self.open_client(provider, connection_id) as client:
            return self.discover(client, provider, connection_id, entities, now)

    def discover(
        self, client: Any, provider: str, connection_id: str, entities: Iterable[str], now: datetime | None = None
    ) -> dict[str, CatalogChange]:
        """Discover the entities' fields through a data client the caller holds open (a sync's own)."""
        found = {entity: DISCOVERERS[provider](client, entity) for entity in entities}
        return {entity: self.catalog.record(connection_id, entity, fields, now) for entity, fields in found.items()}

    def is_stale(self, connection_id: str, entity: str, max_age: timedelta, now: datetime | None = None) -> bool:
        """Never discovered, or discovered longer ago than `max_age`."""
        last = self.catalog.last_discovered_at(connection_id, entity)
        return last is None or (now or datetime.now(UTC)) - last >= max_age

    def refresh_stale(self, max_age: timedelta, now: datetime | None = None) -> dict[str, str]:
        """The scheduled refresh: every active connection whose catalog is older than `max_age` (or missing) is
        discovered again. One connection failing does not stop the others: the answer says, per connection
        refreshed, what changed or why it failed (a message without secrets)."""
        now = now or datetime.now(UTC)
        outcomes: dict[str, str] = {}
        for connection in self.store.list_connections(statuses=(ConnectionStatus.ACTIVE,)):
            ages = [self.catalog.last_discovered_at(connection.id, entity) for entity in ENTITY_NAMES]
            if all(at is not None and now - at < max_age for at in ages):
                continue
            try:
                changes = self.refresh(connection.id, now=now)
            except (ProviderError, SettingsError) as failure:
                outcomes[connection.id] = f"failed: {failure}"
                continue
            added = sum(len(change.added) for change in changes.values())
            removed = sum(len(change.removed) for change in changes.values())
            outcomes[connection.id] = f"{added} added, {removed} removed"
        return outcomes


# -- what mappings may read -----------------------------------------------------------------------------------------

_RECORDS: dict[str, Any] = {"users": UserRecord, "contacts": ContactRecord, "events": EventRecord}


def known_fields(provider: str) -> dict[str, frozenset[str]]:
    """The normalized columns of the provider's entity tables, which every mapping may name."""
    return {
        spec.entity: frozenset(spec.columns) - {"connection_id", RAW_COLUMN}
        for spec in ENTITY_SPECS
        if spec.provider == provider
    }


def _column_type(annotation: str) -> ValueType:
    if "datetime" in annotation:
        return ValueType.TIMESTAMP
    return ValueType.BOOLEAN if annotation == "bool" else ValueType.STRING


def mapping_sources(store: StateStore, tenant: str, provider: str) -> dict[str, SourceFields]:
    """Per entity, what a tenant's mapping for the provider may read: the normalized columns with their types, and
    the catalog of the tenant's connection (None for an entity nothing was discovered for yet). Validation takes
    it, and so does `mapping.apply_rules` to read catalog fields from the raw record."""
    every = FieldCatalog(store).fields(connection_id_for(tenant, provider), include_removed=True)
    sources = {}
    for entity, columns in known_fields(provider).items():
        mine = [f for f in every if f.entity == entity]
        annotations = _RECORDS[entity].__annotations__
        sources[entity] = SourceFields(
            columns={column: _column_type(str(annotations[column])) for column in columns},
            catalog={f.name: f for f in mine if f.removed_at is None} if mine else None,
            removed=frozenset(f.name for f in mine if f.removed_at is not None),
        )
    return sources
