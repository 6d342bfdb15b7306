"""HubSpot's Properties API for the sandbox: `GET /crm/v3/properties/{objectType}` in the real response shape, the
portal's custom properties beside HubSpot's own, and `add` / `archive` for tests of schema evolution.

HubSpot marks its own properties `hubspotDefined: true`; an account's custom properties carry no such flag and
have no `hs_` prefix. Archived properties are listed only with `archived=true`, as the real API does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from integrations_pipeline.sandbox.common import Clock, json_response, new_correlation_id

# (name, type, fieldType, options) of each object's custom properties in a new sandbox portal.
CUSTOM_PROPERTIES: dict[str, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    "contacts": (
        ("lead_score", "number", "number", ()),
        ("is_partner", "bool", "booleancheckbox", ("true", "false")),
        ("preferred_channel", "enumeration", "select", ("email", "phone", "chat")),
        ("industries_of_interest", "enumeration", "checkbox", ("saas", "retail", "health")),
        ("renewal_date", "date", "date", ()),
    ),
    "meetings": (("meeting_source", "enumeration", "select", ("website", "referral", "event")),),
}
SAMPLE_PERIOD = 8_400  # a multiple of every period in _sample_value (100, 5, 12 x 28, option counts 2 and 3)
ENUMERATED = {"lifecyclestage": "radio", "hs_meeting_outcome": "select", "hubspot_owner_id": "select"}


def _standard_kind(name: str) -> tuple[str, str]:
    if name in ENUMERATED:
        return "enumeration", ENUMERATED[name]
    if name == "hs_object_id":
        return "number", "number"
    if name.endswith(("date", "_time", "timestamp")):
        return "datetime", "date"
    return "string", "text"


@dataclass
class _Property:
    name: str
    type: str
    field_type: str
    hubspot_defined: bool
    created_at: str
    options: tuple[str, ...] = ()
    archived_at: str | None = None
    label: str = field(default="")

    def render(self, display_order: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "updatedAt": self.archived_at or self.created_at,
            "createdAt": self.created_at,
            "name": self.name,
            "label": self.label or self.name.replace("_", " ").title(),
            "type": self.type,
            "fieldType": self.field_type,
            "description": "",
            "groupName": "contactinformation" if self.hubspot_defined else "custom_properties",
            "options": [
                {"label": value.title(), "value": value, "displayOrder": index, "hidden": False}
                for index, value in enumerate(self.options)
            ],
            "displayOrder": display_order,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": self.name == "email",
            "hidden": False,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.name in ("hs_object_id", "createdate", "lastmodifieddate"),
            },
            "formField": not self.hubspot_defined,
            "dataSensitivity": "non_sensitive",
            "archived": self.archived_at is not None,
        }
        if self.hubspot_defined:
            body["hubspotDefined"] = True
        if self.archived_at is not None:
            body["archivedAt"] = self.archived_at
        return body


class HubSpotProperties:
    """Property definitions per object type; thread-safe under the emulator's lock."""

    def __init__(
        self,
        lock: threading.RLock,
        clock: Clock,
        standard: Mapping[str, Iterable[str]],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self._on_change = on_change  # the emulator widens or narrows what records carry
        created = "2019-08-06T02:41:52.594Z"
        self._by_object: dict[str, dict[str, _Property]] = {
            object_type: {
                name: _Property(name, *_standard_kind(name), hubspot_defined=True, created_at=created)
                for name in sorted(names)
            }
            for object_type, names in standard.items()
        }
        for object_type, customs in CUSTOM_PROPERTIES.items():
            for name, kind, field_type, options in customs:
                self._by_object[object_type][name] = _Property(
                    name, kind, field_type, hubspot_defined=False, created_at=created, options=options
                )

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add(
        self,
        object_type: str,
        name: str,
        *,
        type: str = "string",
        field_type: str = "text",
        label: str = "",
        options: tuple[str, ...] = (),
    ) -> None:
        """Create (or un-archive) a custom property, as a portal admin would in HubSpot's settings."""
        with self._lock:
            self._by_object[object_type][name] = _Property(
                name, type, field_type, hubspot_defined=False, created_at=self._now(), options=options, label=label
            )
            self._on_change()

    def archive(self, object_type: str, name: str) -> None:
        """Archive (HubSpot's delete) a custom property: it leaves the default listing."""
        with self._lock:
            prop = self._by_object[object_type][name]
            if prop.hubspot_defined:
                raise ValueError(f"{name!r} is defined by HubSpot and cannot be archived")
            prop.archived_at = self._now()
            self._on_change()

    def custom_names(self, object_type: str) -> list[str]:
        with self._lock:
            properties = self._by_object[object_type].values()
            return [p.name for p in properties if not p.hubspot_defined and p.archived_at is None]

    def fill_sample_values(self, object_type: str, rows: Iterable[Any]) -> None:
        """Deterministic values of the object's custom properties on generated records (`row.id`, `row.values`), in
        HubSpot's wire format: numbers and dates as text, booleans `true`/`false`, checkboxes `;`-separated. Values
        repeat every SAMPLE_PERIOD ids, so a table of that many dicts fills 100,000 records in a blink."""
        with self._lock:
            customs = [p for p in self._by_object[object_type].values() if not p.hubspot_defined]
        table = [{prop.name: _sample_value(prop, number) for prop in customs} for number in range(SAMPLE_PERIOD)]
        for row in rows:
            row.values.update(table[row.id % SAMPLE_PERIOD])

    async def list_properties(self, request: Request) -> Response:
        object_type = request.path_params["object_type"]
        archived = request.query_params.get("archived", "false").lower() == "true"
        with self._lock:
            properties = self._by_object.get(object_type)
            if properties is None:
                message = f"Unable to infer object type from: {object_type}"
                error = {"status": "error", "message": message, "correlationId": new_correlation_id()}
                return json_response({**error, "category": "VALIDATION_ERROR"}, 400)
            results = [
                prop.render(index)
                for index, prop in enumerate(properties.values())
                if (prop.archived_at is not None) == archived
            ]
        return json_response({"results": results})


def _sample_value(prop: _Property, object_id: int) -> str:
    if prop.type == "number":
        return str(object_id * 37 % 100)
    if prop.type == "bool":
        return "true" if object_id % 5 == 0 else "false"
    if prop.type == "date":
        return f"2027-{1 + object_id % 12:02d}-{1 + object_id % 28:02d}"
    if prop.field_type == "checkbox":
        return ";".join(prop.options[: 1 + object_id % 2])
    return prop.options[object_id % len(prop.options)] if prop.options else f"{prop.name} {object_id}"
