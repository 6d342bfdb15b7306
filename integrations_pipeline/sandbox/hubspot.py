"""A HubSpot CRM v3 sandbox: OAuth, contacts CRUD, list paging, search and rate limits, served over real HTTP.

Behaviour follows HubSpot's public API documentation closely enough that the official Python SDK
(`hubspot-api-client`) and our connector can both run against it unchanged. Data is generated from a seed, so
the same `seed` and `contacts` always give the same ids, properties and timestamps.

Performance matters because benchmarks page through 100,000 contacts: rows are generated with a handful of
bulk random draws, live and archived ids are kept in sorted lists so a page is one bisect plus a slice, JSON is
only built for the page being served, and a search's ordered match list is cached until the next mutation.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    AccessStatus,
    Clock,
    DailyQuota,
    OAuthAuthorizationServer,
    OAuthError,
    OAuthErrorKind,
    RequestLogMiddleware,
    RequestRecord,
    SlidingWindowRateLimiter,
    json_response,
    new_correlation_id,
    read_form,
    synchronized,
)

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
BURST_WINDOW_S = 10
READ_SCOPE = "crm.objects.contacts.read"
WRITE_SCOPE = "crm.objects.contacts.write"
SANDBOX_USER = "sandbox@example.com"
SANDBOX_USER_ID = 1_000_001

STRING_PROPERTIES = ("firstname", "lastname", "email", "phone", "company", "jobtitle", "lifecyclestage")
DATETIME_PROPERTIES = ("createdate", "lastmodifieddate")
CONTACT_PROPERTIES = frozenset((*STRING_PROPERTIES, *DATETIME_PROPERTIES, "hs_object_id"))
READ_ONLY_PROPERTIES = frozenset(("hs_object_id", "createdate", "lastmodifieddate"))
DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
ALWAYS_RETURNED_PROPERTIES = ("createdate", "hs_object_id", "lastmodifieddate")
"""HubSpot adds these to every record even when the caller asked for other properties."""
QUERY_SEARCHED_PROPERTIES = ("firstname", "lastname", "email", "phone", "company")

SUPPORTED_OPERATORS = frozenset(
    ("EQ", "NEQ", "GT", "GTE", "LT", "LTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
)

# --- deterministic data --------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
CREATED_FROM_MS = (datetime(2025, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
CREATED_UNTIL_MS = (datetime(2026, 6, 1, tzinfo=UTC) - _EPOCH) // _MS
MODIFIED_UNTIL_MS = (datetime(2026, 9, 1, tzinfo=UTC) - _EPOCH) // _MS

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Chen", "Dara", "Elena", "Emeka", "Farah", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Lars", "Leila", "Mateo", "Mira", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
    "Viktor", "Wen", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Silva", "Tanaka", "Ueda", "Varga",
    "Weber", "Xu", "Yilmaz", "Zhang",
)  # fmt: skip
COMPANIES = (
    "Acme Analytics", "Blue Harbor", "Cobalt Labs", "Delta Freight", "Evergreen Health", "Foxglove Media",
    "Granite Works", "Helios Energy", "Ironbark Foods", "Juniper Retail", "Kestrel Finance", "Lumen Studio",
)  # fmt: skip
JOB_TITLES = (
    "Account Executive", "CTO", "Data Engineer", "Designer", "Founder", "Head of Growth", "Marketing Manager",
    "Operations Lead", "Product Manager", "Sales Director", "Software Engineer", "VP Finance",
)  # fmt: skip
LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist",
    "other",
)  # fmt: skip


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
class _ContactRow:
    id: int
    values: dict[str, str]
    """String properties only; dates and hs_object_id are derived from the fields below."""
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None

    def property_value(self, name: str) -> str | None:
        if name == "hs_object_id":
            return str(self.id)
        if name == "createdate":
            return _iso_from_ms(self.created_ms)
        if name == "lastmodifieddate":
            return _iso_from_ms(self.updated_ms)
        value = self.values.get(name)
        return value if value != "" else None


def _generate_contacts(count: int, seed: int) -> list[_ContactRow]:
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
        _ContactRow(
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


class ContactInput(_Lenient):
    properties: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("properties", mode="before")
    @classmethod
    def _values_as_text(cls, properties: Any) -> Any:
        if isinstance(properties, dict):
            return {name: _as_text(value) for name, value in properties.items()}
        return properties


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


def _requested_properties(names: Iterable[str]) -> tuple[str, ...]:
    """Known requested properties plus the ones HubSpot always returns; unknown names are silently dropped."""
    requested = [name.strip() for name in names if name.strip()]
    if not requested:
        return DEFAULT_PROPERTIES
    known = {name for name in requested if name in CONTACT_PROPERTIES}
    return tuple(sorted(known.union(ALWAYS_RETURNED_PROPERTIES)))


# --- search compilation ------------------------------------------------------------------------------------------

_RowPredicate = Callable[[_ContactRow], bool]
_SortKey = Callable[[_ContactRow], Any]


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


def _compile_filter(search_filter: SearchFilter) -> _RowPredicate:
    name, operator = search_filter.propertyName, search_filter.operator.upper()
    if name not in CONTACT_PROPERTIES:
        raise _validation_error(f"Property '{name}' does not exist on contacts and cannot be used in a filter")
    if operator not in SUPPORTED_OPERATORS:
        raise _validation_error(f"Operator '{search_filter.operator}' is not supported by the sandbox")

    if name in DATETIME_PROPERTIES or name == "hs_object_id":
        read_number: Callable[[_ContactRow], int]
        if name == "createdate":
            read_number = lambda row: row.created_ms  # noqa: E731
        elif name == "lastmodifieddate":
            read_number = lambda row: row.updated_ms  # noqa: E731
        else:
            read_number = lambda row: row.id  # noqa: E731
        if operator == "HAS_PROPERTY":
            return lambda row: True
        if operator == "NOT_HAS_PROPERTY":
            return lambda row: False

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
            return lambda row: low <= read_number(row) <= high
        bound = as_number(search_filter.value)
        return lambda row: _compare(operator, read_number(row), bound)

    # String properties compare case-insensitively; a missing value only matches NEQ, NOT_IN and NOT_HAS_PROPERTY.
    def read_text(row: _ContactRow) -> str | None:
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


def _sort_key(name: str) -> _SortKey:
    if name == "createdate":
        return lambda row: row.created_ms
    if name == "lastmodifieddate":
        return lambda row: row.updated_ms
    if name == "hs_object_id":
        return lambda row: row.id
    # Missing values sort after present ones when ascending, as HubSpot lists blanks last.
    return lambda row: (0, value.lower()) if (value := row.values.get(name)) else (1, "")


@dataclass(frozen=True)
class _CompiledSearch:
    groups: tuple[tuple[_RowPredicate, ...], ...]
    sorts: tuple[tuple[str, bool], ...]
    """(property, descending) in priority order."""
    query: str | None
    cache_key: str


def _compile_search(search: SearchRequest) -> _CompiledSearch:
    if len(search.filterGroups) > SEARCH_MAX_FILTER_GROUPS:
        raise _validation_error(f"Too many filter groups: at most {SEARCH_MAX_FILTER_GROUPS} are allowed")
    if any(len(group.filters) > SEARCH_MAX_FILTERS_PER_GROUP for group in search.filterGroups):
        raise _validation_error(f"Too many filters in a group: at most {SEARCH_MAX_FILTERS_PER_GROUP} are allowed")
    if sum(len(group.filters) for group in search.filterGroups) > SEARCH_MAX_FILTERS_TOTAL:
        raise _validation_error(f"Too many filters: at most {SEARCH_MAX_FILTERS_TOTAL} in total are allowed")
    groups = tuple(
        tuple(_compile_filter(search_filter) for search_filter in group.filters)
        for group in search.filterGroups
        if group.filters
    )
    sorts: list[tuple[str, bool]] = []
    for sort in search.sorts:
        name, descending = (
            (sort, False) if isinstance(sort, str) else (sort.propertyName, sort.direction == "DESCENDING")
        )
        if name not in CONTACT_PROPERTIES:
            raise _validation_error(f"Property '{name}' does not exist on contacts and cannot be used to sort")
        sorts.append((name, descending))
    query = search.query.strip().lower() if search.query and search.query.strip() else None
    cache_key = json.dumps(
        {"filterGroups": [group.model_dump() for group in search.filterGroups], "sorts": sorts, "query": query},
        sort_keys=True,
    )
    return _CompiledSearch(groups, tuple(sorts), query, cache_key)


def _rate_limit_headers(
    burst_limit: int, burst_remaining: int, daily_limit: int, daily_remaining: int
) -> dict[str, str]:
    return {
        "X-HubSpot-RateLimit-Max": str(burst_limit),
        "X-HubSpot-RateLimit-Remaining": str(burst_remaining),
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(BURST_WINDOW_S * 1000),
        "X-HubSpot-RateLimit-Daily": str(daily_limit),
        "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining),
    }


def _with_query(url: str, extra: dict[str, str]) -> str:
    """Append parameters to a redirect URI while keeping any query it already has."""
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- the emulator ------------------------------------------------------------------------------------------------


class HubSpotEmulator:
    """One HubSpot portal with one OAuth app; serve `app` with any ASGI server.

    Inspection and mutation methods are thread-safe, so tests can call them while the app serves requests
    from another thread. `clock` (seconds since the epoch) lets tests move time for token expiry and rate
    limits without sleeping; generated data never depends on it.
    """

    SEARCH_CACHE_SIZE = 16

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        contacts: int = 2_000,
        seed: int = 7,
        access_token_ttl_s: int = 1800,
        burst_limit: int | None = 100,
        daily_limit: int = 250_000,
        portal_id: int = 62515,
        clock: Clock = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self.client_id = client_id
        self.portal_id = portal_id
        self.app_id = zlib.crc32(client_id.encode()) % 9_000_000 + 1_000_000
        self.clock = clock
        self.request_log: list[RequestRecord] = []
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret}, access_token_ttl_s=access_token_ttl_s, clock=clock
        )
        # HubSpot advertises 100 per 10 s for most apps; keep advertising that when enforcement is switched off.
        self._burst = SlidingWindowRateLimiter(burst_limit, BURST_WINDOW_S, clock, reported_limit=100)
        self._daily = DailyQuota(daily_limit, clock)

        rows = _generate_contacts(contacts, seed)
        self._rows: dict[int, _ContactRow] = {row.id: row for row in rows}
        self._live_ids: list[int] = [row.id for row in rows]
        self._archived_ids: list[int] = []
        self._id_by_email: dict[str, int] = {row.values["email"]: row.id for row in rows}
        self._next_id = contacts + 1
        self._version = 0  # bumped by every mutation; invalidates cached search results
        self._search_cache: OrderedDict[tuple[int, str], list[int]] = OrderedDict()
        self.app = self._build_app()

    # --- state inspection and mutation (Python side) --------------------------------------------------------------

    @synchronized
    def contact_records(self, *, include_archived: bool = True) -> list[dict[str, Any]]:
        """Every contact with all its properties (None where unset), ordered by id."""
        ids = sorted(self._live_ids + self._archived_ids) if include_archived else list(self._live_ids)
        records = []
        for contact_id in ids:
            row = self._rows[contact_id]
            records.append(
                {
                    "id": str(row.id),
                    "properties": {name: row.property_value(name) for name in sorted(CONTACT_PROPERTIES)},
                    "archived": row.archived_ms is not None,
                    "archivedAt": _iso_from_ms(row.archived_ms) if row.archived_ms is not None else None,
                    "createdAt": _iso_from_ms(row.created_ms),
                    "updatedAt": _iso_from_ms(row.updated_ms),
                }
            )
        return records

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
        try:
            self._update(contact_id, properties)
        except HubSpotApiError as error:
            raise (KeyError if error.status_code == 404 else ValueError)(error.message) from None

    def create_contact(self, properties: dict[str, str]) -> str:
        try:
            return str(self._create(properties).id)
        except HubSpotApiError as error:
            raise ValueError(error.message) from None

    def archive_contact(self, contact_id: str) -> None:
        if not self._archive(contact_id):
            raise KeyError(contact_id)

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        self._oauth.revoke_all_refresh_tokens()

    # --- state operations shared by HTTP and Python callers ------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _live_row(self, contact_id: str) -> _ContactRow:
        row = self._rows.get(int(contact_id)) if contact_id.isdigit() else None
        if row is None or row.archived_ms is not None:
            raise _not_found()
        return row

    def _check_writable(self, properties: Mapping[str, str | None], *, editing_id: int | None) -> None:
        problems = []
        for name in properties:
            if name not in CONTACT_PROPERTIES:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
            elif name in READ_ONLY_PROPERTIES:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
        if problems:
            raise _validation_error(f"Property values were not valid: {json.dumps(problems)}")
        email = (properties.get("email") or "").lower()
        existing_id = self._id_by_email.get(email) if email else None
        if existing_id is not None and existing_id != editing_id:
            raise HubSpotApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing_id}")

    def _set_values(self, row: _ContactRow, properties: Mapping[str, str | None]) -> None:
        for name, value in properties.items():
            if name == "email":
                self._id_by_email.pop(row.values.get("email", "").lower(), None)
                if value:
                    self._id_by_email[value.lower()] = row.id
            row.values[name] = value or ""
        row.updated_ms = max(self._now_ms(), row.created_ms)
        self._version += 1

    @synchronized
    def _create(self, properties: Mapping[str, str | None]) -> _ContactRow:
        self._check_writable(properties, editing_id=None)
        now_ms = self._now_ms()
        row = _ContactRow(self._next_id, {}, now_ms, now_ms)
        self._next_id += 1
        self._rows[row.id] = row
        self._live_ids.append(row.id)  # ids only grow, so the list stays sorted
        self._set_values(row, properties)
        return row

    @synchronized
    def _update(self, contact_id: str, properties: Mapping[str, str | None]) -> _ContactRow:
        row = self._live_row(contact_id)
        self._check_writable(properties, editing_id=row.id)
        self._set_values(row, properties)
        return row

    @synchronized
    def _archive(self, contact_id: str) -> bool:
        """False if the id never existed; archiving an archived contact is a no-op, as in HubSpot."""
        row = self._rows.get(int(contact_id)) if contact_id.isdigit() else None
        if row is None:
            return False
        if row.archived_ms is None:
            now_ms = self._now_ms()
            row.archived_ms = now_ms
            row.updated_ms = max(now_ms, row.created_ms)
            del self._live_ids[bisect.bisect_left(self._live_ids, row.id)]
            bisect.insort(self._archived_ids, row.id)
            self._id_by_email.pop(row.values.get("email", "").lower(), None)
            self._version += 1
        return True

    @staticmethod
    def _render(row: _ContactRow, properties: tuple[str, ...]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": str(row.id),
            "properties": {name: row.property_value(name) for name in properties},
            "createdAt": _iso_from_ms(row.created_ms),
            "updatedAt": _iso_from_ms(row.updated_ms),
            "archived": row.archived_ms is not None,
        }
        if row.archived_ms is not None:
            record["archivedAt"] = _iso_from_ms(row.archived_ms)
        return record

    @staticmethod
    def _render_written(row: _ContactRow) -> dict[str, Any]:
        """Create and update answer with every property that has a value."""
        names = sorted(name for name in CONTACT_PROPERTIES if row.property_value(name) is not None)
        return HubSpotEmulator._render(row, tuple(names))

    @synchronized
    def _list_page(
        self, *, archived: bool, after_id: int, limit: int, properties: tuple[str, ...]
    ) -> tuple[list[dict[str, Any]], int | None]:
        ids = self._archived_ids if archived else self._live_ids
        start = bisect.bisect_left(ids, after_id)
        page_ids = ids[start : start + limit]
        next_after = page_ids[-1] + 1 if page_ids and start + limit < len(ids) else None
        return [self._render(self._rows[contact_id], properties) for contact_id in page_ids], next_after

    @synchronized
    def _search_matches(self, compiled: _CompiledSearch) -> list[int]:
        """Ids of live contacts matching the search, in result order; cached until the next mutation."""
        cache_key = (self._version, compiled.cache_key)
        cached = self._search_cache.get(cache_key)
        if cached is not None:
            self._search_cache.move_to_end(cache_key)
            return cached
        rows: Iterable[_ContactRow] = (self._rows[contact_id] for contact_id in self._live_ids)
        if compiled.groups:
            groups = compiled.groups
            rows = (row for row in rows if any(all(matches(row) for matches in group) for group in groups))
        if compiled.query:
            query = compiled.query
            rows = (
                row
                for row in rows
                if any(query in row.values.get(name, "").lower() for name in QUERY_SEARCHED_PROPERTIES)
            )
        ordered = list(rows)  # already by id ascending, the tie-breaker for every sort
        for name, descending in reversed(compiled.sorts):
            ordered.sort(key=_sort_key(name), reverse=descending)  # stable, so earlier sorts take priority
        matches = [row.id for row in ordered]
        self._search_cache[cache_key] = matches
        if len(self._search_cache) > self.SEARCH_CACHE_SIZE:
            self._search_cache.popitem(last=False)
        return matches

    @synchronized
    def _render_ids(self, ids: list[int], properties: tuple[str, ...]) -> list[dict[str, Any]]:
        return [self._render(self._rows[contact_id], properties) for contact_id in ids]

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
        self, handler: Callable[[Request], Awaitable[Response]], scope: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check scope, count against the burst and daily limits, then run `handler`."""

        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            with self._lock:
                status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
                authorized = status is AccessStatus.VALID and access is not None and scope in access.scopes
                burst = self._burst.hit() if authorized else self._burst.peek()
                daily_ok = authorized and burst.allowed and self._daily.try_consume()
                headers = _rate_limit_headers(burst.limit, burst.remaining, self._daily.limit, self._daily.remaining)
                expired_for_s = self.clock() - access.expires_at if access is not None else 0.0
                daily_retry_after_s = self._daily.seconds_until_reset()
            response = self._refusal(status, token, expired_for_s, authorized, scope, burst.allowed, daily_ok)
            if response is not None:
                if not burst.allowed:
                    response.headers["Retry-After"] = str(burst.retry_after_s)
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
    def _refusal(
        status: AccessStatus,
        token: str,
        expired_for_s: float,
        authorized: bool,
        scope: str,
        burst_ok: bool,
        daily_ok: bool,
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
        if not burst_ok:
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

    async def _list_contacts(self, request: Request) -> Response:
        params = request.query_params
        raw_limit = params.get("limit")
        try:
            limit = int(raw_limit) if raw_limit not in (None, "") else LIST_PAGE_DEFAULT
        except ValueError:
            raise _validation_error(
                f"Unable to parse query parameter 'limit' with value '{raw_limit}' as an integer"
            ) from None
        if not 1 <= limit <= LIST_PAGE_MAX:
            raise _validation_error(f"limit must be between 1 and {LIST_PAGE_MAX}, got {limit}")
        archived = _parse_boolean(params.get("archived"), "archived", default=False)
        after = params.get("after") or "0"
        if not after.isdigit():
            raise _validation_error(f"Invalid 'after' paging cursor '{after}'")
        properties = _requested_properties(name for value in params.getlist("properties") for name in value.split(","))
        results, next_after = self._list_page(
            archived=archived, after_id=int(after), limit=limit, properties=properties
        )
        body: dict[str, Any] = {"results": results}
        if next_after is not None:
            link = str(request.url.include_query_params(after=str(next_after)))
            body["paging"] = {"next": {"after": str(next_after), "link": link}}
        return json_response(body)

    async def _get_contact(self, request: Request) -> Response:
        params = request.query_params
        contact_id = request.path_params["contact_id"]
        archived = _parse_boolean(params.get("archived"), "archived", default=False)
        id_property = params.get("idProperty") or "hs_object_id"
        if id_property not in ("hs_object_id", "email"):
            raise _validation_error(f"idProperty '{id_property}' is not a unique identifier property for contacts")
        properties = _requested_properties(name for value in params.getlist("properties") for name in value.split(","))
        with self._lock:
            if id_property == "email":
                found_id = self._id_by_email.get(contact_id.lower())
                contact_id = str(found_id) if found_id is not None else ""
            row = self._rows.get(int(contact_id)) if contact_id.isdigit() else None
            if row is None or (row.archived_ms is not None) != archived:
                raise _not_found()
            record = self._render(row, properties)
        return json_response(record)

    async def _contact_input(self, request: Request) -> dict[str, str | None]:
        try:
            return ContactInput.model_validate(await self._json_body(request)).properties
        except ValidationError as error:
            raise _validation_error(f"Invalid input JSON: {error.errors(include_url=False)}") from None

    async def _create_contact(self, request: Request) -> Response:
        properties = await self._contact_input(request)
        with self._lock:
            record = self._render_written(self._create(properties))
        return json_response(record, 201)

    async def _update_contact(self, request: Request) -> Response:
        properties = await self._contact_input(request)
        with self._lock:
            record = self._render_written(self._update(request.path_params["contact_id"], properties))
        return json_response(record)

    async def _archive_contact(self, request: Request) -> Response:
        if not self._archive(request.path_params["contact_id"]):
            raise _not_found()
        return Response(status_code=204)

    async def _search_contacts(self, request: Request) -> Response:
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
        compiled = _compile_search(search)
        matches = self._search_matches(compiled)
        total = len(matches)
        if offset >= SEARCH_RESULT_CAP or min(offset + search.limit, total) > SEARCH_RESULT_CAP:
            raise _validation_error(
                f"Search results are limited to {SEARCH_RESULT_CAP} per query: after={offset} with "
                f"limit={search.limit} reaches past result {SEARCH_RESULT_CAP} of {total}. "
                "Narrow the filters to page further."
            )
        page_ids = matches[offset : offset + search.limit]
        properties = _requested_properties(search.properties)
        body: dict[str, Any] = {"total": total, "results": self._render_ids(page_ids, properties)}
        next_offset = offset + len(page_ids)
        if page_ids and next_offset < total:
            body["paging"] = {"next": {"after": str(next_offset)}}
        return json_response(body)

    # --- app ----------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            category = "OBJECT_NOT_FOUND" if status_code == 404 else "VALIDATION_ERROR"
            message = "resource not found" if status_code == 404 else str(getattr(error, "detail", error))
            return HubSpotApiError(status_code, category, message).response()

        contacts = "/crm/v3/objects/contacts"
        routes = [
            Route("/oauth/authorize", self._authorize, methods=["GET"]),
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/oauth/v1/access-tokens/{token}", self._access_token_info, methods=["GET"]),
            Route("/oauth/v1/refresh-tokens/{token}", self._refresh_token_info, methods=["GET"]),
            Route("/oauth/v1/refresh-tokens/{token}", self._revoke_refresh_token, methods=["DELETE"]),
            Route(contacts, self._crm_endpoint(self._list_contacts, READ_SCOPE), methods=["GET"]),
            Route(contacts, self._crm_endpoint(self._create_contact, WRITE_SCOPE), methods=["POST"]),
            Route(f"{contacts}/search", self._crm_endpoint(self._search_contacts, READ_SCOPE), methods=["POST"]),
            Route(f"{contacts}/{{contact_id}}", self._crm_endpoint(self._get_contact, READ_SCOPE), methods=["GET"]),
            Route(
                f"{contacts}/{{contact_id}}", self._crm_endpoint(self._update_contact, WRITE_SCOPE), methods=["PATCH"]
            ),
            Route(
                f"{contacts}/{{contact_id}}", self._crm_endpoint(self._archive_contact, WRITE_SCOPE), methods=["DELETE"]
            ),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error},
        )
