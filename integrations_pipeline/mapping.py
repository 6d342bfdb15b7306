"""Per-tenant field mappings: which source field fills which extra column of the unified tables, with what
transform. Pure: validation, merging and applying take everything they need as arguments.

A rule's `source` is one of (first match wins):
- `raw.<path>`: a path into the record as the provider sent it (the `raw` column): dot-separated keys, a whole
  number indexes a list (`raw.properties.lead_score`, `raw.emailAddresses.0.value`);
- a normalized column of the provider's table (`email`, `first_name`, ...);
- a field of the connection's catalog (`lead_score`, `Lead_Score__c`, `Employment.costCenter`), custom fields
  included: its value is read from the raw record where the catalog says the provider puts it.

A transform turns the value into the target's type: `to_number`, `to_bool`, `to_timestamp`, `to_date` cast,
`uppercase`, `lowercase`, `trim` give text, `none` keeps the source's own type. A value that is missing (absent,
null, empty text) or that the cast cannot read becomes the rule's `default` (itself cast), else null.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.records import RAW_COLUMN

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Field names as providers spell them (HubSpot `lead_score`, Salesforce `Lead_Score__c`, Google `Schema.field`)
# and raw paths (`raw.properties.lead_score`): no spaces, quotes or SQL punctuation.
SOURCE = re.compile(r"^[A-Za-z0-9_$@][A-Za-z0-9_$@.:-]{0,254}$")
RAW_PREFIX = RAW_COLUMN + "."
Entity = Literal["users", "contacts", "events"]
ENTITIES: tuple[Entity, ...] = ("users", "contacts", "events")
SUGGESTIONS = 3


class Transform(StrEnum):
    NONE = "none"
    UPPERCASE = "uppercase"
    LOWERCASE = "lowercase"
    TRIM = "trim"
    TO_NUMBER = "to_number"
    TO_BOOL = "to_bool"
    TO_TIMESTAMP = "to_timestamp"
    TO_DATE = "to_date"


class ValueType(StrEnum):
    """The type a mapped column holds in the unified tables."""

    STRING = "string"
    NUMBER = "number"  # float64 / DOUBLE PRECISION
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"  # UTC
    DATE = "date"
    JSON = "json"  # a raw value kept as the provider sent it (no transform, type unknown)


Default = bool | int | float | str | None


# For the gateway's OpenAPI document; validate_update checks the same pattern with its own messages.
IDENTIFIER_SCHEMA: JsonDict = {"pattern": IDENTIFIER.pattern}
TARGETS_SCHEMA: JsonDict = {"propertyNames": IDENTIFIER_SCHEMA, "description": "target column (an identifier) -> rule"}


class FieldRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        max_length=255,
        description="a normalized column, a field of the connection's catalog, or `raw.<path>` into the raw record",
        json_schema_extra={"pattern": SOURCE.pattern},
    )
    transform: Transform = Transform.NONE
    default: Default = Field(default=None, description="the value (cast like the field) when the source is missing")


class ProviderMapping(BaseModel):
    """A tenant's rules for one provider: entity -> target column -> rule."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, FieldRule] = Field(default_factory=dict)
    contacts: dict[str, FieldRule] = Field(default_factory=dict)
    events: dict[str, FieldRule] = Field(default_factory=dict)

    def rules(self, entity: Entity) -> dict[str, FieldRule]:
        return dict(getattr(self, entity))


class MappingUpdate(BaseModel):
    """Changes merged into the stored mapping: a rule sets a target column, null removes it."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, FieldRule | None] = Field(default_factory=dict, json_schema_extra=TARGETS_SCHEMA)
    contacts: dict[str, FieldRule | None] = Field(default_factory=dict, json_schema_extra=TARGETS_SCHEMA)
    events: dict[str, FieldRule | None] = Field(default_factory=dict, json_schema_extra=TARGETS_SCHEMA)


# -- what a mapping may read ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFields:
    """What rules of one entity may name: the provider table's normalized columns with their types, and the
    connection's catalog (None when nothing was discovered yet, e.g. before the first connection)."""

    columns: Mapping[str, ValueType]
    catalog: Mapping[str, FieldInfo] | None = None
    removed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Source:
    """A rule's source, resolved: a normalized column, or a path into the raw record; with its catalog type."""

    column: str | None = None
    raw_path: tuple[str, ...] = ()
    field_type: FieldType | None = None  # None: unknown (a raw path), any cast may be tried
    value_type: ValueType = ValueType.JSON


_FIELD_VALUE_TYPES = {
    FieldType.NUMBER: ValueType.NUMBER,
    FieldType.BOOLEAN: ValueType.BOOLEAN,
    FieldType.DATETIME: ValueType.TIMESTAMP,
    FieldType.DATE: ValueType.DATE,
    FieldType.OBJECT: ValueType.JSON,
    FieldType.MULTI_ENUM: ValueType.JSON,
}


# A normalized column's kind, so that saving refuses a cast its values cannot satisfy (uppercase of a moment).
_COLUMN_FIELD_TYPES = {
    ValueType.STRING: FieldType.STRING,
    ValueType.BOOLEAN: FieldType.BOOLEAN,
    ValueType.TIMESTAMP: FieldType.DATETIME,
}


def resolve(source: str, fields: SourceFields | None) -> Source | None:
    """Where a rule's source is read from, or None when it names nothing known."""
    if source.startswith(RAW_PREFIX):
        return Source(raw_path=tuple(source[len(RAW_PREFIX) :].split(".")))
    if fields is None:
        return Source(column=source, value_type=ValueType.JSON)
    if source in fields.columns:
        value_type = fields.columns[source]
        return Source(column=source, field_type=_COLUMN_FIELD_TYPES.get(value_type), value_type=value_type)
    info = (fields.catalog or {}).get(source)
    if info is None:
        return None
    return Source(
        raw_path=tuple(info.path.split(".")),
        field_type=info.type,
        value_type=_FIELD_VALUE_TYPES.get(info.type, ValueType.STRING),
    )


# -- casts ------------------------------------------------------------------------------------------------------

# Texts to_bool reads, in Python here and in the unified write's SQL (warehouse.py).
TRUE_TEXTS = frozenset({"true", "yes", "y", "1", "on", "t"})
FALSE_TEXTS = frozenset({"false", "no", "n", "0", "off", "f"})
EPOCH_MILLISECONDS_FROM = 100_000_000_000  # numbers above this are epoch milliseconds (HubSpot), below seconds


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in TRUE_TEXTS else False if text in FALSE_TEXTS else None
    return None


def _to_timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif not isinstance(value, bool) and (number := _to_number(value)) is not None:
        seconds = number / 1000 if abs(number) >= EPOCH_MILLISECONDS_FROM else number
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _to_date(value: Any) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:  # a calendar date as it is, never shifted to UTC
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    moment = _to_timestamp(value)
    return moment.date() if moment is not None else None


def _text(convert: Callable[[str], str]) -> Callable[[Any], str | None]:
    def apply(value: Any) -> str | None:
        if isinstance(value, dict | list):
            return None
        if isinstance(value, bool):  # a raw JSON boolean reads as the provider wrote it, as SQL reads it
            return convert("true" if value else "false")
        return convert(value if isinstance(value, str) else str(value))

    return apply


_CASTS: dict[Transform, Callable[[Any], Any]] = {
    Transform.NONE: lambda value: value,
    Transform.UPPERCASE: _text(str.upper),
    Transform.LOWERCASE: _text(str.lower),
    Transform.TRIM: _text(str.strip),
    Transform.TO_NUMBER: _to_number,
    Transform.TO_BOOL: _to_bool,
    Transform.TO_TIMESTAMP: _to_timestamp,
    Transform.TO_DATE: _to_date,
}
_TEXTUAL = frozenset({FieldType.STRING, FieldType.ENUM, FieldType.MULTI_ENUM, FieldType.REFERENCE})
# Which catalog types each transform can read; a type missing here is refused when the mapping is saved.
CAST_ACCEPTS: dict[Transform, frozenset[FieldType]] = {
    Transform.NONE: frozenset(FieldType),
    Transform.UPPERCASE: _TEXTUAL,
    Transform.LOWERCASE: _TEXTUAL,
    Transform.TRIM: _TEXTUAL,
    Transform.TO_NUMBER: frozenset({FieldType.NUMBER, FieldType.STRING}),
    Transform.TO_BOOL: frozenset({FieldType.BOOLEAN, FieldType.NUMBER, FieldType.STRING}),
    Transform.TO_TIMESTAMP: frozenset({FieldType.DATETIME, FieldType.DATE, FieldType.NUMBER, FieldType.STRING}),
    Transform.TO_DATE: frozenset({FieldType.DATE, FieldType.DATETIME, FieldType.STRING}),
}
_TRANSFORM_TYPES = {
    Transform.UPPERCASE: ValueType.STRING,
    Transform.LOWERCASE: ValueType.STRING,
    Transform.TRIM: ValueType.STRING,
    Transform.TO_NUMBER: ValueType.NUMBER,
    Transform.TO_BOOL: ValueType.BOOLEAN,
    Transform.TO_TIMESTAMP: ValueType.TIMESTAMP,
    Transform.TO_DATE: ValueType.DATE,
}


def cast(value: Any, transform: Transform) -> Any:
    """The value transformed, or None when it is missing or the cast cannot read it."""
    return None if is_missing(value) else _CASTS[transform](value)


def output_type(rule: FieldRule, fields: SourceFields | None) -> ValueType:
    """The type the rule's target column holds: the cast's, else the source's own."""
    if rule.transform in _TRANSFORM_TYPES:
        return _TRANSFORM_TYPES[rule.transform]
    source = resolve(rule.source, fields)
    return source.value_type if source is not None else ValueType.JSON


def target_types(rules: Mapping[str, FieldRule], fields: SourceFields | None) -> dict[str, ValueType]:
    """Each target column's type, so a unified table can keep a tenant's columns typed."""
    return {target: output_type(rule, fields) for target, rule in sorted(rules.items())}


# -- validation ---------------------------------------------------------------------------------------------------


def _unknown_source(source: str, fields: SourceFields, provider: str, entity: str) -> str:
    if source in fields.removed:
        return f"{source!r} was removed from {provider} {entity} at the provider; it is no longer synced"
    known = [*fields.columns, *(fields.catalog or {})]
    by_folded = {name.lower(): name for name in known}
    close = [by_folded[name] for name in difflib.get_close_matches(source.lower(), by_folded, n=SUGGESTIONS)]
    message = f"{source!r} is not a field of {provider} {entity}"
    if close:
        message += f"; did you mean {' or '.join(repr(name) for name in close)}?"
    else:
        message += f"; known: {', '.join(sorted(known)[:20])}{', ...' if len(known) > 20 else ''}"
    if fields.catalog is None:
        message += " (no field catalog yet: connect the provider first, or name a raw path such as raw.<field>)"
    return message


def _rule_problems(rule: FieldRule, fields: SourceFields, provider: str, entity: str) -> str | None:
    if not SOURCE.match(rule.source) or (
        rule.source.startswith(RAW_PREFIX) and not all(rule.source[len(RAW_PREFIX) :].split("."))
    ):
        return "a source is a field name or raw.<key>.<key>...: letters, digits, _ $ @ : - and dots, no spaces"
    source = resolve(rule.source, fields)
    if source is None:
        return _unknown_source(rule.source, fields, provider, entity)
    if source.field_type is not None and source.field_type not in CAST_ACCEPTS[rule.transform]:
        return (
            f"{rule.transform.value} cannot read {rule.source!r}, a {source.field_type.value} field; "
            f"use one of: {', '.join(t.value for t in Transform if source.field_type in CAST_ACCEPTS[t])}"
        )
    untyped_default = rule.default is not None and rule.transform == Transform.NONE
    if untyped_default and source.field_type is not None and source.field_type not in _TEXTUAL:
        return (
            f"a default for {rule.source!r}, a {source.field_type.value} field, needs a cast that gives it that type "
            f"(to_number, to_bool, to_timestamp or to_date)"
        )
    if rule.default is not None and cast(rule.default, rule.transform) is None:
        return f"the default {rule.default!r} cannot be read by {rule.transform.value}"
    return None


def validate_update(
    update: MappingUpdate,
    sources: Mapping[str, SourceFields],
    reserved_columns: Mapping[str, frozenset[str]],
    provider: str,
) -> dict[str, str]:
    """Problems by field path (`contacts.full_name.source`); empty when the update can be saved."""
    problems: dict[str, str] = {}
    for entity in ENTITIES:
        for target, rule in getattr(update, entity).items():
            path = f"{entity}.{target}"
            if not IDENTIFIER.fullmatch(target):
                problems[path] = "target columns are identifiers: a letter or _, then letters, digits or _ (max 63)"
            elif target in reserved_columns.get(entity, frozenset()):
                problems[path] = f"{target!r} is a standard column of the unified {entity} table; choose another name"
            if rule is None:
                continue
            problem = _rule_problems(rule, sources.get(entity, SourceFields(columns={})), provider, entity)
            if problem is not None:
                problems[f"{path}.source"] = problem
    return problems


def merge(existing: ProviderMapping, update: MappingUpdate) -> ProviderMapping:
    merged = {entity: existing.rules(entity) for entity in ENTITIES}
    for entity in ENTITIES:
        for target, rule in getattr(update, entity).items():
            if rule is None:
                merged[entity].pop(target, None)
            else:
                merged[entity][target] = rule
    return ProviderMapping(**merged)


# -- applying -----------------------------------------------------------------------------------------------------


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _as_record(raw: Any) -> Any:
    """The raw column holds a JSON object (a dict, or its text as some warehouses return it)."""
    if isinstance(raw, str | bytes):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


def mapped_value(record: Mapping[str, Any], rule: FieldRule, fields: SourceFields | None = None) -> Any:
    """One rule applied to one record (normalized columns plus `raw`): a typed value, the default, or None."""
    source = resolve(rule.source, fields)
    if source is None:
        value = None
    elif source.column is not None:
        value = record.get(source.column)
    else:
        value = _walk(_as_record(record.get(RAW_COLUMN)), source.raw_path)
    result = cast(value, rule.transform)
    return cast(rule.default, rule.transform) if result is None and rule.default is not None else result


def apply_to_record(
    record: Mapping[str, Any], rules: Mapping[str, FieldRule], fields: SourceFields | None = None
) -> dict[str, Any]:
    return {target: mapped_value(record, rule, fields) for target, rule in sorted(rules.items())}


def apply_rules(
    frame: pd.DataFrame, rules: Mapping[str, FieldRule], fields: SourceFields | None = None
) -> pd.DataFrame:
    """`frame` plus one column per rule, in target-name order, holding typed Python values (float, bool,
    datetime, date, str; None when missing). `fields` resolves catalog names to raw paths; without it a source is
    a column of the frame or a raw path. Values are bound as data, never as SQL."""
    if not rules:
        return frame
    records = frame.to_dict("records")
    extra = {
        target: pd.Series([mapped_value(record, rule, fields) for record in records], index=frame.index, dtype=object)
        for target, rule in sorted(rules.items())
    }
    return frame.assign(**extra)


@dataclass(frozen=True)
class PlannedRule:
    """One rule resolved for a writer that renders mappings in SQL: read `column`, else the `raw` JSON at
    `raw_path` (neither: the source names nothing known, so NULL), then cast with `transform`, then `default`."""

    target: str
    column: str | None
    raw_path: tuple[str, ...]
    transform: Transform
    default: Default
    output: ValueType


def plan(rules: Mapping[str, FieldRule], fields: SourceFields | None = None) -> list[PlannedRule]:
    """The rules in target order, each with what to read and the type it lands as (`cast`'s semantics hold)."""
    planned = []
    for target, rule in sorted(rules.items()):
        source = resolve(rule.source, fields)
        planned.append(
            PlannedRule(
                target=target,
                column=source.column if source is not None else None,
                raw_path=source.raw_path if source is not None else (),
                transform=rule.transform,
                default=cast(rule.default, rule.transform) if rule.default is not None else None,
                output=output_type(rule, fields),
            )
        )
    return planned
