"""Google Directory custom schemas for the sandbox: `GET /admin/directory/v1/customer/{customer}/schemas` in the
real response shape, and `add_field` / `remove_field` for tests of schema evolution.

A schema groups custom user fields (`Employment.costCenter`); users read with `projection=full` carry their values
under `customSchemas.{schemaName}.{fieldName}`. Listing schemas needs the userschema scope, not the user one.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from integrations_pipeline.sandbox.common import json_response

SCHEMA_SCOPES = frozenset(
    (
        "https://www.googleapis.com/auth/admin.directory.userschema.readonly",
        "https://www.googleapis.com/auth/admin.directory.userschema",
    )
)
# (schemaName, fieldName, fieldType, multiValued) of a new sandbox customer.
CUSTOM_FIELDS = (
    ("Employment", "costCenter", "STRING", False),
    ("Employment", "employeeLevel", "INT64", False),
    ("Employment", "startDate", "DATE", False),
    ("Employment", "isContractor", "BOOL", False),
    ("Skills", "languages", "STRING", True),
)


@dataclass(frozen=True)
class _Field:
    schema: str
    name: str
    type: str
    multi_valued: bool

    def render(self) -> dict[str, Any]:
        return {
            "kind": "admin#directory#schema#fieldspec",
            "fieldId": _id(f"{self.schema}.{self.name}"),
            "etag": _etag(f"{self.schema}.{self.name}.{self.type}"),
            "fieldType": self.type,
            "fieldName": self.name,
            "displayName": self.name[:1].upper() + self.name[1:],
            "multiValued": self.multi_valued,
            "readAccessType": "ADMINS_AND_SELF",
            "indexed": True,
        }


def _id(text: str) -> str:
    return format(zlib.crc32(text.encode()), "x").rjust(8, "0") + "AAAAAA=="


def _etag(text: str) -> str:
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:27] + '"'


class GoogleSchemas:
    """The customer's custom schemas; thread-safe under the emulator's lock."""

    def __init__(self, lock: threading.RLock, customer_ids: frozenset[str]) -> None:
        self._lock = lock
        self._customer_ids = customer_ids
        self._fields: dict[tuple[str, str], _Field] = {
            (schema, name): _Field(schema, name, kind, multi) for schema, name, kind, multi in CUSTOM_FIELDS
        }

    def add_field(self, schema: str, name: str, field_type: str = "STRING", *, multi_valued: bool = False) -> None:
        with self._lock:
            self._fields[(schema, name)] = _Field(schema, name, field_type, multi_valued)

    def remove_field(self, schema: str, name: str) -> None:
        with self._lock:
            del self._fields[(schema, name)]

    def sample_values(self, user_id: str) -> dict[str, dict[str, Any]]:
        """A user's custom schema values as `projection=full` returns them: `{schema: {field: value}}`, numbers as
        text (INT64 is a string on the wire), multi-valued fields as `[{"value": ...}]`. Deterministic per user."""
        number = zlib.crc32(user_id.encode())
        values: dict[str, dict[str, Any]] = {}
        with self._lock:
            for spec in self._fields.values():
                value = _sample_value(spec.type, number)
                values.setdefault(spec.schema, {})[spec.name] = [{"value": value}] if spec.multi_valued else value
        return values

    async def list_schemas(self, request: Request) -> Response:
        if request.path_params["customer"] not in self._customer_ids:
            error = {"code": 404, "message": "Resource Not Found: customer", "status": "NOT_FOUND"}
            return json_response({"error": {**error, "errors": [{"reason": "notFound"}]}}, 404)
        with self._lock:
            by_schema: dict[str, list[_Field]] = {}
            for spec in self._fields.values():
                by_schema.setdefault(spec.schema, []).append(spec)
            schemas = [
                {
                    "kind": "admin#directory#schema",
                    "schemaId": _id(name),
                    "etag": _etag(name + "".join(f.name for f in fields)),
                    "schemaName": name,
                    "displayName": name,
                    "fields": [f.render() for f in fields],
                }
                for name, fields in sorted(by_schema.items())
            ]
        return json_response({"kind": "admin#directory#schemas", "etag": _etag(str(schemas)), "schemas": schemas})


def _sample_value(field_type: str, number: int) -> Any:
    if field_type in ("INT64", "DOUBLE"):
        return str(number % 9 + 1)
    if field_type == "BOOL":
        return number % 4 == 0
    if field_type == "DATE":
        return f"20{18 + number % 8}-{1 + number % 12:02d}-{1 + number % 28:02d}"
    return ("CC-100", "CC-200", "CC-300", "en", "fr", "de")[number % 6]
