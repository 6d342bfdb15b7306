"""A HubSpot CRM v3 sandbox: OAuth, owners, contacts and meetings (CRUD, list paging, search) and rate limits,
served over real HTTP.

Behaviour follows HubSpot's public API documentation closely enough that the official Python SDK
(`hubspot-api-client`) and our connector can both run against it unchanged. Data is generated from a seed, so
the same `seed` and sizes always give the same ids, properties and timestamps.

Contacts and meetings are both CRM objects with the same list, search, write, batch read and archive semantics: one
`_ObjectStore` serves each, described by an `_ObjectSchema` (its properties and which of them hold the create and
modify stamps). Owners are read-only in HubSpot's API and live in a plain list. Meetings are associated with the
contacts who attend them, read through the v4 associations batch API (`_Associations`).

Performance matters because benchmarks page through 100,000 contacts: rows are generated with a handful of
bulk random draws, live and archived ids are kept in sorted lists so a page is one bisect plus a slice, JSON is
only built for the page being served, a search's ordered match list is cached until the next mutation, and a
search from a modified stamp (every incremental read) looks only at the rows modified since, as HubSpot's index does.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import random
import threading
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import (
    COMPANIES,
    FIRST_NAMES,
    JOB_TITLES,
    LAST_NAMES,
    AccessStatus,
    Clock,
    DailyQuota,
    FaultQueue,
    ForcedFault,
    OAuthAuthorizationServer,
    OAuthError,
    OAuthErrorKind,
    RequestLogMiddleware,
    RequestRecord,
    SlidingWindowRateLimiter,
    events_first_day,
    json_response,
    new_correlation_id,
    read_form,
    synchronized,
    with_consent_page,
)
from integrations_pipeline.sandbox.hubspot_properties import HubSpotProperties
from integrations_pipeline.sandbox.hubspot_push import HubSpotPush, developer_api_key_for

__all__ = ["HubSpotEmulator", "RequestRecord"]

# --- HubSpot facts -------------------------------------------------------------------------------------------------

LIST_PAGE_DEFAULT = 10
LIST_PAGE_MAX = 100
SEARCH_PAGE_DEFAULT = 10
SEARCH_PAGE_MAX = 200
SEARCH_RESULT_CAP = 10_000
"""Search can never page past the 10,000th match; clients must narrow the filter (split the window) instead."""
SEARCH_MAX_FILTER_GROUPS = 5
SEARCH_MAX_FILTERS_PER_GROUP = 6
SEARCH_MAX_FILTERS_TOTAL = 18
OWNER_PAGE_DEFAULT = 100
OWNER_PAGE_MAX = 500
BURST_WINDOW_S = 10
SEARCH_LIMIT_PER_S = 5
MAX_URI_BYTES = 16_384
"""A CRM request whose URI is longer is refused with 414 before anything else (HubSpot's edge does so near 16 KB)."""
BATCH_READ_MAX = 100
"""Inputs per `POST /crm/v3/objects/{type}/batch/read`."""
ASSOCIATIONS_BATCH_MAX = 1_000
"""Inputs per `POST /crm/v4/associations/{from}/{to}/batch/read` (HubSpot's limit since February 2025)."""
ASSOCIATIONS_PAGE = 500
"""Associated ids per input and response; the rest follow through that input's `paging.next.after`."""
MEETING_TO_CONTACT = {"category": "HUBSPOT_DEFINED", "typeId": 200, "label": None}
CONTACT_TO_MEETING = {"category": "HUBSPOT_DEFINED", "typeId": 199, "label": None}
"""The CRM search endpoints' own limit: 5 requests per second per account. Search is exempt from the 10-second burst
window (HubSpot's OpenAPI specs mark it `x-hubspot-rate-limit-exemptions: ten-secondly`) but counts toward the day."""
# HubSpot's docs list the contacts scopes for the meetings API too (meetings are engagements on contacts).
READ_SCOPE = "crm.objects.contacts.read"
WRITE_SCOPE = "crm.objects.contacts.write"
OWNERS_SCOPE = "crm.objects.owners.read"
SANDBOX_USER = "sandbox@example.com"
SANDBOX_USER_ID = 1_000_001
DELETED_RECORD_RETENTION = timedelta(days=90)
"""Archived (deleted) records can be restored for 90 days; after that HubSpot purges them for good."""

STRING_PROPERTIES = ("firstname", "lastname", "email", "phone", "company", "jobtitle", "lifecyclestage")
DATETIME_PROPERTIES = ("createdate", "lastmodifieddate")
CONTACT_PROPERTIES = frozenset((*STRING_PROPERTIES, *DATETIME_PROPERTIES, "hs_object_id"))
READ_ONLY_PROPERTIES = frozenset(("hs_object_id", "createdate", "lastmodifieddate"))
DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
ALWAYS_RETURNED_PROPERTIES = ("createdate", "hs_object_id", "lastmodifieddate")
"""HubSpot adds these to every record even when the caller asked for other properties."""
QUERY_SEARCHED_PROPERTIES = ("firstname", "lastname", "email", "phone", "company")

MEETING_STRING_PROPERTIES = (
    "hs_meeting_title",
    "hs_meeting_body",
    "hs_meeting_location",
    "hs_meeting_outcome",
    "hubspot_owner_id",
    "hs_attendee_owner_ids",  # the owners attending, semicolon-separated as HubSpot's multi-value properties are
)
MEETING_INSTANT_PROPERTIES = ("hs_meeting_start_time", "hs_meeting_end_time", "hs_timestamp")
"""Datetime properties a caller may write (epoch milliseconds or ISO 8601); returned as ISO 8601."""
MEETING_DEFAULT_PROPERTIES = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")
MEETING_OUTCOMES = ("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED")

SUPPORTED_OPERATORS = frozenset(
    ("EQ", "NEQ", "GT", "GTE", "LT", "LTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
)


@dataclass(frozen=True)
class _ObjectSchema:
    """What differs between CRM object types: property names, the stamps' names, defaults, uniqueness."""

    name: str  # the path segment: contacts | meetings
    string_properties: tuple[str, ...]
    instant_properties: tuple[str, ...]
    created_property: str
    modified_property: str
    default_properties: tuple[str, ...]
    query_searched_properties: tuple[str, ...]
    unique_email: bool = False
    # A create must set one of these (meetings need hs_timestamp, which defaults to the start time).
    create_requires_one_of: tuple[str, ...] = ()
    properties: frozenset[str] = field(init=False)
    read_only_properties: frozenset[str] = field(init=False)
    always_returned_properties: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        stamps = ("hs_object_id", self.created_property, self.modified_property)
        everything = frozenset((*self.string_properties, *self.instant_properties, *stamps))
        object.__setattr__(self, "properties", everything)
        object.__setattr__(self, "read_only_properties", frozenset(stamps))
        object.__setattr__(self, "always_returned_properties", tuple(sorted(stamps)))

    def is_numeric(self, name: str) -> bool:
        return name in self.instant_properties or name in (
            self.created_property,
            self.modified_property,
            "hs_object_id",
        )


CONTACTS = _ObjectSchema(
    name="contacts",
    string_properties=STRING_PROPERTIES,
    instant_properties=(),
    created_property="createdate",
    modified_property="lastmodifieddate",
    default_properties=DEFAULT_PROPERTIES,
    query_searched_properties=QUERY_SEARCHED_PROPERTIES,
    unique_email=True,
)
MEETINGS = _ObjectSchema(
    name="meetings",
    string_properties=MEETING_STRING_PROPERTIES,
    instant_properties=MEETING_INSTANT_PROPERTIES,
    created_property="hs_createdate",
    modified_property="hs_lastmodifieddate",
    default_properties=MEETING_DEFAULT_PROPERTIES,
    query_searched_properties=("hs_meeting_title", "hs_meeting_body", "hs_meeting_location"),
    create_requires_one_of=("hs_timestamp", "hs_meeting_start_time"),
)

# --- deterministic data --------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
CREATED_FROM_MS = (datetime(2025, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
CREATED_UNTIL_MS = (datetime(2026, 6, 1, tzinfo=UTC) - _EPOCH) // _MS
MODIFIED_UNTIL_MS = (datetime(2026, 9, 1, tzinfo=UTC) - _EPOCH) // _MS
MEETINGS_FROM_MS = CREATED_FROM_MS
MEETINGS_UNTIL_MS = (datetime(2027, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
LIVE_MEETING_DAYS = 90
"""Given `events_around`, meetings start within this many days centred on that day instead of across 2025-2026."""
MEETING_IDS_FROM = 80_000_000_001
"""Meeting ids live in their own range, as HubSpot's do, so a contact id is never mistaken for a meeting id."""
OWNER_IDS_FROM = 40_000_001
USER_IDS_FROM = 9_500_001
DAY_MS = 86_400_000

LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist",
    "other",
)  # fmt: skip
MEETING_TOPICS = (
    "Discovery call", "Product demo", "Quarterly review", "Onboarding", "Pricing discussion", "Renewal check-in",
    "Technical deep dive", "Kick-off", "Contract review", "Executive briefing",
)  # fmt: skip
MEETING_LOCATIONS = ("Zoom", "Google Meet", "Microsoft Teams", "Head office", "Customer site", "Phone", "")
MEETING_MINUTES = (15, 30, 30, 45, 60, 60, 90, 120)
TEAMS = ("Sales", "Customer Success", "Marketing")


def _iso_from_ms(epoch_ms: int) -> str:
    """HubSpot's timestamp format: ISO 8601 UTC with milliseconds and a `Z`."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _parse_instant_ms(value: str) -> int:
    """A filter value for a datetime property: epoch milliseconds or ISO 8601 (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MS


@dataclass(slots=True)
class _ObjectRow:
    """One contact or meeting; which property names hold the stamps is the schema's business."""

    id: int
    values: dict[str, str]
    """String properties only; stamps and hs_object_id are derived from the fields below."""
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    instants: dict[str, int] | None = None
    """Writable datetime properties (meetings' start and end), in epoch milliseconds."""

    def property_value(self, schema: _ObjectSchema, name: str) -> str | None:
        if name == "hs_object_id":
            return str(self.id)
        if name == schema.created_property:
            return _iso_from_ms(self.created_ms)
        if name == schema.modified_property:
            return _iso_from_ms(self.updated_ms)
        if name in schema.instant_properties:
            instant = self.instants.get(name) if self.instants else None
            return _iso_from_ms(instant) if instant is not None else None
        value = self.values.get(name)
        return value if value != "" else None

    def number(self, schema: _ObjectSchema, name: str) -> int | None:
        """The value of a numeric property (a stamp, an instant or the id) for filters and sorts."""
        if name == schema.created_property:
            return self.created_ms
        if name == schema.modified_property:
            return self.updated_ms
        if name == "hs_object_id":
            return self.id
        return self.instants.get(name) if self.instants else None


_ContactRow = _ObjectRow  # the name this class had when contacts were the only object type


def _generate_contacts(count: int, seed: int) -> list[_ObjectRow]:
    """`count` contacts with ids "1".."count": createdate rises with the id, lastmodifieddate follows it.

    A few bulk draws and one comprehension keep 100,000 contacts well under half a second.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
    first_names = rng.choices(FIRST_NAMES, k=count)
    last_names = rng.choices(LAST_NAMES, k=count)
    companies = rng.choices(COMPANIES, k=count)
    job_titles = rng.choices(JOB_TITLES, k=count)
    stages = rng.choices(LIFECYCLE_STAGES, k=count)
    created_span = CREATED_UNTIL_MS - CREATED_FROM_MS
    slot_ms = max(created_span // max(count, 1), 1)
    draw = rng.random
    created = [CREATED_FROM_MS + index * created_span // count + int(draw() * slot_ms) for index in range(count)]
    updated = [created_ms + int(draw() * (MODIFIED_UNTIL_MS - created_ms)) for created_ms in created]
    lowercase = {name: name.lower() for name in (*FIRST_NAMES, *LAST_NAMES)}
    domain = {company: company.split()[0].lower() + ".example" for company in COMPANIES}
    return [
        _ObjectRow(
            contact_id,
            {
                "firstname": first,
                "lastname": last,
                "email": f"{lowercase[first]}.{lowercase[last]}.{contact_id}@{domain[company]}",
                "phone": f"+1 555 {contact_id // 10_000 % 1_000:03d} {contact_id % 10_000:04d}",
                "company": company,
                "jobtitle": job_title,
                "lifecyclestage": stage,
            },
            created_ms,
            updated_ms,
        )
        for contact_id, first, last, company, job_title, stage, created_ms, updated_ms in zip(
            range(1, count + 1), first_names, last_names, companies, job_titles, stages, created, updated, strict=True
        )
    ]


@dataclass(slots=True)
class _OwnerRow:
    id: int
    user_id: int
    email: str
    first_name: str
    last_name: str
    team: str
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None

    def render(self) -> dict[str, Any]:
        """HubSpot's owner shape; a deactivated (archived) user keeps only userIdIncludingInactive."""
        return {
            "id": str(self.id),
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id if self.archived_ms is None else None,
            "userIdIncludingInactive": self.user_id,
            "createdAt": _iso_from_ms(self.created_ms),
            "updatedAt": _iso_from_ms(self.updated_ms),
            "archived": self.archived_ms is not None,
            "teams": [{"id": str(TEAMS.index(self.team) + 1), "name": self.team, "primary": True}],
        }


def _generate_owners(count: int, seed: int) -> list[_OwnerRow]:
    rng = random.Random(seed * 7_919 + 1)  # noqa: S311 - reproducible sample data, not security
    owners = []
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        created_ms = CREATED_FROM_MS - DAY_MS * 30 + int(rng.random() * (CREATED_UNTIL_MS - CREATED_FROM_MS))
        updated_ms = created_ms + int(rng.random() * (MODIFIED_UNTIL_MS - created_ms))
        owners.append(
            _OwnerRow(
                id=OWNER_IDS_FROM + index,
                user_id=USER_IDS_FROM + index,
                email=f"{first.lower()}.{last.lower()}.{index + 1}@sandbox-portal.example",
                first_name=first,
                last_name=last,
                team=TEAMS[index % len(TEAMS)],
                created_ms=created_ms,
                updated_ms=updated_ms,
            )
        )
    return owners


def _attendee_owner_ids(meeting_id: int, owner_ids: list[int]) -> str:
    """0..2 attending owners from a hash of the meeting id: deterministic, and drawn from no seeded random stream,
    so the rest of the generated data is as it was."""
    digest = hashlib.sha256(f"attendees-{meeting_id}".encode()).digest()
    chosen = {owner_ids[byte % len(owner_ids)] for byte in digest[1 : 1 + digest[0] % 3]} if owner_ids else set()
    return ";".join(str(owner_id) for owner_id in sorted(chosen))


def _associated_contact_ids(meeting_id: int, contact_count: int) -> list[int]:
    """0..3 contacts attending a meeting, from a hash of its id (as for the attending owners)."""
    digest = hashlib.sha256(f"contacts-{meeting_id}".encode()).digest()
    chosen = {1 + int.from_bytes(digest[1 + 4 * n : 5 + 4 * n], "big") % contact_count for n in range(digest[0] % 4)}
    return sorted(chosen) if contact_count else []


def _generate_meetings(count: int, seed: int, owner_ids: list[int], around: date | None) -> list[_ObjectRow]:
    """`count` meetings starting across 2025-2026, or around `around` (ids roughly follow the start), one in twenty
    a whole UTC day from midnight; created up to three weeks before the start, modified since, never after
    MODIFIED_UNTIL_MS."""
    rng = random.Random(seed * 104_729 + 2)  # noqa: S311 - reproducible sample data, not security
    meetings_from_ms, span = MEETINGS_FROM_MS, MEETINGS_UNTIL_MS - MEETINGS_FROM_MS
    if around is not None:
        first_day = events_first_day(around, LIVE_MEETING_DAYS, around)
        meetings_from_ms = (datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC) - _EPOCH) // _MS
        span = LIVE_MEETING_DAYS * DAY_MS
    meetings = []
    for index in range(count):
        start_ms = meetings_from_ms + index * span // max(count, 1) + int(rng.random() * span // max(count, 1))
        start_ms -= start_ms % (15 * 60_000)  # meetings start on a quarter hour
        if rng.random() < 0.05:
            start_ms -= start_ms % DAY_MS  # all-day-like: midnight to midnight UTC
            end_ms = start_ms + DAY_MS
        else:
            end_ms = start_ms + rng.choice(MEETING_MINUTES) * 60_000
        created_ms = min(start_ms - int(rng.random() * 21 * DAY_MS), MODIFIED_UNTIL_MS - DAY_MS)
        updated_ms = created_ms + int(rng.random() * (MODIFIED_UNTIL_MS - created_ms))
        values = {
            "hs_meeting_title": f"{rng.choice(MEETING_TOPICS)} with {rng.choice(COMPANIES)}",
            "hs_meeting_body": "",
            "hs_meeting_location": rng.choice(MEETING_LOCATIONS),
            "hs_meeting_outcome": rng.choice(MEETING_OUTCOMES),
            "hubspot_owner_id": str(rng.choice(owner_ids)) if owner_ids else "",
            "hs_attendee_owner_ids": _attendee_owner_ids(MEETING_IDS_FROM + index, owner_ids),
        }
        instants = {"hs_meeting_start_time": start_ms, "hs_meeting_end_time": end_ms, "hs_timestamp": start_ms}
        meetings.append(_ObjectRow(MEETING_IDS_FROM + index, values, created_ms, updated_ms, None, instants))
    return meetings


# --- request models ------------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _as_text(value: Any) -> Any:
    """HubSpot takes filter values as strings but clients often send numbers (epoch ms) or booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


class SearchFilter(_Lenient):
    propertyName: str
    operator: str
    value: str | None = None
    highValue: str | None = None
    values: list[str] | None = None

    @field_validator("value", "highValue", mode="before")
    @classmethod
    def _value_as_text(cls, value: Any) -> Any:
        return _as_text(value)

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, values: Any) -> Any:
        return [_as_text(value) for value in values] if isinstance(values, list) else values


class SearchFilterGroup(_Lenient):
    filters: list[SearchFilter] = Field(default_factory=list)


class SearchSort(_Lenient):
    propertyName: str
    direction: Literal["ASCENDING", "DESCENDING"] = "ASCENDING"


class SearchRequest(_Lenient):
    filterGroups: list[SearchFilterGroup] = Field(default_factory=list)
    sorts: list[SearchSort | str] = Field(default_factory=list)
    properties: list[str] = Field(default_factory=list)
    limit: int = SEARCH_PAGE_DEFAULT
    after: str | None = None
    query: str | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _after_as_text(cls, value: Any) -> Any:
        return _as_text(value)


class ObjectInput(_Lenient):
    """The body of a create or update call, for any object type."""

    properties: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("properties", mode="before")
    @classmethod
    def _values_as_text(cls, properties: Any) -> Any:
        if isinstance(properties, dict):
            return {name: _as_text(value) for name, value in properties.items()}
        return properties


ContactInput = ObjectInput  # the name this model had when contacts were the only object type


class HubSpotApiError(Exception):
    """Raised inside handlers; rendered as HubSpot's `{"status":"error",...}` body."""

    def __init__(self, status_code: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.category = category
        self.message = message
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"status": "error", "message": self.message, "correlationId": new_correlation_id()}
        body.update(self.extra)
        body["category"] = self.category
        return json_response(body, self.status_code)


def _validation_error(message: str, **extra: Any) -> HubSpotApiError:
    return HubSpotApiError(400, "VALIDATION_ERROR", message, **extra)


def _not_found() -> HubSpotApiError:
    return HubSpotApiError(404, "OBJECT_NOT_FOUND", "resource not found")


def _parse_boolean(raw: str | None, name: str, default: bool) -> bool:
    """HubSpot (Java) parses booleans case-insensitively, and the Python SDK sends `True`/`False`."""
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise _validation_error(f"Unable to parse query parameter '{name}' with value '{raw}' as a boolean")


def _requested_properties(names: Iterable[str], schema: _ObjectSchema = CONTACTS) -> tuple[str, ...]:
    """Known requested properties plus the ones HubSpot always returns; unknown names are silently dropped."""
    requested = [name.strip() for name in names if name.strip()]
    if not requested:
        return schema.default_properties
    known = {name for name in requested if name in schema.properties}
    return tuple(sorted(known.union(schema.always_returned_properties)))


# --- search compilation ------------------------------------------------------------------------------------------

_RowPredicate = Callable[[_ObjectRow], bool]
_SortKey = Callable[[_ObjectRow], Any]


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "EQ":
        return bool(left == right)
    if operator == "NEQ":
        return bool(left != right)
    if operator == "GT":
        return bool(left > right)
    if operator == "GTE":
        return bool(left >= right)
    if operator == "LT":
        return bool(left < right)
    return bool(left <= right)  # LTE


def _number_reader(schema: _ObjectSchema, name: str) -> Callable[[_ObjectRow], int | None]:
    """Direct attribute reads for the stamps, which every windowed search filters on (hot on large portals)."""
    if name == schema.created_property:
        return lambda row: row.created_ms
    if name == schema.modified_property:
        return lambda row: row.updated_ms
    if name == "hs_object_id":
        return lambda row: row.id
    return lambda row: row.instants.get(name) if row.instants else None


def _compile_filter(search_filter: SearchFilter, schema: _ObjectSchema = CONTACTS) -> _RowPredicate:
    name, operator = search_filter.propertyName, search_filter.operator.upper()
    if name not in schema.properties:
        raise _validation_error(f"Property '{name}' does not exist on {schema.name} and cannot be used in a filter")
    if operator not in SUPPORTED_OPERATORS:
        raise _validation_error(f"Operator '{search_filter.operator}' is not supported by the sandbox")

    if schema.is_numeric(name):
        read_number = _number_reader(schema, name)
        if operator == "HAS_PROPERTY":
            return lambda row: read_number(row) is not None
        if operator == "NOT_HAS_PROPERTY":
            return lambda row: read_number(row) is None

        def as_number(raw: str | None) -> int:
            if raw is None:
                raise _validation_error(f"Filter on '{name}' with operator {operator} needs a value")
            try:
                return int(raw) if name == "hs_object_id" else _parse_instant_ms(raw)
            except ValueError as error:
                raise _validation_error(f"'{raw}' is not a valid value for property '{name}'") from error

        if operator in ("IN", "NOT_IN"):
            members = frozenset(as_number(raw) for raw in search_filter.values or [])
            wanted = operator == "IN"
            return lambda row: (read_number(row) in members) == wanted
        if operator == "BETWEEN":
            low, high = as_number(search_filter.value), as_number(search_filter.highValue)
            return lambda row: (number := read_number(row)) is not None and low <= number <= high
        bound = as_number(search_filter.value)
        if operator == "NEQ":
            return lambda row: read_number(row) != bound
        return lambda row: (number := read_number(row)) is not None and _compare(operator, number, bound)

    # String properties compare case-insensitively; a missing value only matches NEQ, NOT_IN and NOT_HAS_PROPERTY.
    def read_text(row: _ObjectRow) -> str | None:
        value = row.values.get(name)
        return value.lower() if value else None

    if operator == "HAS_PROPERTY":
        return lambda row: read_text(row) is not None
    if operator == "NOT_HAS_PROPERTY":
        return lambda row: read_text(row) is None
    if operator in ("IN", "NOT_IN"):
        text_members = frozenset((raw or "").lower() for raw in search_filter.values or [])
        wanted = operator == "IN"
        return lambda row: (read_text(row) in text_members) == wanted
    if search_filter.value is None:
        raise _validation_error(f"Filter on '{name}' with operator {operator} needs a value")
    text_bound = search_filter.value.lower()
    if operator == "BETWEEN":
        text_high = (search_filter.highValue or "").lower()
        return lambda row: (text := read_text(row)) is not None and text_bound <= text <= text_high
    if operator == "NEQ":
        return lambda row: read_text(row) != text_bound
    return lambda row: (text := read_text(row)) is not None and _compare(operator, text, text_bound)


def _sort_key(name: str, schema: _ObjectSchema = CONTACTS) -> _SortKey:
    # Missing values sort after present ones when ascending, as HubSpot lists blanks last.
    if schema.is_numeric(name):
        read_number = _number_reader(schema, name)
        return lambda row: (0, number) if (number := read_number(row)) is not None else (1, 0)
    return lambda row: (0, value.lower()) if (value := row.values.get(name)) else (1, "")


@dataclass(frozen=True)
class _CompiledSearch:
    groups: tuple[tuple[_RowPredicate, ...], ...]
    sorts: tuple[tuple[str, bool], ...]
    """(property, descending) in priority order."""
    query: str | None
    cache_key: str
    modified_from_ms: int | None = None
    """A lower bound on the modified stamp that every result meets (a GTE/GT filter in the only group), or None."""


def _compile_search(search: SearchRequest, schema: _ObjectSchema = CONTACTS) -> _CompiledSearch:
    if len(search.filterGroups) > SEARCH_MAX_FILTER_GROUPS:
        raise _validation_error(f"Too many filter groups: at most {SEARCH_MAX_FILTER_GROUPS} are allowed")
    if any(len(group.filters) > SEARCH_MAX_FILTERS_PER_GROUP for group in search.filterGroups):
        raise _validation_error(f"Too many filters in a group: at most {SEARCH_MAX_FILTERS_PER_GROUP} are allowed")
    if sum(len(group.filters) for group in search.filterGroups) > SEARCH_MAX_FILTERS_TOTAL:
        raise _validation_error(f"Too many filters: at most {SEARCH_MAX_FILTERS_TOTAL} in total are allowed")
    groups = tuple(
        tuple(_compile_filter(search_filter, schema) for search_filter in group.filters)
        for group in search.filterGroups
        if group.filters
    )
    sorts: list[tuple[str, bool]] = []
    for sort in search.sorts:
        name, descending = (
            (sort, False) if isinstance(sort, str) else (sort.propertyName, sort.direction == "DESCENDING")
        )
        if name not in schema.properties:
            raise _validation_error(f"Property '{name}' does not exist on {schema.name} and cannot be used to sort")
        sorts.append((name, descending))
    query = search.query.strip().lower() if search.query and search.query.strip() else None
    bounds = [
        _parse_instant_ms(search_filter.value)
        for search_filter in (search.filterGroups[0].filters if len(search.filterGroups) == 1 else [])
        if search_filter.propertyName == schema.modified_property
        and search_filter.operator.upper() in ("GTE", "GT")
        and search_filter.value is not None
    ]
    cache_key = json.dumps(
        {"filterGroups": [group.model_dump() for group in search.filterGroups], "sorts": sorts, "query": query},
        sort_keys=True,
    )
    return _CompiledSearch(groups, tuple(sorts), query, cache_key, max(bounds, default=None))


def _rate_limit_headers(
    burst_limit: int, burst_remaining: int, burst_window_s: float, daily_limit: int, daily_remaining: int
) -> dict[str, str]:
    return {
        "X-HubSpot-RateLimit-Max": str(burst_limit),
        "X-HubSpot-RateLimit-Remaining": str(burst_remaining),
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(round(burst_window_s * 1000)),
        "X-HubSpot-RateLimit-Daily": str(daily_limit),
        "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining),
    }


def _with_query(url: str, extra: dict[str, str]) -> str:
    """Append parameters to a redirect URI while keeping any query it already has."""
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- one object type's records -------------------------------------------------------------------------------------


SEARCH_CACHE_SIZE = 16
"""Search match lists kept per object type, each until the next write to that type."""


class _ObjectStore:
    """The rows of one CRM object type with HubSpot's list, search, write and archive semantics.

    Not thread-safe on its own: the emulator calls it under its lock. `now_ms` stamps every write.
    """

    def __init__(self, schema: _ObjectSchema, rows: list[_ObjectRow], *, next_id: int, now_ms: Callable[[], int]):
        self.schema = schema
        self.rows: dict[int, _ObjectRow] = {row.id: row for row in rows}
        self.live_ids: list[int] = sorted(self.rows)
        self.archived_ids: list[int] = []
        self.id_by_email: dict[str, int] = (
            {row.values["email"].lower(): row.id for row in rows if row.values.get("email")}
            if schema.unique_email
            else {}
        )
        self.next_id = max(next_id, max(self.rows, default=0) + 1)
        self.version = 0  # bumped by every mutation; invalidates cached search results
        # The generated rows' modified stamps, sorted (with their ids), and the rows written since: a search from a
        # modified stamp reads only the rows at or after it, as HubSpot's indexed search costs what it returns.
        by_modified = sorted(rows, key=lambda row: row.updated_ms)
        self.generated_modified_ms = array("q", (row.updated_ms for row in by_modified))
        self.generated_ids_by_modified = array("q", (row.id for row in by_modified))
        self.written_ids: set[int] = set()
        self.search_cache: OrderedDict[tuple[int, str], list[int]] = OrderedDict()
        self._now_ms = now_ms
        # (operation, object id, changed properties) after each write: the webhooks hook (hubspot_push.py).
        self.on_change: Callable[[str, int, Mapping[str, str | None]], None] | None = None

    # --- reads ---

    def records(self, *, include_archived: bool) -> list[dict[str, Any]]:
        """Every row with all its properties (None where unset), ordered by id."""
        ids = sorted(self.live_ids + self.archived_ids) if include_archived else list(self.live_ids)
        names = sorted(self.schema.properties)
        records = []
        for object_id in ids:
            row = self.rows[object_id]
            records.append(
                {
                    "id": str(row.id),
                    "properties": {name: row.property_value(self.schema, name) for name in names},
                    "archived": row.archived_ms is not None,
                    "archivedAt": _iso_from_ms(row.archived_ms) if row.archived_ms is not None else None,
                    "createdAt": _iso_from_ms(row.created_ms),
                    "updatedAt": _iso_from_ms(row.updated_ms),
                }
            )
        return records

    def render(self, row: _ObjectRow, properties: tuple[str, ...]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": str(row.id),
            "properties": {name: row.property_value(self.schema, name) for name in properties},
            "createdAt": _iso_from_ms(row.created_ms),
            "updatedAt": _iso_from_ms(row.updated_ms),
            "archived": row.archived_ms is not None,
        }
        if row.archived_ms is not None:
            record["archivedAt"] = _iso_from_ms(row.archived_ms)
        return record

    def render_written(self, row: _ObjectRow) -> dict[str, Any]:
        """Create and update answer with every property that has a value."""
        names = sorted(name for name in self.schema.properties if row.property_value(self.schema, name) is not None)
        return self.render(row, tuple(names))

    def render_ids(self, ids: list[int], properties: tuple[str, ...]) -> list[dict[str, Any]]:
        return [self.render(self.rows[object_id], properties) for object_id in ids]

    def lookup(self, object_id: str, *, id_property: str, archived: bool) -> _ObjectRow:
        if id_property == "email" and self.schema.unique_email:
            found_id = self.id_by_email.get(object_id.lower())
            object_id = str(found_id) if found_id is not None else ""
        row = self.rows.get(int(object_id)) if object_id.isdigit() else None
        if row is None or (row.archived_ms is not None) != archived:
            raise _not_found()
        return row

    def list_page(
        self, *, archived: bool, after_id: int, limit: int, properties: tuple[str, ...]
    ) -> tuple[list[dict[str, Any]], int | None]:
        ids = self.archived_ids if archived else self.live_ids
        start = bisect.bisect_left(ids, after_id)
        page_ids = ids[start : start + limit]
        next_after = page_ids[-1] + 1 if page_ids and start + limit < len(ids) else None
        return self.render_ids(page_ids, properties), next_after

    def search_matches(self, compiled: _CompiledSearch) -> list[int]:
        """Ids of live rows matching the search, in result order; cached until the next mutation."""
        cache_key = (self.version, compiled.cache_key)
        cached = self.search_cache.get(cache_key)
        if cached is not None:
            self.search_cache.move_to_end(cache_key)
            return cached
        if not (compiled.groups or compiled.query or compiled.sorts):  # everything live, by id: a count's search
            return list(self.live_ids)
        rows: Iterable[_ObjectRow] = (self.rows[object_id] for object_id in self.live_ids)
        if compiled.modified_from_ms is not None:
            start = bisect.bisect_left(self.generated_modified_ms, compiled.modified_from_ms)
            candidates = self.written_ids.union(self.generated_ids_by_modified[start:])
            live = (self.rows.get(object_id) for object_id in sorted(candidates))
            rows = (row for row in live if row is not None and row.archived_ms is None)
        if compiled.groups:
            groups = compiled.groups
            rows = (row for row in rows if any(all(matches(row) for matches in group) for group in groups))
        if compiled.query:
            query = compiled.query
            searched = self.schema.query_searched_properties
            rows = (row for row in rows if any(query in row.values.get(name, "").lower() for name in searched))
        ordered = list(rows)  # already by id ascending, the tie-breaker for every sort
        for name, descending in reversed(compiled.sorts):
            ordered.sort(key=_sort_key(name, self.schema), reverse=descending)  # stable: earlier sorts win
        matches = [row.id for row in ordered]
        self.search_cache[cache_key] = matches
        if len(self.search_cache) > SEARCH_CACHE_SIZE:
            self.search_cache.popitem(last=False)
        return matches

    # --- writes ---

    def live_row(self, object_id: str) -> _ObjectRow:
        row = self.rows.get(int(object_id)) if object_id.isdigit() else None
        if row is None or row.archived_ms is not None:
            raise _not_found()
        return row

    def check_writable(self, properties: Mapping[str, str | None], *, editing_id: int | None) -> None:
        problems = []
        for name, value in properties.items():
            if name not in self.schema.properties:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
            elif name in self.schema.read_only_properties:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
            elif name in self.schema.instant_properties and value and not _is_instant(value):
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{value} was not a valid long or ISO 8601 datetime.",
                        "error": "INVALID_DATE",
                        "name": name,
                    }
                )
        if problems:
            raise _validation_error(f"Property values were not valid: {json.dumps(problems)}")
        required = self.schema.create_requires_one_of
        if editing_id is None and required and not any(properties.get(name) for name in required):
            raise _validation_error(f"Missing required property: one of {', '.join(required)} must be set")
        if self.schema.unique_email:
            email = (properties.get("email") or "").lower()
            existing_id = self.id_by_email.get(email) if email else None
            if existing_id is not None and existing_id != editing_id:
                raise HubSpotApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing_id}")

    def _set_values(self, row: _ObjectRow, properties: Mapping[str, str | None]) -> None:
        for name, value in properties.items():
            if name in self.schema.instant_properties:
                instants = row.instants if row.instants is not None else {}
                if value:
                    instants[name] = _parse_instant_ms(value)
                else:
                    instants.pop(name, None)
                row.instants = instants
                continue
            if name == "email" and self.schema.unique_email:
                self.id_by_email.pop(row.values.get("email", "").lower(), None)
                if value:
                    self.id_by_email[value.lower()] = row.id
            row.values[name] = value or ""
        row.updated_ms = max(self._now_ms(), row.created_ms)
        self.written_ids.add(row.id)
        self.version += 1

    def create(self, properties: Mapping[str, str | None]) -> _ObjectRow:
        self.check_writable(properties, editing_id=None)
        if "hs_timestamp" in self.schema.instant_properties and not properties.get("hs_timestamp"):
            # HubSpot: "When the property value is missing, the value will default to hs_meeting_start_time."
            properties = {**properties, "hs_timestamp": properties.get("hs_meeting_start_time")}
        now_ms = self._now_ms()
        row = _ObjectRow(self.next_id, {}, now_ms, now_ms)
        self.next_id += 1
        self.rows[row.id] = row
        self.live_ids.append(row.id)  # ids only grow, so the list stays sorted
        self._set_values(row, properties)
        if self.on_change is not None:
            self.on_change("creation", row.id, properties)
        return row

    def update(self, object_id: str, properties: Mapping[str, str | None]) -> _ObjectRow:
        row = self.live_row(object_id)
        self.check_writable(properties, editing_id=row.id)
        self._set_values(row, properties)
        if self.on_change is not None:
            self.on_change("propertyChange", row.id, properties)
        return row

    def archive(self, object_id: str) -> bool:
        """False if the id never existed; archiving an archived row is a no-op, as in HubSpot."""
        row = self.rows.get(int(object_id)) if object_id.isdigit() else None
        if row is None:
            return False
        if row.archived_ms is None:
            now_ms = self._now_ms()
            row.archived_ms = now_ms
            row.updated_ms = max(now_ms, row.created_ms)
            self.written_ids.add(row.id)
            del self.live_ids[bisect.bisect_left(self.live_ids, row.id)]
            bisect.insort(self.archived_ids, row.id)
            if self.schema.unique_email:
                self.id_by_email.pop(row.values.get("email", "").lower(), None)
            self.version += 1
            if self.on_change is not None:
                self.on_change("deletion", row.id, {})
        return True

    def touch(self, object_id: int) -> None:
        """The object changed without a property write (an association added or removed): it counts as modified."""
        self._set_values(self.rows[object_id], {})

    def purge_archived(self, archived_before_ms: int) -> int:
        """Forget rows archived before the instant, as HubSpot does 90 days after a delete; returns the count."""
        purged = [
            object_id for object_id in self.archived_ids if (self.rows[object_id].archived_ms or 0) < archived_before_ms
        ]
        for object_id in purged:
            del self.rows[object_id]
        gone = set(purged)
        self.archived_ids = [object_id for object_id in self.archived_ids if object_id not in gone]
        self.version += 1
        return len(purged)


def _is_instant(value: str) -> bool:
    try:
        _parse_instant_ms(value)
    except ValueError:
        return False
    return True


class _Associations:
    """Which contacts attend which meetings. HubSpot keeps every association in both directions (meeting to contact
    is type 200, contact to meeting 199); an archived record's associations are not returned while it is archived."""

    def __init__(self, meetings: _ObjectStore, contacts: _ObjectStore) -> None:
        self.stores = {"meetings": meetings, "contacts": contacts}
        self.contacts_of: dict[int, set[int]] = {
            meeting_id: set(found)
            for meeting_id in meetings.rows
            if (found := _associated_contact_ids(meeting_id, len(contacts.rows)))
        }

    def associated(self, from_type: str, object_id: int) -> list[int]:
        """The live objects of the other type associated with a live object, by id."""
        if from_type == "meetings":
            ids = self.contacts_of.get(object_id, set())
        else:
            ids = {meeting_id for meeting_id, contacts in self.contacts_of.items() if object_id in contacts}
        source, target = self.stores[from_type], self.stores["contacts" if from_type == "meetings" else "meetings"]
        if object_id not in source.rows or source.rows[object_id].archived_ms is not None:
            return []
        return sorted(i for i in ids if i in target.rows and target.rows[i].archived_ms is None)

    def change(self, meeting_id: int, contact_id: int, *, associate: bool) -> None:
        """Associate or dissociate; the meeting counts as modified (the assumption incremental reads rest on)."""
        meeting = self.stores["meetings"].live_row(str(meeting_id))
        self.stores["contacts"].live_row(str(contact_id))
        attending = self.contacts_of.setdefault(meeting.id, set())
        if associate:
            attending.add(contact_id)
        else:
            attending.discard(contact_id)
        self.stores["meetings"].touch(meeting.id)


def _batch_inputs(body: Any, maximum: int) -> list[dict[str, Any]]:
    """A batch call's `inputs`: a list of at most `maximum` objects with an `id`."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(
        isinstance(item, dict) and isinstance(item.get("id"), str | int) for item in inputs
    ):
        raise _validation_error('Invalid input JSON: "inputs" must be a list of objects, each with an "id"')
    if len(inputs) > maximum:
        raise _validation_error(f"Batch requests are limited to {maximum} inputs, got {len(inputs)}")
    return inputs


def _batch_answer(results: list[dict[str, Any]], errors: list[dict[str, Any]], started_ms: int) -> Response:
    """A batch call's answer: 200, or 207 Multi-Status when some inputs failed (the rest still answered)."""
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body |= {
            "numErrors": len(errors),
            "errors": [{"status": "error", "links": {}, "errors": [], **e} for e in errors],
        }
    body |= {"startedAt": _iso_from_ms(started_ms), "completedAt": _iso_from_ms(started_ms)}
    return json_response(body, 207 if errors else 200)


_OBJECT_TYPE_NAMES = {"contacts": "contacts", "contact": "contacts", "0-1": "contacts"}
_OBJECT_TYPE_NAMES |= {"meetings": "meetings", "meeting": "meetings", "meeting_event": "meetings", "0-47": "meetings"}


class _OwnerStore:
    """Owners are read-only in HubSpot's API; the emulator's knobs add and deactivate them."""

    def __init__(self, owners: list[_OwnerRow]) -> None:
        self.rows: dict[int, _OwnerRow] = {owner.id: owner for owner in owners}
        self.next_id = OWNER_IDS_FROM + len(owners)

    def ordered(self, *, archived: bool) -> list[_OwnerRow]:
        return [owner for _, owner in sorted(self.rows.items()) if (owner.archived_ms is not None) == archived]


# --- the emulator ------------------------------------------------------------------------------------------------


class HubSpotEmulator:
    """One HubSpot portal with one OAuth app; serve `app` with any ASGI server.

    Inspection and mutation methods are thread-safe, so tests can call them while the app serves requests
    from another thread. `clock` (seconds since the epoch) lets tests move time for token expiry and rate
    limits without sleeping; generated data never depends on it.
    """

    SEARCH_CACHE_SIZE = SEARCH_CACHE_SIZE  # kept for callers of the old attribute; each object store uses it

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        contacts: int = 2_000,
        owners: int = 8,
        meetings: int = 400,
        events_around: date | None = None,
        seed: int = 7,
        access_token_ttl_s: int = 1800,
        burst_limit: int | None = 100,
        search_limit: int | None = SEARCH_LIMIT_PER_S,
        daily_limit: int = 250_000,
        portal_id: int = 62515,
        clock: Clock = time.time,
        developer_api_key: str | None = None,
        push_time_scale: float = 1.0,
    ) -> None:
        self._lock = threading.RLock()
        self.client_id = client_id
        self.portal_id = portal_id
        self.app_id = zlib.crc32(client_id.encode()) % 9_000_000 + 1_000_000
        # Webhooks (hubspot_push.py): app-level settings behind the developer API key; `push_time_scale` compresses
        # HubSpot's day of retries for tests. Without a key given, one is derived from the client secret.
        self.push = HubSpotPush(
            lock=self._lock,
            clock=clock,
            app_id=self.app_id,
            portal_id=portal_id,
            client_secret=client_secret,
            developer_api_key=developer_api_key or developer_api_key_for(client_secret),
            time_scale=push_time_scale,
        )
        self.clock = clock
        self.request_log: list[RequestRecord] = []
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret}, access_token_ttl_s=access_token_ttl_s, clock=clock
        )
        # HubSpot advertises 100 per 10 s for most apps; keep advertising that when enforcement is switched off.
        self._burst = SlidingWindowRateLimiter(burst_limit, BURST_WINDOW_S, clock, reported_limit=100)
        self._search = SlidingWindowRateLimiter(search_limit, 1.0, clock, reported_limit=SEARCH_LIMIT_PER_S)
        self._daily = DailyQuota(daily_limit, clock)
        self._faults = FaultQueue()

        owner_rows = _generate_owners(owners, seed)
        self._owners = _OwnerStore(owner_rows)
        self._contacts = _ObjectStore(
            CONTACTS, _generate_contacts(contacts, seed), next_id=contacts + 1, now_ms=self._now_ms
        )
        self._meetings = _ObjectStore(
            MEETINGS,
            _generate_meetings(meetings, seed, [owner.id for owner in owner_rows], events_around),
            next_id=MEETING_IDS_FROM,
            now_ms=self._now_ms,
        )
        self._contacts.on_change = self.push.contact_changed
        self._associations = _Associations(self._meetings, self._contacts)
        # The Properties API (hubspot_properties.py): the portal's custom properties, with values on the generated
        # records; tests add and archive properties through it, and records follow.
        self.properties = HubSpotProperties(
            self._lock,
            clock,
            {"contacts": CONTACTS.properties, "meetings": MEETINGS.properties},
            on_change=self._custom_properties_changed,
        )
        self._custom_properties_changed()
        for store in (self._contacts, self._meetings):
            self.properties.fill_sample_values(store.schema.name, store.rows.values())
        self.app = self._build_app()

    def _custom_properties_changed(self) -> None:
        """Records carry the live custom properties (as text, like HubSpot's own string properties)."""
        for store, base in ((self._contacts, CONTACTS), (self._meetings, MEETINGS)):
            custom = tuple(self.properties.custom_names(base.name))
            store.schema = dataclasses.replace(base, string_properties=base.string_properties + custom)
            store.version += 1  # cached searches were compiled against the old schema

    # --- state inspection and mutation (Python side) --------------------------------------------------------------

    @synchronized
    def contact_records(self, *, include_archived: bool = True) -> list[dict[str, Any]]:
        """Every contact with all its properties (None where unset), ordered by id."""
        return self._contacts.records(include_archived=include_archived)

    @synchronized
    def meeting_records(self, *, include_archived: bool = True) -> list[dict[str, Any]]:
        """Every meeting with all its properties (None where unset), ordered by id."""
        return self._meetings.records(include_archived=include_archived)

    event_records = meeting_records  # the provider-neutral name: HubSpot's events are meetings

    @synchronized
    def owner_records(self, *, include_archived: bool = True) -> list[dict[str, Any]]:
        """Every owner in the API's shape, live then archived, each by id."""
        live = [owner.render() for owner in self._owners.ordered(archived=False)]
        return live + ([owner.render() for owner in self._owners.ordered(archived=True)] if include_archived else [])

    user_records = owner_records  # the provider-neutral name: HubSpot's users are owners

    @synchronized
    def token_requests(self, grant_type: str | None = None) -> int:
        """How many POST /oauth/v1/token calls arrived (failed ones included), optionally of one grant_type."""
        return self._oauth.count_token_requests(grant_type)

    @synchronized
    def issued_tokens(self) -> frozenset[str]:
        """Every authorization code, access token and refresh token this emulator ever issued."""
        return frozenset(self._oauth.issued)

    def update_contact(self, contact_id: str, properties: dict[str, str]) -> None:
        """Raises KeyError for an unknown or archived contact, ValueError for properties HubSpot would reject."""
        self._write(self._contacts.update, contact_id, properties)

    def create_contact(self, properties: dict[str, str]) -> str:
        return str(self._write(self._contacts.create, properties).id)

    def archive_contact(self, contact_id: str) -> None:
        if not self._archive(self._contacts, contact_id):
            raise KeyError(contact_id)

    def create_meeting(self, properties: dict[str, str]) -> str:
        """Datetime properties take epoch milliseconds or ISO 8601; hs_timestamp defaults to the start time."""
        return str(self._write(self._meetings.create, properties).id)

    def update_meeting(self, meeting_id: str, properties: dict[str, str]) -> None:
        """Raises KeyError for an unknown or archived meeting, ValueError for properties HubSpot would reject."""
        self._write(self._meetings.update, meeting_id, properties)

    def archive_meeting(self, meeting_id: str) -> None:
        if not self._archive(self._meetings, meeting_id):
            raise KeyError(meeting_id)

    @synchronized
    def meeting_contact_ids(self, meeting_id: str) -> list[str]:
        """The live contacts associated with a live meeting, by id."""
        return [str(i) for i in self._associations.associated("meetings", int(meeting_id))]

    def associate_meeting_contact(self, meeting_id: str, contact_id: str) -> None:
        """A contact attends the meeting; KeyError for an unknown or archived meeting or contact."""
        self._write(self._associations.change, int(meeting_id), int(contact_id), associate=True)

    def dissociate_meeting_contact(self, meeting_id: str, contact_id: str) -> None:
        self._write(self._associations.change, int(meeting_id), int(contact_id), associate=False)

    @synchronized
    def create_owner(self, *, email: str, first_name: str, last_name: str, team: str = TEAMS[0]) -> str:
        """A user added to the portal (HubSpot creates its owner); returns the owner id."""
        now_ms = self._now_ms()
        owner_id = self._owners.next_id
        self._owners.next_id += 1
        user_id = USER_IDS_FROM + owner_id - OWNER_IDS_FROM
        owner = _OwnerRow(owner_id, user_id, email, first_name, last_name, team, now_ms, now_ms)
        self._owners.rows[owner_id] = owner
        return str(owner_id)

    @synchronized
    def set_rate_limit(
        self, burst_limit: int | None, *, window_s: float | None = None, daily_limit: int | None = None
    ) -> None:
        """Change the rolling burst limit (None: off), its window and the daily quota, even while serving; the
        headers advertise the new values from the next response on."""
        self._burst.set_limit(burst_limit, window_s)
        if daily_limit is not None:
            self._daily.limit = daily_limit

    @synchronized
    def fail_next(self, requests: int, *, status: int = 503, retry_after_s: int | None = None) -> None:
        """The next `requests` authorized CRM calls answer `status` (a 5xx, or 429 with `Retry-After`)."""
        self._faults.push(requests, status, retry_after_s)

    @synchronized
    def archive_owner(self, owner_id: str) -> None:
        """A user removed from the portal: its owner is archived. KeyError for an unknown owner."""
        owner = self._owners.rows.get(int(owner_id)) if owner_id.isdigit() else None
        if owner is None:
            raise KeyError(owner_id)
        if owner.archived_ms is None:
            owner.archived_ms = owner.updated_ms = self._now_ms()

    @synchronized
    def purge_archived(self, older_than: timedelta = DELETED_RECORD_RETENTION) -> int:
        """Forget contacts and meetings archived longer ago than `older_than` (by the clock), as HubSpot does after
        90 days: an incremental cursor older than that can no longer learn of those deletions. Returns the count."""
        before_ms = self._now_ms() - older_than // _MS
        return self._contacts.purge_archived(before_ms) + self._meetings.purge_archived(before_ms)

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        self._oauth.revoke_all_refresh_tokens()

    # --- state operations shared by HTTP and Python callers ------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @synchronized
    def _write(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store write for a Python caller, turning HubSpot's HTTP errors into KeyError / ValueError."""
        try:
            return operation(*args, **kwargs)
        except HubSpotApiError as error:
            raise (KeyError if error.status_code == 404 else ValueError)(error.message) from None

    @synchronized
    def _archive(self, store: _ObjectStore, object_id: str) -> bool:
        return store.archive(object_id)

    # --- HTTP: OAuth ---------------------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            known_client = self._oauth.is_known_client(client_id)
        if not known_client:
            return PlainTextResponse(f"Authorization failed: unknown client_id '{client_id}'.", status_code=400)
        if not redirect_uri:
            return PlainTextResponse("Authorization failed: the redirect_uri parameter is required.", status_code=400)
        code_challenge = params.get("code_challenge") or None
        if code_challenge is not None and params.get("code_challenge_method") != "S256":
            return PlainTextResponse("Authorization failed: code_challenge_method must be S256.", status_code=400)
        # Auto-consent: the user grants every required and optional scope.
        scopes = tuple(dict.fromkeys((params.get("scope", "") + " " + params.get("optional_scope", "")).split()))
        with self._lock:
            code = self._oauth.issue_code(
                client_id=client_id, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
            )
        redirect_params = {"code": code}
        if "state" in params:
            redirect_params["state"] = params["state"]
        return RedirectResponse(_with_query(redirect_uri, redirect_params), status_code=302)

    @staticmethod
    def _oauth_error(kind: OAuthErrorKind, message: str) -> JSONResponse:
        hubspot_status = {
            OAuthErrorKind.INVALID_REQUEST: "BAD_REQUEST",
            OAuthErrorKind.INVALID_CLIENT: "BAD_CLIENT_ID",
            OAuthErrorKind.INVALID_CLIENT_SECRET: "BAD_CLIENT_SECRET",
            OAuthErrorKind.INVALID_CODE: "BAD_AUTH_CODE",
            OAuthErrorKind.REDIRECT_URI_MISMATCH: "BAD_REDIRECT_URI",
            OAuthErrorKind.CODE_VERIFIER_MISMATCH: "BAD_CODE_VERIFIER",
            OAuthErrorKind.INVALID_REFRESH_TOKEN: "BAD_REFRESH_TOKEN",
            OAuthErrorKind.UNSUPPORTED_GRANT_TYPE: "BAD_GRANT_TYPE",
        }[kind]
        body = {
            "status": hubspot_status,
            "message": message,
            "correlationId": new_correlation_id(),
            "error": kind.rfc6749_error,
            "error_description": message,
        }
        return json_response(body, 400)

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        grant_type = form.get("grant_type", "")
        required = {
            "authorization_code": ("client_id", "client_secret", "redirect_uri", "code"),
            "refresh_token": ("client_id", "client_secret", "refresh_token"),
        }
        with self._lock:
            self._oauth.record_token_request(grant_type)
        if not grant_type:
            return self._oauth_error(OAuthErrorKind.INVALID_REQUEST, "missing required parameter: grant_type")
        if grant_type not in required:
            return self._oauth_error(OAuthErrorKind.UNSUPPORTED_GRANT_TYPE, f"unsupported grant_type '{grant_type}'")
        missing = [name for name in required[grant_type] if not form.get(name)]
        if missing:
            return self._oauth_error(OAuthErrorKind.INVALID_REQUEST, f"missing required parameter: {missing[0]}")
        try:
            with self._lock:
                if grant_type == "authorization_code":
                    grant = self._oauth.exchange_code(
                        client_id=form["client_id"],
                        client_secret=form["client_secret"],
                        code=form["code"],
                        redirect_uri=form["redirect_uri"],
                        code_verifier=form.get("code_verifier") or None,
                    )
                else:
                    grant = self._oauth.refresh(
                        client_id=form["client_id"],
                        client_secret=form["client_secret"],
                        refresh_token=form["refresh_token"],
                    )
        except OAuthError as error:
            return self._oauth_error(error.kind, error.description)
        return json_response(
            {
                "token_type": "bearer",
                "refresh_token": grant.refresh_token,
                "access_token": grant.access_token,
                "expires_in": grant.expires_in,
            }
        )

    def _token_not_found(self, what: str) -> JSONResponse:
        return HubSpotApiError(404, "OBJECT_NOT_FOUND", f"{what} not found").response()

    async def _access_token_info(self, request: Request) -> Response:
        token = request.path_params["token"]
        with self._lock:
            _, access = self._oauth.authenticate(token)
            expires_in = self._oauth.seconds_left(access) if access is not None else 0
        if access is None:
            return self._token_not_found("access token")
        return json_response(
            {
                "token": token,
                "user": SANDBOX_USER,
                "hub_domain": f"sandbox-{self.portal_id}.hubspot.com",
                "scopes": list(access.scopes),
                "hub_id": self.portal_id,
                "app_id": self.app_id,
                "expires_in": expires_in,
                "user_id": SANDBOX_USER_ID,
                "token_type": "access",
            }
        )

    async def _refresh_token_info(self, request: Request) -> Response:
        token = request.path_params["token"]
        with self._lock:
            stored = self._oauth.refresh_tokens.get(token)
        if stored is None:
            return self._token_not_found("refresh token")
        return json_response(
            {
                "token": token,
                "user": SANDBOX_USER,
                "hub_domain": f"sandbox-{self.portal_id}.hubspot.com",
                "scopes": list(stored.scopes),
                "hub_id": self.portal_id,
                "client_id": stored.client_id,
                "user_id": SANDBOX_USER_ID,
                "token_type": "refresh",
            }
        )

    async def _revoke_refresh_token(self, request: Request) -> Response:
        with self._lock:
            revoked = self._oauth.revoke_refresh_token(request.path_params["token"])
        return Response(status_code=204) if revoked else self._token_not_found("refresh token")

    # --- HTTP: CRM ------------------------------------------------------------------------------------------------

    def _crm_endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], scope: str, *, search: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check scope, count against the burst (a search: the search limit) and daily limits, then
        run `handler`."""

        async def endpoint(request: Request) -> Response:
            uri_bytes = len(request.scope["raw_path"]) + 1 + len(request.scope["query_string"])
            if uri_bytes > MAX_URI_BYTES:
                return PlainTextResponse(f"414 Request-URI Too Large: {uri_bytes} bytes", 414)
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            with self._lock:
                status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
                authorized = status is AccessStatus.VALID and access is not None and scope in access.scopes
                fault = self._faults.pop() if authorized else None
                if fault is not None:
                    return self._forced_fault(fault)
                limiter = self._search if search else self._burst
                rate = limiter.hit() if authorized else limiter.peek()
                burst = self._burst.peek() if search else rate
                daily_ok = authorized and rate.allowed and self._daily.try_consume()
                headers = _rate_limit_headers(
                    burst.limit, burst.remaining, self._burst.window_s, self._daily.limit, self._daily.remaining
                )
                expired_for_s = self.clock() - access.expires_at if access is not None else 0.0
                daily_retry_after_s = self._daily.seconds_until_reset()
            response = self._refusal(status, token, expired_for_s, authorized, scope, rate.allowed, daily_ok, search)
            if response is not None:
                if not rate.allowed:
                    if not search:  # HubSpot's search refusals carry no Retry-After
                        response.headers["Retry-After"] = str(rate.retry_after_s)
                elif authorized and not daily_ok:
                    response.headers["Retry-After"] = str(daily_retry_after_s)
            else:
                try:
                    response = await handler(request)
                except HubSpotApiError as error:
                    response = error.response()
            response.headers.update(headers)
            return response

        return endpoint

    @staticmethod
    def _forced_fault(fault: ForcedFault) -> Response:
        if fault.status == 429:
            body = {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": new_correlation_id(),
                "policyName": "TEN_SECONDLY_ROLLING",
            }
        else:
            body = {
                "status": "error",
                "message": "internal error",
                "correlationId": new_correlation_id(),
                "category": "INTERNAL_ERROR",
            }
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else {}
        return json_response(body, fault.status, headers)

    @staticmethod
    def _refusal(
        status: AccessStatus,
        token: str,
        expired_for_s: float,
        authorized: bool,
        scope: str,
        rate_ok: bool,
        daily_ok: bool,
        search: bool,
    ) -> Response | None:
        if status is AccessStatus.EXPIRED:
            minutes = max(int(expired_for_s // 60), 0)
            return HubSpotApiError(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
            ).response()
        if status is AccessStatus.UNKNOWN:
            message = (
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
                "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
                if not token
                else "The OAuth token used to make this call is not valid."
            )
            return HubSpotApiError(401, "INVALID_AUTHENTICATION", message).response()
        if not authorized:
            return HubSpotApiError(
                403,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call.",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [scope]},
                    }
                ],
            ).response()
        if not rate_ok and search:
            # The search limit's refusal as HubSpot sends it: no errorType or policyName, a RATE_LIMITS category.
            return json_response(
                {
                    "status": "error",
                    "message": "You have reached your secondly limit.",
                    "correlationId": new_correlation_id(),
                    "category": "RATE_LIMITS",
                },
                429,
            )
        if not rate_ok:
            return json_response(
                {
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": new_correlation_id(),
                    "policyName": "TEN_SECONDLY_ROLLING",
                },
                429,
            )
        if not daily_ok:
            return json_response(
                {
                    "status": "error",
                    "message": "You have reached your daily limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": new_correlation_id(),
                    "policyName": "DAILY",
                },
                429,
            )
        return None

    @staticmethod
    async def _json_body(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError as error:
            raise _validation_error(
                f"Invalid input JSON on line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None

    # --- HTTP: CRM objects (contacts, meetings) ---------------------------------------------------------------

    def _list_objects(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def list_objects(request: Request) -> Response:
            params = request.query_params
            limit = _parse_limit(params.get("limit"), LIST_PAGE_DEFAULT, LIST_PAGE_MAX)
            archived = _parse_boolean(params.get("archived"), "archived", default=False)
            after = _parse_after(params.get("after"))
            properties = _requested_properties(_listed(params.getlist("properties")), store.schema)
            with self._lock:
                results, next_after = store.list_page(
                    archived=archived, after_id=after, limit=limit, properties=properties
                )
            return _paged(request, results, next_after)

        return list_objects

    def _get_object(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def get_object(request: Request) -> Response:
            params = request.query_params
            archived = _parse_boolean(params.get("archived"), "archived", default=False)
            id_property = params.get("idProperty") or "hs_object_id"
            unique = ("hs_object_id", "email") if store.schema.unique_email else ("hs_object_id",)
            if id_property not in unique:
                raise _validation_error(
                    f"idProperty '{id_property}' is not a unique identifier property for {store.schema.name}"
                )
            properties = _requested_properties(_listed(params.getlist("properties")), store.schema)
            with self._lock:
                row = store.lookup(request.path_params["object_id"], id_property=id_property, archived=archived)
                record = store.render(row, properties)
            return json_response(record)

        return get_object

    async def _object_input(self, request: Request) -> dict[str, str | None]:
        try:
            return ObjectInput.model_validate(await self._json_body(request)).properties
        except ValidationError as error:
            raise _validation_error(f"Invalid input JSON: {error.errors(include_url=False)}") from None

    def _create_object(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def create_object(request: Request) -> Response:
            properties = await self._object_input(request)
            with self._lock:
                record = store.render_written(store.create(properties))
            return json_response(record, 201)

        return create_object

    def _update_object(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def update_object(request: Request) -> Response:
            properties = await self._object_input(request)
            with self._lock:
                record = store.render_written(store.update(request.path_params["object_id"], properties))
            return json_response(record)

        return update_object

    def _archive_object(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def archive_object(request: Request) -> Response:
            if not self._archive(store, request.path_params["object_id"]):
                raise _not_found()
            return Response(status_code=204)

        return archive_object

    def _search_objects(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def search_objects(request: Request) -> Response:
            try:
                search = SearchRequest.model_validate(await self._json_body(request))
            except ValidationError as error:
                raise _validation_error(f"Invalid search request: {error.errors(include_url=False)}") from None
            if not 0 <= search.limit <= SEARCH_PAGE_MAX:
                raise _validation_error(f"limit must be between 0 and {SEARCH_PAGE_MAX}, got {search.limit}")
            after_text = search.after or "0"
            if not after_text.isdigit():
                raise _validation_error(f"Invalid 'after' paging offset '{search.after}'")
            offset = int(after_text)
            compiled = _compile_search(search, store.schema)
            properties = _requested_properties(search.properties, store.schema)
            with self._lock:
                matches = store.search_matches(compiled)
                total = len(matches)
                if offset >= SEARCH_RESULT_CAP or min(offset + search.limit, total) > SEARCH_RESULT_CAP:
                    raise _validation_error(
                        f"Search results are limited to {SEARCH_RESULT_CAP} per query: after={offset} with "
                        f"limit={search.limit} reaches past result {SEARCH_RESULT_CAP} of {total}. "
                        "Narrow the filters to page further."
                    )
                page_ids = matches[offset : offset + search.limit]
                body: dict[str, Any] = {"total": total, "results": store.render_ids(page_ids, properties)}
            next_offset = offset + len(page_ids)
            if page_ids and next_offset < total:
                body["paging"] = {"next": {"after": str(next_offset)}}
            return json_response(body)

        return search_objects

    def _batch_read(self, store: _ObjectStore) -> Callable[[Request], Awaitable[Response]]:
        async def batch_read(request: Request) -> Response:
            body = await self._json_body(request)
            inputs = _batch_inputs(body, BATCH_READ_MAX)
            archived = _parse_boolean(request.query_params.get("archived"), "archived", default=False)
            properties = _requested_properties(body.get("properties") or (), store.schema)
            with self._lock:
                started_ms, found, missing = self._now_ms(), [], []
                for item in inputs:
                    row = store.rows.get(int(item["id"])) if str(item["id"]).isdigit() else None
                    if row is None or (row.archived_ms is not None) != archived:
                        missing.append(str(item["id"]))
                    else:
                        found.append(store.render(row, properties))
            singular = store.schema.name.upper().removesuffix("S")
            errors = [
                {
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {singular} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    "context": {"ids": missing},
                }
            ]
            return _batch_answer(found, errors if missing else [], started_ms)

        return batch_read

    async def _read_associations(self, request: Request) -> Response:
        """`POST /crm/v4/associations/{from}/{to}/batch/read`: per input id, its associated ids (at most
        ASSOCIATIONS_PAGE, then `paging.next.after`); an id with none is a NO_ASSOCIATIONS_FOUND error (207)."""
        names = [request.path_params[name] for name in ("from_type", "to_type")]
        types = [_OBJECT_TYPE_NAMES.get(name.lower()) for name in names]
        if None in types or types[0] == types[1]:
            raise _validation_error(f"Associations between {names[0]} and {names[1]} are not served by the sandbox")
        inputs = _batch_inputs(await self._json_body(request), ASSOCIATIONS_BATCH_MAX)
        from_type, to_type = str(types[0]), str(types[1])
        kind = MEETING_TO_CONTACT if from_type == "meetings" else CONTACT_TO_MEETING
        results, errors = [], []
        with self._lock:
            started_ms = self._now_ms()
            for item in inputs:
                object_id, after = str(item["id"]), str(item.get("after") or "0")
                ids = self._associations.associated(from_type, int(object_id)) if object_id.isdigit() else []
                if not ids:
                    from_name, to_name = from_type.removesuffix("s"), to_type.removesuffix("s")
                    errors.append(
                        {
                            "category": "OBJECT_NOT_FOUND",
                            "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                            "message": f"No {to_name} is associated with {from_name} {object_id}.",
                            "context": {
                                "fromObjectId": [object_id],
                                "fromObjectType": [from_name],
                                "toObjectType": [to_name],
                            },
                        }
                    )
                    continue
                offset = int(after) if after.isdigit() else 0
                result: dict[str, Any] = {
                    "from": {"id": object_id},
                    "to": [
                        {"toObjectId": to_id, "associationTypes": [kind]}
                        for to_id in ids[offset : offset + ASSOCIATIONS_PAGE]
                    ],
                }
                if offset + ASSOCIATIONS_PAGE < len(ids):
                    result["paging"] = {"next": {"after": str(offset + ASSOCIATIONS_PAGE)}}
                results.append(result)
        return _batch_answer(results, errors, started_ms)

    # --- HTTP: owners ---------------------------------------------------------------------------------------------

    async def _list_owners(self, request: Request) -> Response:
        params = request.query_params
        limit = _parse_limit(params.get("limit"), OWNER_PAGE_DEFAULT, OWNER_PAGE_MAX)
        archived = _parse_boolean(params.get("archived"), "archived", default=False)
        after = _parse_after(params.get("after"))
        email = (params.get("email") or "").lower()
        with self._lock:
            owners = [
                owner
                for owner in self._owners.ordered(archived=archived)
                if owner.id >= after and (not email or owner.email.lower() == email)
            ]
            results = [owner.render() for owner in owners[:limit]]
        next_after = owners[limit].id if len(owners) > limit else None
        return _paged(request, results, next_after)

    async def _get_owner(self, request: Request) -> Response:
        params = request.query_params
        archived = _parse_boolean(params.get("archived"), "archived", default=False)
        id_property = params.get("idProperty") or "id"
        if id_property not in ("id", "userId"):
            raise _validation_error(f"idProperty must be one of id, userId; got '{id_property}'")
        wanted = request.path_params["owner_id"]
        with self._lock:
            found = [
                owner
                for owner in self._owners.rows.values()
                if str(owner.id if id_property == "id" else owner.user_id) == wanted
                and (owner.archived_ms is not None) == archived
            ]
            record = found[0].render() if found else None
        if record is None:
            raise _not_found()
        return json_response(record)

    # --- app ----------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            category = "OBJECT_NOT_FOUND" if status_code == 404 else "VALIDATION_ERROR"
            message = "resource not found" if status_code == 404 else str(getattr(error, "detail", error))
            return HubSpotApiError(status_code, category, message).response()

        crm = self._crm_endpoint
        routes = [
            Route("/oauth/authorize", with_consent_page(self._authorize, "HubSpot"), methods=["GET", "POST"]),
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/oauth/v1/access-tokens/{token}", self._access_token_info, methods=["GET"]),
            Route("/oauth/v1/refresh-tokens/{token}", self._refresh_token_info, methods=["GET"]),
            Route("/oauth/v1/refresh-tokens/{token}", self._revoke_refresh_token, methods=["DELETE"]),
            # The SDK calls /crm/v3/owners/ (trailing slash); HubSpot answers without it too.
            Route("/crm/v3/owners/", crm(self._list_owners, OWNERS_SCOPE), methods=["GET"]),
            Route("/crm/v3/owners", crm(self._list_owners, OWNERS_SCOPE), methods=["GET"]),
            Route("/crm/v3/owners/{owner_id}", crm(self._get_owner, OWNERS_SCOPE), methods=["GET"]),
            *self.push.routes(),
            Route("/crm/v3/properties/{object_type}", crm(self.properties.list_properties, READ_SCOPE)),
            Route(
                "/crm/v4/associations/{from_type}/{to_type}/batch/read",
                crm(self._read_associations, READ_SCOPE),
                methods=["POST"],
            ),
        ]
        for store in (self._contacts, self._meetings):
            base = f"/crm/v3/objects/{store.schema.name}"
            one = f"{base}/{{object_id}}"
            routes += [
                Route(base, crm(self._list_objects(store), READ_SCOPE), methods=["GET"]),
                Route(base, crm(self._create_object(store), WRITE_SCOPE), methods=["POST"]),
                Route(f"{base}/search", crm(self._search_objects(store), READ_SCOPE, search=True), methods=["POST"]),
                Route(f"{base}/batch/read", crm(self._batch_read(store), READ_SCOPE), methods=["POST"]),
                Route(one, crm(self._get_object(store), READ_SCOPE), methods=["GET"]),
                Route(one, crm(self._update_object(store), WRITE_SCOPE), methods=["PATCH"]),
                Route(one, crm(self._archive_object(store), WRITE_SCOPE), methods=["DELETE"]),
            ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error},
        )


def _parse_limit(raw: str | None, default: int, maximum: int) -> int:
    try:
        limit = int(raw) if raw not in (None, "") else default
    except ValueError:
        raise _validation_error(f"Unable to parse query parameter 'limit' with value '{raw}' as an integer") from None
    if not 1 <= limit <= maximum:
        raise _validation_error(f"limit must be between 1 and {maximum}, got {limit}")
    return limit


def _parse_after(raw: str | None) -> int:
    after = raw or "0"
    if not after.isdigit():
        raise _validation_error(f"Invalid 'after' paging cursor '{after}'")
    return int(after)


def _listed(values: Iterable[str]) -> Iterable[str]:
    """`properties` may be repeated and each value comma separated."""
    return (name for value in values for name in value.split(","))


def _paged(request: Request, results: list[dict[str, Any]], next_after: int | None) -> Response:
    body: dict[str, Any] = {"results": results}
    if next_after is not None:
        link = str(request.url.include_query_params(after=str(next_after)))
        body["paging"] = {"next": {"after": str(next_after), "link": link}}
    return json_response(body)
