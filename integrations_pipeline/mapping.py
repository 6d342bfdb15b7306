"""Per-tenant field mappings: which source field fills which extra column of the unified tables, with what
transform. Pure: validation, merging and applying take everything they need as arguments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
Entity = Literal["users", "contacts", "events"]
ENTITIES: tuple[Entity, ...] = ("users", "contacts", "events")


class Transform(StrEnum):
    NONE = "none"
    UPPERCASE = "uppercase"
    LOWERCASE = "lowercase"
    TRIM = "trim"


# For the gateway's OpenAPI document; validate_update checks the same pattern with its own messages.
IDENTIFIER_SCHEMA: JsonDict = {"pattern": IDENTIFIER.pattern}
TARGETS_SCHEMA: JsonDict = {"propertyNames": IDENTIFIER_SCHEMA, "description": "target column (an identifier) -> rule"}


class FieldRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="a field of the provider's records for this entity", json_schema_extra=IDENTIFIER_SCHEMA
    )
    transform: Transform = Transform.NONE


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


def validate_update(
    update: MappingUpdate,
    known_fields: Mapping[str, frozenset[str]],
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
            known = known_fields.get(entity, frozenset())
            if not IDENTIFIER.fullmatch(rule.source):
                problems[f"{path}.source"] = "source fields are identifiers"
            elif rule.source not in known:
                problems[f"{path}.source"] = (
                    f"{rule.source!r} is not a field of {provider} {entity}; known: {', '.join(sorted(known))}"
                )
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


def _transformed(values: pd.Series, transform: Transform) -> pd.Series:
    if transform == Transform.NONE:
        return values
    text = values.astype("string")
    result = {
        Transform.UPPERCASE: text.str.upper,
        Transform.LOWERCASE: text.str.lower,
        Transform.TRIM: text.str.strip,
    }[transform]()
    return result.astype(object).where(result.notna(), None)


def apply_rules(frame: pd.DataFrame, rules: Mapping[str, FieldRule]) -> pd.DataFrame:
    """`frame` plus one column per rule, in target-name order (values bound as data, never as SQL)."""
    extra = {target: _transformed(frame[rule.source], rule.transform) for target, rule in sorted(rules.items())}
    return frame.assign(**extra) if extra else frame
