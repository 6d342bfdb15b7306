"""What a provider field is, in one vocabulary for every provider: the field catalog stores these, the discovery
code in clients/catalog.py produces them, and mappings check their casts against them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    """A field's kind, coarse enough to decide which casts can succeed. The provider's own type name is kept
    beside it (`FieldInfo.provider_type`) for people."""

    STRING = "string"  # text, email, phone, url, textarea, picklists of free text
    NUMBER = "number"  # integer, double, currency, percent
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    DATE = "date"
    ENUM = "enum"  # one value out of a list of options
    MULTI_ENUM = "multi_enum"  # several values out of a list of options
    REFERENCE = "reference"  # the id of another record (owner, account, lookup)
    OBJECT = "object"  # a nested structure (addresses, lists of emails)


@dataclass(frozen=True)
class FieldInfo:
    """One field of one entity as a provider describes it.

    `name` is what people write in a mapping and what a connector requests; `raw_path` is where the value sits in
    the record as the provider sends it (HubSpot nests properties: `properties.lead_score`; Google custom schemas:
    `customSchemas.Employment.costCenter`; most fields sit at the top: `Lead_Score__c`)."""

    entity: str
    name: str
    label: str
    type: FieldType
    provider_type: str
    is_custom: bool = False
    raw_path: str = ""

    @property
    def path(self) -> str:
        return self.raw_path or self.name
