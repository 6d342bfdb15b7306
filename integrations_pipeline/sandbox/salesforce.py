"""A Salesforce REST sandbox: OAuth (refresh-token rotation is the connected app's opt-in setting, off by default),
SOQL `query` / `queryAll` over User, Contact and Event with server-side query cursors, the delete log, sObject
writes and describes, the versions list, `/limits` and the org's API allowance.

Behaviour follows Salesforce's public documentation closely enough that simple-salesforce and our connector run
against it unchanged: errors are Salesforce's JSON list `[{"message", "errorCode"}]`, records carry
`attributes`, datetimes look like `2026-01-01T12:00:00.000+0000`, and pages are followed via `nextRecordsUrl`.
Data is generated from a seed, so the same seed and sizes always give the same ids, values and timestamps.

SOQL is a deliberately small subset (what replication clients send): `SELECT f, ... | COUNT() FROM Object [WHERE a op
literal AND ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST]] [LIMIT n]`, where `op literal` may be `IN (literal, ...)`
and a date or datetime literal may also be a relative date literal (TODAY, YESTERDAY, LAST_N_DAYS:n, THIS_MONTH, ...;
the org's time zone is UTC); anything else is `MALFORMED_QUERY`. A request URI over 16,384 bytes is refused with 414
URI Too Long, as Salesforce refuses it: sent by GET, that is what bounds an `IN` list (long before SOQL's own
100,000-character statement limit).

Events carry invitees and related records as `EventRelation` rows (the org has Shared Activities on): `Relation` is
the polymorphic `Name` parent (a user, contact or account), and deleting an event deletes its relations with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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
    PICKLIST_SAMPLES,
    AccessStatus,
    Clock,
    OAuthAuthorizationServer,
    OAuthError,
    OAuthErrorKind,
    RequestLogMiddleware,
    RequestRecord,
    SlidingWindowRateLimiter,
    custom_field_sample,
    events_first_day,
    json_response,
    read_form,
    synchronized,
    with_consent_page,
)
from integrations_pipeline.sandbox.salesforce_push import SalesforcePush

__all__ = ["RequestRecord", "SalesforceEmulator"]

# --- Salesforce facts ----------------------------------------------------------------------------------------------

API_VERSION = "67.0"
"""The newest version this org serves (Summer '26); `GET /services/data` lists 31.0 up to it."""
OLDEST_API_VERSION = 31.0
DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
"""`Sforce-Query-Options: batchSize=N` is a preference clamped to [200, 2000], never an error."""
QUERY_LOCATOR_IDLE_S = 15 * 60
"""A query cursor unused for 15 minutes is gone: queryMore answers INVALID_QUERY_LOCATOR."""
MAX_OPEN_QUERY_LOCATORS = 10
"""Salesforce keeps 10 open cursors per user; opening an 11th deletes the oldest."""
RECYCLE_BIN_RETENTION_S = 15 * 86_400
API_ALLOWANCE_WINDOW_S = 86_400
REPORTED_API_ALLOWANCE = 15_000
DEFAULT_ACCESS_TOKEN_TTL_S = 2 * 3600  # the default session timeout; the token response never states it
DEFAULT_SCOPES = ("api", "refresh_token")
REFRESH_SCOPES = frozenset(("refresh_token", "offline_access"))

OTHER_LIMITS = {
    "ConcurrentAsyncGetReportInstances": 200,
    "ConcurrentSyncReportRuns": 20,
    "DailyAsyncApexExecutions": 250_000,
    "DailyBulkApiBatches": 15_000,
    "DailyBulkV2QueryFileStorageMB": 976_562,
    "DailyBulkV2QueryJobs": 10_000,
    "DailyStreamingApiEvents": 10_000,
    "DataStorageMB": 5,
    "FileStorageMB": 20,
    "HourlyODataCallout": 10_000,
    "SingleEmail": 15,
}
"""`GET /limits` entries besides DailyApiRequests, reported untouched (a Developer Edition org's maxima)."""
SOQL_MAX_CHARS = 100_000
"""Salesforce's default limit on a SOQL statement's length."""
MAX_URI_BYTES = 16_384
"""A REST request whose URI is longer is refused with 414 URI Too Long before it is authenticated."""
SESSION_EXPIRED = "Session expired or invalid"
NOT_FOUND_MESSAGE = "The requested resource does not exist"

# --- deterministic data --------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
ORG_CREATED_MS = (datetime(2025, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
CREATED_UNTIL_MS = (datetime(2026, 6, 1, tzinfo=UTC) - _EPOCH) // _MS
MODIFIED_UNTIL_MS = (datetime(2026, 9, 1, tzinfo=UTC) - _EPOCH) // _MS
EVENT_FIRST_DAY = date(2026, 6, 1)
EVENT_DAYS = 92
ALL_DAY_SHARE = 0.1

EVENT_SUBJECTS = ("Call", "Demo", "Discovery call", "Kick-off", "Quarterly review", "Renewal", "Workshop", "Lunch")
LOCATIONS = ("Zoom", "Teams", "HQ, room 2", "Customer site", None, None)


def _iso_from_ms(epoch_ms: int) -> str:
    """Salesforce's JSON datetime: UTC with milliseconds and a `+0000` offset."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}+0000"


def _ms_from_datetime(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def _record_id(prefix: str, number: int) -> str:
    """An 18-character id: key prefix, pod, zero-padded counter (so text order is creation order), suffix."""
    return f"{prefix}Dn{number:010d}AAA"


# --- schema --------------------------------------------------------------------------------------------------------

# Field kinds decide which SOQL literals a filter accepts and how a value is rendered.
ID, STRING, BOOLEAN, DATETIME, DATE, INT, REFERENCE = "id", "string", "boolean", "datetime", "date", "int", "ref"
DOUBLE, PICKLIST = "double", "picklist"
CUSTOM_KINDS = (STRING, BOOLEAN, DATETIME, DATE, INT, DOUBLE, PICKLIST)
DEFAULT_CUSTOM_FIELDS: dict[str, dict[str, str]] = {
    "User": {"Region__c": PICKLIST},
    "Contact": {"Lead_Score__c": DOUBLE, "Tier__c": PICKLIST, "Is_Partner__c": BOOLEAN, "Renewal_Date__c": DATE},
    "Event": {"Meeting_Type__c": PICKLIST},
}
"""Each org's own `__c` fields (name -> kind) until a test adds or removes some (`add_custom_field`)."""


@dataclass(frozen=True)
class _Relation:
    """A parent field reached through a lookup, such as Contact `Account.Name`."""

    relationship: str  # "Account"
    lookup_field: str  # "AccountId"
    parent_type: str  # "Account", or "Name" for a polymorphic lookup (the id's key prefix says which object)
    parent_field: str  # "Name"


@dataclass(frozen=True)
class _SObject:
    name: str
    key_prefix: str
    fields: dict[str, str]
    """Canonical API name -> kind, in describe order."""
    writable: frozenset[str]
    relations: dict[str, _Relation] = field(default_factory=dict)

    @property
    def has_is_deleted(self) -> bool:
        return "IsDeleted" in self.fields

    def canonical(self, name: str) -> str | None:
        """SOQL names are case-insensitive; records use the canonical spelling."""
        lowered = name.lower()
        for known in (*self.fields, *self.relations):
            if known.lower() == lowered:
                return known
        return None


_AUDIT_FIELDS = {"CreatedDate": DATETIME, "LastModifiedDate": DATETIME, "SystemModstamp": DATETIME}
USER = _SObject(
    "User",
    "005",
    {
        "Id": ID,
        "Username": STRING,
        "Email": STRING,
        "FirstName": STRING,
        "LastName": STRING,
        "Title": STRING,
        "IsActive": BOOLEAN,
        **_AUDIT_FIELDS,
    },  # User has no IsDeleted: users are deactivated, never deleted
    frozenset(("FirstName", "LastName", "Email", "Title", "IsActive")),
)
CONTACT = _SObject(
    "Contact",
    "003",
    {
        "Id": ID,
        "FirstName": STRING,
        "LastName": STRING,
        "Email": STRING,
        "Phone": STRING,
        "Title": STRING,
        "AccountId": REFERENCE,
        "IsDeleted": BOOLEAN,
        **_AUDIT_FIELDS,
    },
    frozenset(("FirstName", "LastName", "Email", "Phone", "Title", "AccountId")),
    {"Account.Name": _Relation("Account", "AccountId", "Account", "Name")},
)
EVENT = _SObject(
    "Event",
    "00U",
    {
        "Id": ID,
        "Subject": STRING,
        "Location": STRING,
        "StartDateTime": DATETIME,
        "EndDateTime": DATETIME,
        "IsAllDayEvent": BOOLEAN,
        "ActivityDate": DATE,
        "DurationInMinutes": INT,
        "OwnerId": REFERENCE,
        "WhoId": REFERENCE,  # the contact (or lead) invited; polymorphic at Salesforce, contacts only here
        "IsDeleted": BOOLEAN,
        **_AUDIT_FIELDS,
    },
    frozenset(
        ("Subject", "Location", "StartDateTime", "EndDateTime", "IsAllDayEvent", "ActivityDate", "OwnerId", "WhoId")
    ),
    {
        "Owner.Email": _Relation("Owner", "OwnerId", "User", "Email"),
        **{f"Who.{name}": _Relation("Who", "WhoId", "Contact", name) for name in ("Email", "FirstName", "LastName")},
    },
)
EVENT_RELATION = _SObject(
    "EventRelation",
    "0RE",
    {
        "Id": ID,
        "EventId": REFERENCE,
        "RelationId": REFERENCE,  # polymorphic: a user, contact or lead invited, or a related record (IsWhat)
        "Status": STRING,  # picklist: New, Accepted, Declined
        "RespondedDate": DATETIME,
        "Response": STRING,
        "IsInvitee": BOOLEAN,
        "IsParent": BOOLEAN,
        "IsWhat": BOOLEAN,
        "IsDeleted": BOOLEAN,
        **_AUDIT_FIELDS,
    },
    frozenset(("EventId", "RelationId", "Status", "RespondedDate", "Response", "IsInvitee", "IsParent", "IsWhat")),
    {f"Relation.{name}": _Relation("Relation", "RelationId", "Name", name) for name in ("Name", "Email")},
)
SOBJECTS = {sobject.name.lower(): sobject for sobject in (USER, CONTACT, EVENT, EVENT_RELATION)}
KEY_PREFIXES = {"005": "User", "003": "Contact", "001": "Account"}
"""What a polymorphic reference points at, by its id's first three characters."""


@dataclass(slots=True)
class _Row:
    id: str
    values: dict[str, Any]
    """Field -> value: str / bool / int; DATETIME fields hold epoch ms, DATE fields `date`, missing ones None."""
    deleted_ms: int | None = None


# --- errors --------------------------------------------------------------------------------------------------------


class SalesforceApiError(Exception):
    """Raised inside handlers; rendered as Salesforce's `[{"message", "errorCode"}]` body."""

    def __init__(self, status_code: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            body["fields"] = self.fields
        return json_response([body], self.status_code)


def _malformed(soql: str, column: int, detail: str) -> SalesforceApiError:
    pointer = " " * max(column - 1, 0) + "^"
    return SalesforceApiError(400, "MALFORMED_QUERY", f"\n{soql}\n{pointer}\nERROR at Row:1:Column:{column}\n{detail}")


def _invalid_field(soql: str, column: int, detail: str) -> SalesforceApiError:
    pointer = " " * max(column - 1, 0) + "^"
    return SalesforceApiError(400, "INVALID_FIELD", f"\n{soql}\n{pointer}\nERROR at Row:1:Column:{column}\n{detail}")


def _not_found() -> SalesforceApiError:
    return SalesforceApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


# --- SOQL ----------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<count>(?i:COUNT)\(\s*\))"
    r"|(?P<dateliteral>[A-Za-z_]+:\d+)"
    r"|(?P<number>\d+)"
    r"|(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<operator><=|>=|!=|<>|=|<|>)"
    r"|(?P<comma>,)"
    r"|(?P<lparen>\()"
    r"|(?P<rparen>\))"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)"
    r")"
)
_OPERATORS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda left, right: bool(left == right),
    "!=": lambda left, right: bool(left != right),
    "<": lambda left, right: left is not None and right is not None and bool(left < right),
    "<=": lambda left, right: left is not None and right is not None and bool(left <= right),
    ">": lambda left, right: left is not None and right is not None and bool(left > right),
    ">=": lambda left, right: left is not None and right is not None and bool(left >= right),
    "IN": lambda left, right: left in right,
}
_KIND_NAMES = {
    DATETIME: "dateTime", DATE: "date", BOOLEAN: "boolean", INT: "int", ID: "id", STRING: "string", DOUBLE: "double",
    PICKLIST: "string",
}  # fmt: skip


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int  # 1-based, as Salesforce reports it


@dataclass(frozen=True)
class _DateRange:
    """A relative date literal resolved to [start, end): epoch ms for datetime fields, `date`s for date fields."""

    start: Any
    end: Any

    def compare(self, operator: str, value: Any) -> bool:
        """SOQL compares a field with a range: `=` means inside it, `<` before its start, `>` after its end."""
        if value is None:
            return operator == "!="
        inside = bool(self.start <= value < self.end)
        return {
            "=": inside,
            "!=": not inside,
            "<": value < self.start,
            "<=": value < self.end,
            ">": value >= self.end,
            ">=": value >= self.start,
        }[operator]


def _month_start(day: date, months_ahead: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + months_ahead
    return date(index // 12, index % 12 + 1, 1)


def _relative_days(literal: str, today: date) -> tuple[date, date] | None:
    """The [first day, day after the last) of a relative date literal (Salesforce's documented set, weeks starting
    on Sunday as in the en_US locale), or None when the literal is not one."""
    name, _, number = literal.upper().partition(":")
    week = today - timedelta(days=(today.weekday() + 1) % 7)
    fixed = {
        "YESTERDAY": (today - timedelta(days=1), today),
        "TODAY": (today, today + timedelta(days=1)),
        "TOMORROW": (today + timedelta(days=1), today + timedelta(days=2)),
        "LAST_WEEK": (week - timedelta(days=7), week),
        "THIS_WEEK": (week, week + timedelta(days=7)),
        "NEXT_WEEK": (week + timedelta(days=7), week + timedelta(days=14)),
        "LAST_MONTH": (_month_start(today, -1), _month_start(today)),
        "THIS_MONTH": (_month_start(today), _month_start(today, 1)),
        "NEXT_MONTH": (_month_start(today, 1), _month_start(today, 2)),
        "LAST_90_DAYS": (today - timedelta(days=90), today + timedelta(days=1)),
        "NEXT_90_DAYS": (today + timedelta(days=1), today + timedelta(days=91)),
        "THIS_YEAR": (date(today.year, 1, 1), date(today.year + 1, 1, 1)),
        "LAST_YEAR": (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
        "NEXT_YEAR": (date(today.year + 1, 1, 1), date(today.year + 2, 1, 1)),
    }
    if not number:
        return fixed.get(name)
    days = int(number)
    counted = {
        # LAST_N_DAYS:n covers today and the n days before it; NEXT_N_DAYS:n the n days after today.
        "LAST_N_DAYS": (today - timedelta(days=days), today + timedelta(days=1)),
        "NEXT_N_DAYS": (today + timedelta(days=1), today + timedelta(days=days + 1)),
        "N_DAYS_AGO": (today - timedelta(days=days), today - timedelta(days=days - 1)),
        "LAST_N_WEEKS": (week - timedelta(days=7 * days), week),
        "NEXT_N_WEEKS": (week + timedelta(days=7), week + timedelta(days=7 * days + 7)),
        "LAST_N_MONTHS": (_month_start(today, -days), _month_start(today)),
        "NEXT_N_MONTHS": (_month_start(today, 1), _month_start(today, days + 1)),
    }
    return counted.get(name)


@dataclass(frozen=True)
class _Condition:
    field: str
    operator: str
    value: Any


@dataclass(frozen=True)
class _Query:
    sobject: _SObject
    fields: tuple[str, ...]
    """Empty for `SELECT COUNT()`, which answers totalSize and no records."""
    conditions: tuple[_Condition, ...]
    order_by: str | None
    descending: bool
    nulls_last: bool
    limit: int | None


def _tokenize(soql: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(soql):
        if soql[position:].strip() == "":
            break
        match = _TOKEN.match(soql, position)
        if match is None or match.lastgroup is None:
            start = len(soql) - len(soql[position:].lstrip())
            raise _malformed(soql, start + 1, f"unexpected token: '{soql[start:].split()[0]}'")
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup) + 1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, soql: str, today: date, custom: dict[str, dict[str, str]]) -> None:
        self.soql = soql
        self.today = today
        self.custom = custom
        self.tokens = _tokenize(soql)
        self.position = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise _malformed(self.soql, len(self.soql) + 1, f"unexpected end of query, expecting {expected}")
        self.position += 1
        return token

    def _keyword(self, *words: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text.upper() == words[0]:
            for word in words:
                got = self._next(word)
                if got.kind != "word" or got.text.upper() != word:
                    raise _malformed(self.soql, got.column, f"unexpected token: '{got.text}'")
            return True
        return False

    def _expect_keyword(self, word: str) -> None:
        token = self._next(word)
        if token.kind != "word" or token.text.upper() != word:
            raise _malformed(self.soql, token.column, f"unexpected token: '{token.text}'")

    def parse(self) -> _Query:
        self._expect_keyword("SELECT")
        selected: list[_Token] = []
        first = self._peek()
        counting = first is not None and first.kind == "count"
        self.position += counting
        while not counting:
            token = self._next("a field name")
            if token.kind != "word" or token.text.upper() == "FROM":
                raise _malformed(self.soql, token.column, f"unexpected token: '{token.text}'")
            selected.append(token)
            separator = self._peek()
            if separator is None or separator.kind != "comma":
                break
            self.position += 1
        self._expect_keyword("FROM")
        object_token = self._next("an object name")
        sobject = SOBJECTS.get(object_token.text.lower()) if object_token.kind == "word" else None
        if sobject is None:
            raise SalesforceApiError(
                400,
                "INVALID_TYPE",
                f"\n{self.soql}\nERROR at Row:1:Column:{object_token.column}\nsObject type '{object_token.text}' "
                "is not supported. If you are attempting to use a custom object, be sure to append the '__c' "
                "after the entity name.",
            )
        fields = tuple(dict.fromkeys(self._field(sobject, token) for token in selected))
        conditions: list[_Condition] = []
        if self._keyword("WHERE"):
            conditions.append(self._condition(sobject))
            while self._keyword("AND"):
                conditions.append(self._condition(sobject))
        order_by, descending, nulls_last = None, False, False
        if self._keyword("ORDER", "BY"):
            order_by = self._field(sobject, self._next("a field name"))
            if self._keyword("DESC"):
                descending, nulls_last = True, True  # DESC defaults to NULLS LAST, ASC to NULLS FIRST
            else:
                self._keyword("ASC")
            if self._keyword("NULLS"):
                token = self._next("FIRST or LAST")
                if token.text.upper() not in ("FIRST", "LAST"):
                    raise _malformed(self.soql, token.column, f"unexpected token: '{token.text}'")
                nulls_last = token.text.upper() == "LAST"
        limit = None
        if self._keyword("LIMIT"):
            token = self._next("a number")
            if token.kind != "number":
                raise _malformed(self.soql, token.column, f"unexpected token: '{token.text}'")
            limit = int(token.text)
        trailing = self._peek()
        if trailing is not None:
            raise _malformed(self.soql, trailing.column, f"unexpected token: '{trailing.text}'")
        return _Query(sobject, fields, tuple(conditions), order_by, descending, nulls_last, limit)

    def _field(self, sobject: _SObject, token: _Token) -> str:
        canonical = sobject.canonical(token.text) if token.kind == "word" else None
        if canonical is None and token.kind == "word":
            lowered = token.text.lower()
            canonical = next((name for name in self.custom.get(sobject.name, {}) if name.lower() == lowered), None)
        if canonical is None:
            raise _invalid_field(
                self.soql,
                token.column,
                f"No such column '{token.text}' on entity '{sobject.name}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        return canonical

    def _condition(self, sobject: _SObject) -> _Condition:
        field_token = self._next("a field name")
        name = self._field(sobject, field_token)
        if name in sobject.relations:
            raise _malformed(self.soql, field_token.column, "the sandbox filters on the object's own fields only")
        operator_token = self._next("an operator")
        kind = sobject.fields.get(name) or self.custom[sobject.name][name]
        if operator_token.kind == "word" and operator_token.text.upper() == "IN":
            return _Condition(name, "IN", self._in_list(kind, name))
        if operator_token.kind == "word" and operator_token.text.upper() in ("OR", "LIKE", "NOT"):
            raise _malformed(
                self.soql, operator_token.column, "the sandbox supports =, !=, <, <=, >, >=, IN joined by AND"
            )
        if operator_token.kind != "operator":
            raise _malformed(self.soql, operator_token.column, f"unexpected token: '{operator_token.text}'")
        operator = _OPERATORS[operator_token.text]
        value_token = self._next("a value")
        return _Condition(name, operator, self._literal(kind, name, operator, value_token))

    def _in_list(self, kind: str, name: str) -> frozenset[Any]:
        """`(literal, literal, ...)` after IN: at least one value, each of the field's type."""
        opening = self._next("(")
        if opening.kind != "lparen":
            raise _malformed(self.soql, opening.column, f"unexpected token: '{opening.text}'")
        values = [self._literal(kind, name, "=", self._next("a value"))]
        while (separator := self._next(")")).kind == "comma":
            values.append(self._literal(kind, name, "=", self._next("a value")))
        if separator.kind != "rparen":
            raise _malformed(self.soql, separator.column, f"unexpected token: '{separator.text}'")
        return frozenset(values)

    def _literal(self, kind: str, name: str, operator: str, token: _Token) -> Any:
        if token.kind == "word" and token.text.lower() == "null":
            if operator not in ("=", "!="):
                raise _malformed(self.soql, token.column, "null can only be compared with = or !=")
            return None
        if kind in (DATETIME, DATE) and token.kind in ("word", "dateliteral"):
            days = _relative_days(token.text, self.today)
            if days is None:
                raise _malformed(self.soql, token.column, f"unexpected token: '{token.text}'")
            if kind == DATE:
                return _DateRange(*days)
            return _DateRange(*(_ms_from_datetime(datetime.combine(day, datetime.min.time())) for day in days))
        if kind == DATETIME and token.kind == "datetime":
            return _ms_from_datetime(datetime.fromisoformat(token.text.replace("Z", "+00:00")))
        if kind == DATE and token.kind == "date":
            return date.fromisoformat(token.text)
        if kind == BOOLEAN and token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if kind in (INT, DOUBLE) and token.kind == "number":
            return int(token.text)
        if kind in (ID, STRING, REFERENCE, PICKLIST) and token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        quoted = " and should not be enclosed in quotes" if token.kind == "string" else ""
        raise _invalid_field(
            self.soql,
            token.column,
            f"value of filter criterion for field '{name}' must be of type {_KIND_NAMES.get(kind, 'id')}{quoted}",
        )


def parse_soql(soql: str, today: date, custom: dict[str, dict[str, str]] | None = None) -> _Query:
    """Parse `soql`; relative date literals resolve against `today` (the org's current day, UTC here); `custom`
    names the org's custom fields per object (name -> kind)."""
    if not soql.strip():
        raise SalesforceApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    if len(soql) > SOQL_MAX_CHARS:
        raise SalesforceApiError(
            400, "MALFORMED_QUERY", f"SOQL statements cannot be longer than {SOQL_MAX_CHARS} characters."
        )
    return _Parser(soql, today, custom if custom is not None else DEFAULT_CUSTOM_FIELDS).parse()


# --- data generation -----------------------------------------------------------------------------------------------


def _spread_ms(rng: random.Random, count: int, start_ms: int, end_ms: int) -> list[int]:
    """`count` rising creation times across [start, end), one random point per equal slot."""
    span = end_ms - start_ms
    slot = max(span // max(count, 1), 1)
    return [start_ms + index * span // max(count, 1) + int(rng.random() * slot) for index in range(count)]


def _generate_users(count: int, seed: int) -> list[_Row]:
    rng = random.Random(f"users-{seed}")  # noqa: S311 - reproducible sample data, not security
    created = _spread_ms(rng, count, ORG_CREATED_MS, CREATED_UNTIL_MS)
    rows = []
    for number, created_ms in enumerate(created, start=1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first.lower()}.{last.lower()}.{number}@sandbox-org.example"
        modified_ms = created_ms + int(rng.random() * (MODIFIED_UNTIL_MS - created_ms))
        rows.append(
            _Row(
                _record_id(USER.key_prefix, number),
                {
                    "Username": email + ".sandbox",
                    "Email": email,
                    "FirstName": first,
                    "LastName": last,
                    "Title": rng.choice(JOB_TITLES),
                    "IsActive": number == 1 or rng.random() < 0.9,  # the admin who authorizes is always active
                    "CreatedDate": created_ms,
                    "LastModifiedDate": modified_ms,
                    "SystemModstamp": modified_ms,
                },
            )
        )
    return rows


def _generate_contacts(count: int, seed: int, account_ids: list[str]) -> list[_Row]:
    """A handful of bulk draws and one comprehension: 100,000 contacts build in well under a second."""
    rng = random.Random(f"contacts-{seed}")  # noqa: S311 - reproducible sample data, not security
    first_names = rng.choices(FIRST_NAMES, k=count)
    last_names = rng.choices(LAST_NAMES, k=count)
    titles = rng.choices(JOB_TITLES, k=count)
    accounts: list[str | None] = [*account_ids, None, None]  # about one contact in seven has no account
    account_choices = rng.choices(accounts, k=count)
    created = _spread_ms(rng, count, ORG_CREATED_MS, CREATED_UNTIL_MS)
    draw = rng.random
    modified = [created_ms + int(draw() * (MODIFIED_UNTIL_MS - created_ms)) for created_ms in created]
    lowercase = {name: name.lower() for name in (*FIRST_NAMES, *LAST_NAMES)}
    return [
        _Row(
            _record_id(CONTACT.key_prefix, number),
            {
                "FirstName": first,
                "LastName": last,
                "Email": f"{lowercase[first]}.{lowercase[last]}.{number}@contacts.example",
                "Phone": f"+1 555 {number // 10_000 % 1_000:03d} {number % 10_000:04d}",
                "Title": title,
                "AccountId": account_id,
                "CreatedDate": created_ms,
                "LastModifiedDate": modified_ms,
                "SystemModstamp": modified_ms,
            },
        )
        for number, first, last, title, account_id, created_ms, modified_ms in zip(
            range(1, count + 1), first_names, last_names, titles, account_choices, created, modified, strict=True
        )
    ]


def _event_values(start: datetime, *, all_day: bool, minutes: int) -> dict[str, Any]:
    """Timing fields that agree with each other. An all-day event is stored at midnight GMT of its ActivityDate,
    and a one-day all-day event ends at that same midnight (EndDateTime names the last day, not the day after)."""
    if all_day:
        start = datetime(start.year, start.month, start.day, tzinfo=UTC)
        minutes = 1440
    start_ms = _ms_from_datetime(start)
    return {
        "StartDateTime": start_ms,
        "EndDateTime": start_ms + (minutes - 1440 if all_day else minutes) * 60_000,
        "IsAllDayEvent": all_day,
        "ActivityDate": start.date(),
        "DurationInMinutes": minutes,
    }


def _generate_events(count: int, seed: int, owner_ids: list[str], around: date | None) -> list[_Row]:
    rng = random.Random(f"events-{seed}")  # noqa: S311 - reproducible sample data, not security
    first = events_first_day(EVENT_FIRST_DAY, EVENT_DAYS, around)
    first_day = datetime(first.year, first.month, first.day, tzinfo=UTC)
    rows = []
    for number in range(1, count + 1):
        start = first_day + timedelta(days=rng.randrange(EVENT_DAYS), minutes=30 * rng.randrange(14, 40))
        created_ms = ORG_CREATED_MS + int(rng.random() * (CREATED_UNTIL_MS - ORG_CREATED_MS))
        modified_ms = created_ms + int(rng.random() * (MODIFIED_UNTIL_MS - created_ms))
        values = {
            "Subject": rng.choice(EVENT_SUBJECTS),
            "Location": rng.choice(LOCATIONS),
            "OwnerId": rng.choice(owner_ids),
            "CreatedDate": created_ms,
            "LastModifiedDate": modified_ms,
            "SystemModstamp": modified_ms,
        }
        values.update(_event_values(start, all_day=rng.random() < ALL_DAY_SHARE, minutes=rng.choice((30, 60, 90))))
        rows.append(_Row(_record_id(EVENT.key_prefix, number), values))
    return rows


def _invite_contacts(events: dict[str, _Row], contact_ids: list[str]) -> None:
    """Three events in four invite a contact (WhoId), chosen from a hash of the event id: deterministic, and drawn
    from no seeded random stream, so the rest of the generated data is as it was."""
    for event_id, row in events.items():
        digest = hashlib.sha256(f"who-{event_id}".encode()).digest()
        if contact_ids and digest[0] % 4:
            row.values["WhoId"] = contact_ids[int.from_bytes(digest[1:5], "big") % len(contact_ids)]


def _custom_sample(record_id: str, name: str, kind: str) -> Any:
    """A custom field's sample value as rows store it (epoch ms for datetimes)."""
    value = custom_field_sample(record_id, name, "integer" if kind == INT else kind)
    return _ms_from_datetime(value) if kind == DATETIME and value is not None else value


INVITATION_ANSWERS = ("New", "Accepted", "Accepted", "Declined")
RESPONSES = (None, None, "Looking forward to it", "Running ten minutes late", "Can't make it, sorry")


def _generate_relations(events: dict[str, _Row], user_ids: list[str], account_ids: list[str]) -> list[_Row]:
    """Each event's EventRelation rows, as an org with Shared Activities keeps them: its contact (the Who) as the
    parent record, invited or not; up to three more invitees (users of the org and contacts); one event in five also
    relates an account (IsWhat). Drawn from hashes of the event id, so the rest of the generated data is as it was."""
    contact_ids = sorted({row.values["WhoId"] for row in events.values() if row.values.get("WhoId")})
    rows: list[_Row] = []
    for event_id, event in events.items():
        digest = hashlib.sha256(f"relations-{event_id}".encode()).digest()
        people: dict[str, bool] = {}  # relation id -> is a parent record (the Who)
        if event.values.get("WhoId"):
            people[event.values["WhoId"]] = True
        for byte in digest[1 : 1 + digest[0] % 4]:
            pool = user_ids if byte % 2 or not contact_ids else contact_ids
            if (chosen := pool[byte % len(pool)]) != event.values["OwnerId"]:
                people.setdefault(chosen, False)
        if account_ids and digest[5] % 5 == 0:
            people[account_ids[digest[6] % len(account_ids)]] = False
        for index, (relation_id, is_parent) in enumerate(people.items()):
            is_what = relation_id.startswith("001")
            invited = not is_what and (not is_parent or digest[7 + index] % 2 == 0)
            status = INVITATION_ANSWERS[digest[12 + index] % len(INVITATION_ANSWERS)] if invited else "New"
            answered_ms = event.values["CreatedDate"] + digest[20 + index] * 3_600_000
            values = {
                "EventId": event_id,
                "RelationId": relation_id,
                "Status": status,
                "RespondedDate": answered_ms if status != "New" else None,
                "Response": RESPONSES[digest[26 + index] % len(RESPONSES)] if status != "New" else None,
                "IsInvitee": invited,
                "IsParent": is_parent,
                "IsWhat": is_what,
                "CreatedDate": event.values["CreatedDate"],
                "LastModifiedDate": event.values["SystemModstamp"],
                "SystemModstamp": event.values["SystemModstamp"],
            }
            rows.append(_Row(_record_id(EVENT_RELATION.key_prefix, len(rows) + 1), values))
    return rows


# --- helpers -------------------------------------------------------------------------------------------------------


@dataclass
class _QueryLocator:
    rows: list[_Row]
    query: _Query
    batch_size: int
    version: str
    last_used: float


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _batch_size(header: str | None) -> int:
    for option in (header or "").split(","):
        name, _, value = option.partition("=")
        if name.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value.strip()), MIN_BATCH_SIZE), DEFAULT_BATCH_SIZE)
    return DEFAULT_BATCH_SIZE


def _parse_api_version(raw: str) -> str:
    """`v62.0` -> "62.0"; unknown versions are a 404, as on a real instance."""
    match = re.fullmatch(r"v(\d+)\.0", raw)
    if match is None or not OLDEST_API_VERSION <= float(match.group(1)) <= float(API_VERSION):
        raise _not_found()
    return f"{match.group(1)}.0"


def _release_label(version: int) -> str:
    """Salesforce names each API version after its release: 31.0 Summer '14, 32.0 Winter '15, 33.0 Spring '15, ..."""
    season = ("Winter", "Spring", "Summer")[(version - 32) % 3]
    return f"{season} '{15 + (version - 32) // 3:02d}"


def api_versions() -> list[dict[str, str]]:
    """`GET /services/data`: every version the instance serves, oldest first."""
    return [
        {"label": _release_label(number), "url": f"/services/data/v{number}.0", "version": f"{number}.0"}
        for number in range(int(OLDEST_API_VERSION), int(float(API_VERSION)) + 1)
    ]


_DESCRIBE_TYPES = {
    # field kind -> (describe `type`, `soapType`, length, byteLength)
    ID: ("id", "tns:ID", 18, 18),
    STRING: ("string", "xsd:string", 80, 240),
    BOOLEAN: ("boolean", "xsd:boolean", 0, 0),
    DATETIME: ("datetime", "xsd:dateTime", 0, 0),
    DATE: ("date", "xsd:date", 0, 0),
    INT: ("int", "xsd:int", 0, 0),
    REFERENCE: ("reference", "tns:ID", 18, 18),
    DOUBLE: ("double", "xsd:double", 0, 0),
    PICKLIST: ("picklist", "xsd:string", 255, 765),
}
_STRING_SUBTYPES = {"Email": ("email", 80, 240), "Phone": ("phone", 40, 120), "Username": ("string", 80, 240)}


def _label(sobject: _SObject, name: str) -> str:
    """`LastModifiedDate` -> "Last Modified Date", `OwnerId` -> "Owner ID", as describe labels standard fields."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", sobject.name if name == "Id" else name.removesuffix("Id"))
    return f"{spaced} ID" if name.endswith("Id") else spaced


def _describe_field(sobject: _SObject, name: str, kind: str) -> dict[str, Any]:
    """One entry of a describe's `fields`, with every key Salesforce sends (values fitting a standard field)."""
    type_name, soap_type, length, byte_length = _DESCRIBE_TYPES[kind]
    if kind == STRING and name in _STRING_SUBTYPES:
        type_name, length, byte_length = _STRING_SUBTYPES[name]
    writable = name in sobject.writable
    relation = next((r for r in sobject.relations.values() if r.lookup_field == name), None)
    system = name in _AUDIT_FIELDS or name in ("Id", "IsDeleted")
    return {
        "aggregatable": kind != BOOLEAN,
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": byte_length,
        "calculated": False,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": "Name" if name in ("FirstName", "LastName") else None,
        "controllerName": None,
        "createable": writable,
        "custom": False,
        "defaultValue": False if kind == BOOLEAN and writable else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": system or kind == BOOLEAN,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": 9 if kind == INT else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": False,
        "extraTypeInfo": None,
        "filterable": True,
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": kind not in (DATETIME,),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": name in ("Id", "Email", "Username"),
        "inlineHelpText": None,
        "label": _label(sobject, name),
        "length": length,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": False,
        "namePointing": False,
        "nillable": not system and name not in ("LastName", "Subject") and kind != BOOLEAN,
        "permissionable": writable and name not in ("LastName",),
        "picklistValues": [],
        "polymorphicForeignKey": False,
        "precision": 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": [relation.parent_type] if relation is not None else [],
        "relationshipName": relation.relationship if relation is not None else None,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": 0,
        "searchPrefilterable": False,
        "soapType": soap_type,
        "sortable": True,
        "type": type_name,
        "unique": name == "Username",
        "updateable": writable,
        "writeRequiresMasterRead": False,
    }


def _describe_custom_field(sobject: _SObject, name: str, kind: str) -> dict[str, Any]:
    """A `__c` field's describe entry: custom, writable, nillable, labelled from its name."""
    return _describe_field(sobject, name, kind) | {
        "custom": True,
        "label": name.removesuffix("__c").replace("_", " "),
        "createable": True,
        "updateable": True,
        "nillable": kind != BOOLEAN,
        "defaultedOnCreate": kind == BOOLEAN,
        "permissionable": True,
        "precision": 18 if kind == DOUBLE else 0,
        "scale": 2 if kind == DOUBLE else 0,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": value, "validFor": None, "value": value}
            for value in (PICKLIST_SAMPLES if kind == PICKLIST else ())
        ],
    }


def describe_sobject(sobject: _SObject, version: str, custom: dict[str, str] | None = None) -> dict[str, Any]:
    """`GET sobjects/{Object}/describe`: the object's properties, `fields` (the org's `__c` ones after the standard
    ones) and `urls` in Salesforce's shape."""
    base = f"/services/data/v{version}/sobjects/{sobject.name}"
    writable = sobject is not USER
    return {
        "actionOverrides": [],
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "childRelationships": [],
        "compactLayoutable": True,
        "createable": writable,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "defaultImplementation": None,
        "deletable": writable,
        "deprecatedAndHidden": False,
        "extendedBy": None,
        "extendsInterfaces": None,
        "feedEnabled": sobject is not EVENT,
        "fields": [_describe_field(sobject, name, kind) for name, kind in sobject.fields.items()]
        + [_describe_custom_field(sobject, name, kind) for name, kind in (custom or {}).items()],
        "hasSubtypes": False,
        "implementedBy": None,
        "implementsInterfaces": None,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": sobject.key_prefix,
        "label": sobject.name,
        "labelPlural": f"{sobject.name}s",
        "layoutable": True,
        "listviewable": None,
        "lookupLayoutable": None,
        "mergeable": sobject is CONTACT,
        "mruEnabled": True,
        "name": sobject.name,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "queryable": True,
        "recordTypeInfos": [],
        "replicateable": True,
        "retrieveable": True,
        "searchLayoutable": True,
        "searchable": True,
        "supportedScopes": [],
        "triggerable": True,
        "undeletable": writable,
        "updateable": True,
        "urls": {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "describe": f"{base}/describe",
            "sobject": base,
            "layouts": f"{base}/describe/layouts",
        },
    }


def _parse_replication_date(raw: str | None, name: str) -> int:
    if not raw:
        raise SalesforceApiError(400, "MISSING_ARGUMENT", f"Required parameter '{name}' is missing")
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SalesforceApiError(
            400, "INVALID_REPLICATION_DATE", f"'{raw}' is not a valid ISO 8601 date and time for '{name}'"
        ) from None
    return _ms_from_datetime(moment)


# --- the emulator --------------------------------------------------------------------------------------------------


class SalesforceEmulator:
    """One Salesforce org with one connected app; serve `app` with any ASGI server (https for simple-salesforce).

    Inspection and mutation methods are thread-safe. `clock` (seconds since the epoch) moves token expiry, query
    cursor idleness, the 24-hour API allowance and modification stamps without sleeping; generated data never
    depends on it. `api_request_limit=None` reports the usual allowance in `Sforce-Limit-Info` but never refuses.
    `rotate_refresh_tokens` is the connected app's opt-in "Enable Refresh Token Rotation": off (Salesforce's
    default), a refresh answers no new refresh token; on, each refresh retires the presented token and presenting a
    retired one revokes the whole grant.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        users: int = 50,
        contacts: int = 2_000,
        events: int = 500,
        events_around: date | None = None,
        seed: int = 7,
        access_token_ttl_s: int = DEFAULT_ACCESS_TOKEN_TTL_S,
        api_request_limit: int | None = None,
        rotate_refresh_tokens: bool = False,
        push_time_scale: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        if users < 1:
            raise ValueError("an org has at least one user (the one who authorizes the app)")
        self._lock = threading.RLock()
        self.client_id = client_id
        self._client_secret = client_secret
        self.clock = clock
        self.org_id = _record_id("00D", seed)
        # Outbound messages (salesforce_push.py); `push_time_scale` compresses the 24-hour retry schedule for tests.
        self.push = SalesforcePush(lock=self._lock, org_id=self.org_id, time_scale=push_time_scale)
        self.request_log: list[RequestRecord] = []
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret},
            access_token_ttl_s=access_token_ttl_s,
            clock=clock,
            rotate_refresh_tokens=rotate_refresh_tokens,
            access_token_prefix=self.org_id[:15] + "!",
        )
        # Grant bookkeeping: every token belongs to a grant (revoking a refresh token ends its sessions); with
        # rotation on, a retired refresh token presented again revokes its whole grant.
        self._grant_of: dict[str, int] = {}
        self._grant_tokens: dict[int, set[str]] = {}
        self._retired_refresh_tokens: dict[str, int] = {}
        self._next_grant = 1
        self._allowance = SlidingWindowRateLimiter(
            api_request_limit, API_ALLOWANCE_WINDOW_S, clock, reported_limit=REPORTED_API_ALLOWANCE
        )
        self._locators: OrderedDict[str, _QueryLocator] = OrderedDict()
        self._custom_fields = {
            sobject.name: dict(DEFAULT_CUSTOM_FIELDS.get(sobject.name, {})) for sobject in SOBJECTS.values()
        }
        self._delete_log_floor_ms = ORG_CREATED_MS
        """`earliestDateAvailable`: deletions before this instant may have been purged from the delete log."""

        self._accounts = {_record_id("001", number): {"Name": name} for number, name in enumerate(COMPANIES, start=1)}
        user_rows = _generate_users(users, seed)
        self.admin_user_id = user_rows[0].id
        self._tables: dict[str, dict[str, _Row]] = {
            "User": {row.id: row for row in user_rows},
            "Contact": {row.id: row for row in _generate_contacts(contacts, seed, list(self._accounts))},
            "Event": {
                row.id: row for row in _generate_events(events, seed, [row.id for row in user_rows], events_around)
            },
        }
        _invite_contacts(self._tables["Event"], list(self._tables["Contact"]))
        relations = _generate_relations(self._tables["Event"], [row.id for row in user_rows], list(self._accounts))
        self._tables["EventRelation"] = {row.id: row for row in relations}
        self._next_number = {"User": users + 1, "Contact": contacts + 1, "Event": events + 1}
        self._next_number["EventRelation"] = len(relations) + 1
        self.app = self._build_app()

    # --- inspection (Python side) ----------------------------------------------------------------------------------

    @synchronized
    def user_records(self) -> list[dict[str, Any]]:
        """Every user with every field, as a SOQL query selecting them all returns it, ordered by Id."""
        return self._records(USER, include_deleted=False)

    @synchronized
    def contact_records(self, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Every contact (deleted ones still in the recycle bin too, unless excluded) with every field, by Id."""
        return self._records(CONTACT, include_deleted=include_deleted)

    @synchronized
    def event_records(self, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        return self._records(EVENT, include_deleted=include_deleted)

    @synchronized
    def event_relation_records(self, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Every EventRelation with every field, `Relation` (Name, Email) included, ordered by Id."""
        return self._records(EVENT_RELATION, include_deleted=include_deleted)

    def _every_field(self, sobject: _SObject) -> tuple[str, ...]:
        return (*sobject.fields, *self._custom_fields[sobject.name], *sobject.relations)

    def _records(self, sobject: _SObject, *, include_deleted: bool) -> list[dict[str, Any]]:
        fields = self._every_field(sobject)
        rows = sorted(self._tables[sobject.name].values(), key=lambda row: row.id)
        return [
            self._render(sobject, row, fields, API_VERSION) for row in rows if include_deleted or row.deleted_ms is None
        ]

    @synchronized
    def token_requests(self, grant_type: str | None = None) -> int:
        """How many POST /services/oauth2/token calls arrived (failed ones included), optionally of one type."""
        return self._oauth.count_token_requests(grant_type)

    @synchronized
    def issued_tokens(self) -> frozenset[str]:
        """Every authorization code, access token and refresh token this emulator ever issued."""
        return frozenset(self._oauth.issued)

    @synchronized
    def api_requests_used(self) -> int:
        """Data calls counted against the rolling 24-hour allowance (what `Sforce-Limit-Info` reports)."""
        decision = self._allowance.peek()
        return decision.limit - decision.remaining

    @synchronized
    def open_query_locators(self) -> int:
        return len(self._locators)

    # --- mutations (Python side) -------------------------------------------------------------------------------------

    def create_contact(self, fields: dict[str, Any]) -> str:
        """Returns the new id; raises ValueError for fields Salesforce would reject."""
        return self._python_write(lambda: self._create(CONTACT, fields).id)

    def update_contact(self, contact_id: str, fields: dict[str, Any]) -> None:
        """Raises KeyError for an unknown or deleted contact, ValueError for fields Salesforce would reject."""
        self._python_write(lambda: self._update(CONTACT, contact_id, fields))

    def delete_contact(self, contact_id: str) -> None:
        """Moves the contact to the recycle bin: queryAll still returns it, with IsDeleted true."""
        self._python_write(lambda: self._delete(CONTACT, contact_id))

    def create_event(self, fields: dict[str, Any]) -> str:
        """`StartDateTime`/`EndDateTime` may be given as aware datetimes; `ActivityDate` as a date."""
        return self._python_write(lambda: self._create(EVENT, fields).id)

    def update_event(self, event_id: str, fields: dict[str, Any]) -> None:
        self._python_write(lambda: self._update(EVENT, event_id, fields))

    def delete_event(self, event_id: str) -> None:
        self._python_write(lambda: self._delete(EVENT, event_id))

    def add_event_relation(self, fields: dict[str, Any]) -> str:
        """Invite someone (`EventId`, `RelationId`, optional `Status`...); the event counts as modified."""
        return self._python_write(lambda: self._create(EVENT_RELATION, fields).id)

    def update_event_relation(self, relation_id: str, fields: dict[str, Any]) -> None:
        """An invitee answers ({"Status": "Declined"}); the event counts as modified."""
        self._python_write(lambda: self._update(EVENT_RELATION, relation_id, fields))

    def delete_event_relation(self, relation_id: str) -> None:
        """Uninvite: the relation goes to the recycle bin; the event counts as modified."""
        self._python_write(lambda: self._delete(EVENT_RELATION, relation_id))

    def update_user(self, user_id: str, fields: dict[str, Any]) -> None:
        """Users are never deleted: deactivate with {"IsActive": False}."""
        self._python_write(lambda: self._update(USER, user_id, fields))

    @staticmethod
    def _python_write(write: Callable[[], Any]) -> Any:
        try:
            return write()
        except SalesforceApiError as error:
            raise (KeyError if error.status_code == 404 else ValueError)(error.message) from None

    # --- schema changes (Python side) ---------------------------------------------------------------------------

    @synchronized
    def add_custom_field(self, sobject_name: str, name: str, kind: str = STRING) -> None:
        """An admin creates a `__c` field on User, Contact or Event: describe lists it and SOQL may select it at once;
        existing records hold sample values until written."""
        if not name.endswith("__c") or kind not in CUSTOM_KINDS:
            raise ValueError(f"a custom field is named *__c and is one of {CUSTOM_KINDS}")
        self._custom_fields[sobject_name][name] = kind

    @synchronized
    def remove_custom_field(self, sobject_name: str, name: str) -> None:
        """An admin deletes a `__c` field: describe drops it and a query naming it fails with INVALID_FIELD."""
        del self._custom_fields[sobject_name][name]
        for row in self._tables[sobject_name].values():
            row.values.pop(name, None)

    # --- fault knobs -------------------------------------------------------------------------------------------------

    @synchronized
    def set_rate_limit(self, api_request_limit: int | None, *, window_s: float | None = None) -> None:
        """Change the org's rolling API allowance (None: report it, never refuse) and its window, even while
        serving; `Sforce-Limit-Info` shows the new values from the next call on."""
        self._allowance.set_limit(api_request_limit, window_s)

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        """Revoke every grant (an admin blocked the app): refresh tokens and their sessions stop working."""
        for grant_id in list(self._grant_tokens):
            self._revoke_grant(grant_id)

    @synchronized
    def expire_sync_tokens(self) -> None:
        """An administrator empties the recycle bin: deleted rows vanish from queryAll and the delete log's
        `earliestDateAvailable` moves to now, so any incremental cursor older than now can no longer see every
        deletion (the connector must resync)."""
        now_ms = self._now_ms()
        for table in self._deletable_tables():
            for record_id in [row.id for row in table.values() if row.deleted_ms is not None]:
                del table[record_id]
        self._delete_log_floor_ms = now_ms

    @synchronized
    def expire_query_locators(self) -> None:
        """Every open query cursor times out, as after 15 idle minutes."""
        self._locators.clear()

    # --- state operations shared by HTTP and Python callers ---------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()

    def _deletable_tables(self) -> list[dict[str, _Row]]:
        return [self._tables[sobject.name] for sobject in SOBJECTS.values() if sobject.has_is_deleted]

    def _purge_old_deletions(self) -> None:
        """Rows in the recycle bin for more than 15 days are hard-deleted and leave the delete log."""
        horizon_ms = self._now_ms() - RECYCLE_BIN_RETENTION_S * 1000
        for table in self._deletable_tables():
            expired = [row for row in table.values() if row.deleted_ms is not None and row.deleted_ms < horizon_ms]
            for row in expired:
                del table[row.id]
                self._delete_log_floor_ms = max(self._delete_log_floor_ms, row.deleted_ms or 0)

    def _kind(self, sobject: _SObject, name: str) -> str:
        return sobject.fields.get(name) or self._custom_fields[sobject.name][name]

    def _canonical(self, sobject: _SObject, name: str) -> str | None:
        lowered = name.lower()
        custom = next((known for known in self._custom_fields[sobject.name] if known.lower() == lowered), None)
        return sobject.canonical(name) or custom

    def _coerce(self, sobject: _SObject, fields: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in fields.items():
            canonical = self._canonical(sobject, name)
            if canonical is None or canonical in sobject.relations:
                raise SalesforceApiError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject.name}"
                )
            if canonical not in sobject.writable and canonical not in self._custom_fields[sobject.name]:
                raise SalesforceApiError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {canonical}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.",
                    [canonical],
                )
            values[canonical] = self._coerce_value(self._kind(sobject, canonical), canonical, value)
        return values

    def _coerce_value(self, kind: str, name: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            if kind == DATETIME:
                moment = (
                    value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
                )
                return _ms_from_datetime(moment)
            if kind == DATE:
                return value if isinstance(value, date) else date.fromisoformat(str(value))
            if kind == BOOLEAN:
                if not isinstance(value, bool):
                    raise ValueError(value)
                return value
            if kind in (DOUBLE, INT):
                return (float if kind == DOUBLE else int)(value)
            if kind == REFERENCE:
                if name == "AccountId" and value not in self._accounts:
                    raise ValueError(value)
                if name == "OwnerId" and value not in self._tables["User"]:
                    raise ValueError(value)
                if name == "EventId" and value not in self._tables["Event"]:
                    raise ValueError(value)
                if name == "RelationId" and self._parent("Name", str(value)) is None:
                    raise ValueError(value)
            return str(value)
        except ValueError:
            raise SalesforceApiError(
                400, "INVALID_FIELD", f"{name}: value not of required type or not found: {value}", [name]
            ) from None

    def _touch(self, row: _Row) -> None:
        now_ms = max(self._now_ms(), row.values["CreatedDate"])
        row.values["LastModifiedDate"] = row.values["SystemModstamp"] = now_ms

    @staticmethod
    def _normalize_event(values: dict[str, Any]) -> None:
        """Keep an event's timing fields consistent, as Salesforce derives them from one another."""
        start_ms = values.get("StartDateTime")
        if start_ms is None:
            raise SalesforceApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [StartDateTime]")
        start = _EPOCH + timedelta(milliseconds=start_ms)
        if values.get("IsAllDayEvent"):
            values.update(_event_values(start, all_day=True, minutes=1440))
            return
        end_ms = values.get("EndDateTime") or start_ms
        if end_ms < start_ms:
            raise SalesforceApiError(400, "FIELD_INTEGRITY_EXCEPTION", "End Date Time: End must be after start")
        values.update(_event_values(start, all_day=False, minutes=(end_ms - start_ms) // 60_000))
        values["EndDateTime"] = end_ms

    @synchronized
    def _create(self, sobject: _SObject, fields: dict[str, Any]) -> _Row:
        values: dict[str, Any] = dict.fromkeys(sobject.fields)
        values.pop("Id", None)
        values.pop("IsDeleted", None)
        values.update(self._coerce(sobject, fields))
        if sobject is CONTACT and not values.get("LastName"):
            raise SalesforceApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]")
        if sobject is EVENT:
            values["OwnerId"] = values.get("OwnerId") or self.admin_user_id
            self._normalize_event(values)
        if sobject is EVENT_RELATION:
            self._normalize_relation(values)
        number = self._next_number[sobject.name]
        self._next_number[sobject.name] += 1
        now_ms = self._now_ms()
        values.update(CreatedDate=now_ms, LastModifiedDate=now_ms, SystemModstamp=now_ms)
        row = _Row(_record_id(sobject.key_prefix, number), values)
        self._tables[sobject.name][row.id] = row
        self._changed(sobject, row)
        return row

    def _changed(self, sobject: _SObject, row: _Row) -> None:
        """A changed invitation changes its event (the assumption the connector's incremental read rests on: see
        docs/data-model.md), so the event's SystemModstamp moves and its outbound message goes out."""
        if sobject is EVENT_RELATION:
            sobject, row = EVENT, self._tables["Event"][row.values["EventId"]]
            self._touch(row)
        self.push.changed(sobject.name, row.id, row.values["SystemModstamp"])

    def _normalize_relation(self, values: dict[str, Any]) -> None:
        """A relation needs a live event and someone (or something) to relate; without a role it is an invitee, as
        Salesforce defaults IsInvitee when none of IsInvitee, IsParent and IsWhat is set."""
        missing = [name for name in ("EventId", "RelationId") if not values.get(name)]
        if missing:
            raise SalesforceApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}")
        self._live_row(EVENT, values["EventId"])
        roles = ("IsInvitee", "IsParent", "IsWhat")
        if not any(values.get(role) for role in roles):
            values["IsInvitee"] = True
        values.update({role: bool(values.get(role)) for role in roles}, Status=values.get("Status") or "New")

    def _live_row(self, sobject: _SObject, record_id: str) -> _Row:
        row = self._tables[sobject.name].get(record_id)
        if row is None:
            raise _not_found()
        if row.deleted_ms is not None:
            raise SalesforceApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return row

    @synchronized
    def _update(self, sobject: _SObject, record_id: str, fields: dict[str, Any]) -> None:
        row = self._live_row(sobject, record_id)
        values = {**row.values, **self._coerce(sobject, fields)}
        if sobject is EVENT:
            if "EndDateTime" not in fields and ("StartDateTime" in fields or "IsAllDayEvent" in fields):
                # Moving an event keeps its duration, as the Salesforce UI and API do.
                minutes = 60 if row.values["IsAllDayEvent"] else row.values["DurationInMinutes"] or 0
                values["EndDateTime"] = values["StartDateTime"] + minutes * 60_000
            self._normalize_event(values)
        row.values = values
        self._touch(row)
        self._changed(sobject, row)

    @synchronized
    def _delete(self, sobject: _SObject, record_id: str) -> None:
        row = self._live_row(sobject, record_id)
        row.deleted_ms = self._now_ms()
        self._touch(row)
        if sobject is EVENT:  # its invitees and related records go to the recycle bin with it
            for relation in self._tables["EventRelation"].values():
                if relation.values["EventId"] == record_id and relation.deleted_ms is None:
                    relation.deleted_ms = row.deleted_ms
                    self._touch(relation)
        if sobject is EVENT_RELATION:
            self._changed(sobject, row)

    # --- SOQL execution --------------------------------------------------------------------------------------------

    def _matching_rows(self, query: _Query, *, include_deleted: bool) -> list[_Row]:
        """Rows matching `query`, ordered, limited: a snapshot of rows whose values are rendered page by page."""
        self._purge_old_deletions()
        table = self._tables[query.sobject.name]
        rows: Iterable[_Row] = table.values()  # insertion order is id order
        if not include_deleted:
            rows = (row for row in rows if row.deleted_ms is None)
        for condition in query.conditions:
            rows = self._filtered(rows, condition)
        matched = list(rows)
        if query.order_by is not None:
            name = query.order_by
            # Ties keep Id order; SOQL puts nulls first ascending and last descending unless told otherwise.
            present = [row for row in matched if self._value(query.sobject, row, name) is not None]
            absent = [row for row in matched if self._value(query.sobject, row, name) is None]
            present.sort(key=lambda row: self._value(query.sobject, row, name), reverse=query.descending)
            matched = present + absent if query.nulls_last else absent + present
        return matched[: query.limit] if query.limit is not None else matched

    def _filtered(self, rows: Iterable[_Row], condition: _Condition) -> Iterable[_Row]:
        compare, name, bound = _COMPARE[condition.operator], condition.field, condition.value
        if isinstance(bound, _DateRange):
            date_range, operator = bound, condition.operator
            compare = lambda value, _: date_range.compare(operator, value)  # noqa: E731 - same shape as _COMPARE
        if name == "Id":
            return (row for row in rows if compare(row.id, bound))
        if name == "IsDeleted":
            return (row for row in rows if compare(row.deleted_ms is not None, bound))
        return (row for row in rows if compare(row.values.get(name), bound))

    def _value(self, sobject: _SObject, row: _Row, name: str) -> Any:
        if name == "Id":
            return row.id
        if name == "IsDeleted":
            return row.deleted_ms is not None
        relation = sobject.relations.get(name)
        custom_kind = self._custom_fields[sobject.name].get(name)
        if custom_kind is not None and name not in row.values:
            return _custom_sample(row.id, name, custom_kind)
        if relation is None:
            return row.values.get(name)
        parent_id = row.values.get(relation.lookup_field)
        parent = self._parent(relation.parent_type, parent_id) if parent_id is not None else None
        return parent[1].get(relation.parent_field) if parent is not None else None

    def _parent(self, parent_type: str, parent_id: str) -> tuple[str, dict[str, Any]] | None:
        """(object name, values) of a lookup's parent; a polymorphic `Name` parent is found by its id's key prefix
        and has the `Name` object's fields (Name, Email: none for an account)."""
        if parent_type == "Name":
            parent_type = KEY_PREFIXES.get(parent_id[:3], "")
        if parent_type == "Account":
            account = self._accounts.get(parent_id)
            return ("Account", {**account, "Email": None}) if account is not None else None
        row = self._tables.get(parent_type, {}).get(parent_id)
        if row is None:
            return None
        name = " ".join(part for part in (row.values.get("FirstName"), row.values.get("LastName")) if part)
        return parent_type, {"Name": name, **row.values}

    def _render(self, sobject: _SObject, row: _Row, fields: Iterable[str], version: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {"type": sobject.name, "url": f"/services/data/v{version}/sobjects/{sobject.name}/{row.id}"}
        }
        for name in fields:
            relation = sobject.relations.get(name)
            if relation is None:
                record[name] = self._wire_value(self._kind(sobject, name), self._value(sobject, row, name))
                continue
            parent_id = row.values.get(relation.lookup_field)
            if parent_id is None:
                record[relation.relationship] = None
                continue
            found = self._parent(relation.parent_type, parent_id)
            parent_object = found[0] if found is not None else relation.parent_type
            parent = record.get(relation.relationship) or {
                "attributes": {
                    "type": relation.parent_type,  # "Name" for a polymorphic lookup; the URL names the real object
                    "url": f"/services/data/v{version}/sobjects/{parent_object}/{parent_id}",
                }
            }
            parent[relation.parent_field] = self._value(sobject, row, name)
            record[relation.relationship] = parent
        return record

    @staticmethod
    def _wire_value(kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == DATETIME:
            return _iso_from_ms(value)
        if kind == DATE:
            return value.isoformat()
        return value

    @synchronized
    def _first_page(self, query: _Query, *, include_deleted: bool, batch_size: int, version: str) -> dict[str, Any]:
        rows = self._matching_rows(query, include_deleted=include_deleted)
        if not query.fields:  # SELECT COUNT(): the number alone
            return {"totalSize": len(rows), "done": True, "records": []}
        locator_id = None
        if len(rows) > batch_size:
            locator_id = "01g" + secrets.token_hex(8)[:15]
            self._locators[locator_id] = _QueryLocator(rows, query, batch_size, version, self.clock())
            while len(self._locators) > MAX_OPEN_QUERY_LOCATORS:
                self._locators.popitem(last=False)
        return self._page(query, rows, 0, batch_size, version, locator_id)

    @synchronized
    def _next_page(self, locator_text: str) -> dict[str, Any]:
        locator_id, _, offset_text = locator_text.rpartition("-")
        locator = self._locators.get(locator_id)
        if locator is not None and self.clock() - locator.last_used > QUERY_LOCATOR_IDLE_S:
            del self._locators[locator_id]
            locator = None
        if locator is None or not offset_text.isdigit() or int(offset_text) >= len(locator.rows):
            raise SalesforceApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        locator.last_used = self.clock()
        offset = int(offset_text)
        page = self._page(locator.query, locator.rows, offset, locator.batch_size, locator.version, locator_id)
        if page["done"]:
            del self._locators[locator_id]
        return page

    def _page(
        self, query: _Query, rows: list[_Row], offset: int, batch_size: int, version: str, locator_id: str | None
    ) -> dict[str, Any]:
        batch = rows[offset : offset + batch_size]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + batch_size >= len(rows)}
        if not body["done"]:
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator_id}-{offset + batch_size}"
        body["records"] = [self._render(query.sobject, row, query.fields, version) for row in batch]
        return body

    @synchronized
    def _deleted_since(self, sobject: _SObject, start_ms: int, end_ms: int) -> dict[str, Any]:
        self._purge_old_deletions()
        deleted = sorted(
            (row.deleted_ms, row.id)
            for row in self._tables[sobject.name].values()
            if row.deleted_ms is not None and start_ms <= row.deleted_ms < end_ms
        )
        return {
            "deletedRecords": [{"id": record_id, "deletedDate": _iso_from_ms(ms)} for ms, record_id in deleted],
            "earliestDateAvailable": _iso_from_ms(self._delete_log_floor_ms),
            "latestDateCovered": _iso_from_ms(min(end_ms, self._now_ms())),
        }

    # --- HTTP: OAuth -------------------------------------------------------------------------------------------------

    def _identity_url(self, request: Request, user_id: str) -> str:
        return f"{str(request.base_url).rstrip('/')}/id/{self.org_id}/{user_id}"

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            known_client = self._oauth.is_known_client(client_id)
        if not known_client:
            return PlainTextResponse("error=invalid_client_id&error_description=client identifier invalid", 400)
        if not redirect_uri:
            return PlainTextResponse("error=redirect_uri_missing&error_description=redirect_uri must be set", 400)
        if params.get("response_type") != "code":
            error = {"error": "unsupported_response_type", "error_description": "response type not supported"}
            return RedirectResponse(_with_query(redirect_uri, error | self._state(params)), status_code=302)
        code_challenge = params.get("code_challenge") or None
        if code_challenge is not None and params.get("code_challenge_method", "S256") != "S256":
            error = {"error": "invalid_request", "error_description": "invalid code_challenge_method"}
            return RedirectResponse(_with_query(redirect_uri, error | self._state(params)), status_code=302)
        scopes = tuple(dict.fromkeys(params.get("scope", "").split())) or DEFAULT_SCOPES
        with self._lock:  # auto-consent: the org's admin approves every requested scope
            code = self._oauth.issue_code(
                client_id=client_id, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
            )
        return RedirectResponse(_with_query(redirect_uri, {"code": code} | self._state(params)), status_code=302)

    @staticmethod
    def _state(params: Any) -> dict[str, str]:
        return {"state": params["state"]} if "state" in params else {}

    @staticmethod
    def _oauth_error(kind: OAuthErrorKind, description: str | None = None) -> JSONResponse:
        error, default_description = {
            OAuthErrorKind.INVALID_REQUEST: ("invalid_request", "invalid request"),
            OAuthErrorKind.INVALID_CLIENT: ("invalid_client_id", "client identifier invalid"),
            OAuthErrorKind.INVALID_CLIENT_SECRET: ("invalid_client", "invalid client credentials"),
            OAuthErrorKind.INVALID_CODE: ("invalid_grant", "invalid authorization code"),
            OAuthErrorKind.REDIRECT_URI_MISMATCH: ("redirect_uri_mismatch", "redirect_uri must match configuration"),
            OAuthErrorKind.CODE_VERIFIER_MISMATCH: ("invalid_grant", "invalid code verifier"),
            OAuthErrorKind.INVALID_REFRESH_TOKEN: ("invalid_grant", "expired access/refresh token"),
            OAuthErrorKind.UNSUPPORTED_GRANT_TYPE: ("unsupported_grant_type", "grant type not supported"),
        }[kind]
        return json_response({"error": error, "error_description": description or default_description}, 400)

    def _remember_grant(self, grant_id: int, *tokens: str) -> None:
        for token in tokens:
            self._grant_of[token] = grant_id
            self._grant_tokens.setdefault(grant_id, set()).add(token)

    def _revoke_grant(self, grant_id: int) -> None:
        for token in self._grant_tokens.pop(grant_id, set()):
            self._oauth.access_tokens.pop(token, None)
            if self._oauth.refresh_tokens.pop(token, None) is not None:
                self._retired_refresh_tokens[token] = grant_id

    def _refresh(self, form: dict[str, str]) -> tuple[str, str | None, tuple[str, ...]]:
        """A new access token; with rotation on, the presented refresh token retires (presenting a retired one
        revokes the whole grant) and the answer carries its successor, without rotation it carries none."""
        presented = form["refresh_token"]
        expected_secret = self._oauth.clients.get(form["client_id"])
        if expected_secret is None:
            raise OAuthError(OAuthErrorKind.INVALID_CLIENT, "client identifier invalid")
        if not secrets.compare_digest(expected_secret, form["client_secret"]):
            raise OAuthError(OAuthErrorKind.INVALID_CLIENT_SECRET, "invalid client credentials")
        if presented in self._retired_refresh_tokens:
            self._revoke_grant(self._retired_refresh_tokens[presented])
            raise OAuthError(OAuthErrorKind.INVALID_REFRESH_TOKEN, "expired access/refresh token")
        grant_id = self._grant_of.get(presented)
        grant = self._oauth.refresh(
            client_id=form["client_id"], client_secret=form["client_secret"], refresh_token=presented
        )
        assert grant_id is not None  # every live refresh token was remembered with its grant
        if not self._oauth.rotate_refresh_tokens:
            self._remember_grant(grant_id, grant.access_token)
            return grant.access_token, None, grant.scopes
        self._retired_refresh_tokens[presented] = grant_id
        self._grant_tokens[grant_id].discard(presented)
        self._remember_grant(grant_id, grant.access_token, grant.refresh_token)
        return grant.access_token, grant.refresh_token, grant.scopes

    def _exchange(self, form: dict[str, str]) -> tuple[str, str | None, tuple[str, ...]]:
        grant = self._oauth.exchange_code(
            client_id=form["client_id"],
            client_secret=form["client_secret"],
            code=form["code"],
            redirect_uri=form["redirect_uri"],
            code_verifier=form.get("code_verifier") or None,
        )
        grant_id, self._next_grant = self._next_grant, self._next_grant + 1
        if REFRESH_SCOPES.isdisjoint(grant.scopes):
            # Without the refresh_token (or offline_access) scope Salesforce issues no refresh token at all.
            self._oauth.refresh_tokens.pop(grant.refresh_token, None)
            self._remember_grant(grant_id, grant.access_token)
            return grant.access_token, None, grant.scopes
        self._remember_grant(grant_id, grant.access_token, grant.refresh_token)
        return grant.access_token, grant.refresh_token, grant.scopes

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        grant_type = form.get("grant_type", "")
        required = {
            "authorization_code": ("client_id", "client_secret", "redirect_uri", "code"),
            "refresh_token": ("client_id", "client_secret", "refresh_token"),
        }
        with self._lock:
            self._oauth.record_token_request(grant_type)
        if grant_type not in required:
            return self._oauth_error(OAuthErrorKind.UNSUPPORTED_GRANT_TYPE)
        missing = [name for name in required[grant_type] if not form.get(name)]
        if "client_id" in missing:
            return self._oauth_error(OAuthErrorKind.INVALID_CLIENT)
        if missing:
            return self._oauth_error(OAuthErrorKind.INVALID_REQUEST, f"missing required parameter: {missing[0]}")
        try:
            with self._lock:
                if grant_type == "authorization_code":
                    access_token, refresh_token, scopes = self._exchange(form)
                else:
                    access_token, refresh_token, scopes = self._refresh(form)
        except OAuthError as error:
            # Salesforce's own wording for every kind but a missing parameter, which says which one.
            description = error.description if error.kind is OAuthErrorKind.INVALID_REQUEST else None
            return self._oauth_error(error.kind, description)
        issued_at = str(self._now_ms())
        identity_url = self._identity_url(request, self.admin_user_id)
        signature = base64.b64encode(
            hmac.new(self._client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        body: dict[str, Any] = {"access_token": access_token}
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        body |= {
            "signature": signature,
            "scope": " ".join(scopes),
            "instance_url": str(request.base_url).rstrip("/"),
            "id": identity_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        return json_response(body)

    async def _revoke(self, request: Request) -> Response:
        token = (await read_form(request)).get("token", "")
        with self._lock:
            grant_id = self._grant_of.get(token)
            live = token in self._oauth.refresh_tokens or token in self._oauth.access_tokens
            if grant_id is not None and live:
                if token in self._oauth.refresh_tokens:
                    self._revoke_grant(grant_id)  # a refresh token takes its grant's sessions with it
                else:
                    self._oauth.access_tokens.pop(token, None)
        if grant_id is None or not live:
            return json_response({"error": "invalid_token", "error_description": "invalid token"}, 400)
        return Response(status_code=200)

    def _bearer(self, request: Request) -> tuple[AccessStatus, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() in ("bearer", "oauth") else ""
        if not token:
            return AccessStatus.UNKNOWN, ""
        status, _ = self._oauth.authenticate(token)
        return status, token

    async def _userinfo(self, request: Request) -> Response:
        with self._lock:
            status, _ = self._bearer(request)
            user = self._tables["User"][self.admin_user_id]
        if status is not AccessStatus.VALID:
            return PlainTextResponse("Bad_OAuth_Token", status_code=403)
        identity_url = self._identity_url(request, user.id)
        return json_response(
            {
                "sub": identity_url,
                "user_id": user.id,
                "organization_id": self.org_id,
                "preferred_username": user.values["Username"],
                "nickname": user.values["FirstName"],
                "name": f"{user.values['FirstName']} {user.values['LastName']}",
                "email": user.values["Email"],
                "email_verified": True,
                "active": True,
                "user_type": "STANDARD",
                "language": "en_US",
                "utcOffset": 0,
                "urls": {
                    "rest": f"{str(request.base_url).rstrip('/')}/services/data/v{{version}}/",
                    "query": f"{str(request.base_url).rstrip('/')}/services/data/v{{version}}/query/",
                },
            }
        )

    async def _identity(self, request: Request) -> Response:
        with self._lock:
            status, _ = self._bearer(request)
            user = self._tables["User"].get(request.path_params["user_id"])
        if status is not AccessStatus.VALID:
            return PlainTextResponse("Bad_OAuth_Token", status_code=403)
        if user is None or request.path_params["org_id"] != self.org_id:
            return PlainTextResponse("Bad_Id", status_code=404)
        return json_response(
            {
                "id": self._identity_url(request, user.id),
                "user_id": user.id,
                "organization_id": self.org_id,
                "username": user.values["Username"],
                "email": user.values["Email"],
                "active": bool(user.values["IsActive"]),
            }
        )

    # --- HTTP: REST data ---------------------------------------------------------------------------------------------

    def _data_endpoint(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, count the call against the org's rolling allowance, run `handler`, add Sforce-Limit-Info."""

        async def endpoint(request: Request) -> Response:
            uri_bytes = len(request.scope["raw_path"]) + 1 + len(request.scope["query_string"])
            if uri_bytes > MAX_URI_BYTES:
                return PlainTextResponse(f"URI Too Long: {uri_bytes} bytes, at most {MAX_URI_BYTES}", 414)
            with self._lock:
                status, _ = self._bearer(request)
                decision = self._allowance.hit() if status is AccessStatus.VALID else self._allowance.peek()
            used = decision.limit - decision.remaining
            response: Response
            if status is not AccessStatus.VALID:
                response = SalesforceApiError(401, "INVALID_SESSION_ID", SESSION_EXPIRED).response()
            elif not decision.allowed:
                used = decision.limit
                response = SalesforceApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.").response()
            else:
                try:
                    request.state.api_version = _parse_api_version(request.path_params["version"])
                    response = await handler(request)
                except SalesforceApiError as error:
                    response = error.response()
            response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{decision.limit}"
            return response

        return endpoint

    def _authenticated(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """The org's bearer token, nothing else (the sandbox's Setup stand-in spends no API allowance)."""

        async def endpoint(request: Request) -> Response:
            with self._lock:
                status, _ = self._bearer(request)
            if status is not AccessStatus.VALID:
                return SalesforceApiError(401, "INVALID_SESSION_ID", SESSION_EXPIRED).response()
            return await handler(request)

        return endpoint

    async def _query(self, request: Request) -> Response:
        return await self._run_query(request, include_deleted=False)

    async def _query_all(self, request: Request) -> Response:
        return await self._run_query(request, include_deleted=True)

    async def _run_query(self, request: Request, *, include_deleted: bool) -> Response:
        with self._lock:
            custom = {name: dict(fields) for name, fields in self._custom_fields.items()}
        query = parse_soql(request.query_params.get("q", ""), self._today(), custom)
        batch_size = _batch_size(request.headers.get("sforce-query-options"))
        page = self._first_page(
            query, include_deleted=include_deleted, batch_size=batch_size, version=request.state.api_version
        )
        return json_response(page)

    async def _query_more(self, request: Request) -> Response:
        return json_response(self._next_page(request.path_params["locator"]))

    def _sobject(self, request: Request, *, writable: bool = False) -> _SObject:
        sobject = SOBJECTS.get(request.path_params["sobject"].lower())
        if sobject is None:
            raise _not_found()
        if writable and sobject is USER and request.method in ("POST", "DELETE"):
            raise SalesforceApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed")
        return sobject

    @staticmethod
    async def _json_fields(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise SalesforceApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise SalesforceApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object with the record's fields")
        body.pop("attributes", None)
        return body

    async def _create_record(self, request: Request) -> Response:
        sobject = self._sobject(request, writable=True)
        row = self._create(sobject, await self._json_fields(request))
        return json_response({"id": row.id, "success": True, "errors": []}, 201)

    async def _get_record(self, request: Request) -> Response:
        sobject = self._sobject(request)
        with self._lock:
            row = self._live_row(sobject, request.path_params["record_id"])
            record = self._render(sobject, row, self._every_field(sobject), request.state.api_version)
        return json_response(record)

    async def _update_record(self, request: Request) -> Response:
        sobject = self._sobject(request, writable=True)
        self._update(sobject, request.path_params["record_id"], await self._json_fields(request))
        return Response(status_code=204)

    async def _delete_record(self, request: Request) -> Response:
        sobject = self._sobject(request, writable=True)
        self._delete(sobject, request.path_params["record_id"])
        return Response(status_code=204)

    async def _describe(self, request: Request) -> Response:
        sobject = self._sobject(request)
        with self._lock:
            custom = dict(self._custom_fields[sobject.name])
        return json_response(describe_sobject(sobject, request.state.api_version, custom))

    async def _limits(self, request: Request) -> Response:
        """The org's limits; `DailyApiRequests` is the rolling allowance that `Sforce-Limit-Info` reports."""
        with self._lock:
            allowance = self._allowance.peek()
        body = {name: {"Max": maximum, "Remaining": maximum} for name, maximum in OTHER_LIMITS.items()}
        body["DailyApiRequests"] = {"Max": allowance.limit, "Remaining": allowance.remaining}
        return json_response(dict(sorted(body.items())))

    async def _versions(self, request: Request) -> Response:
        return json_response(api_versions())

    async def _version_resources(self, request: Request) -> Response:
        root = f"/services/data/v{request.state.api_version}"
        names = ("limits", "query", "queryAll", "sobjects")
        return json_response({name: f"{root}/{name}" for name in names})

    async def _deleted(self, request: Request) -> Response:
        sobject = self._sobject(request)
        if not sobject.has_is_deleted:
            raise SalesforceApiError(400, "INVALID_TYPE", f"sObject type '{sobject.name}' cannot be replicated")
        start_ms = _parse_replication_date(request.query_params.get("start"), "start")
        end_ms = _parse_replication_date(request.query_params.get("end"), "end")
        if start_ms >= end_ms:
            raise SalesforceApiError(400, "INVALID_REPLICATION_DATE", "start must chronologically precede end")
        return json_response(self._deleted_since(sobject, start_ms, end_ms))

    # --- app ----------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            if status_code == 405:
                return SalesforceApiError(
                    405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed"
                ).response()
            return SalesforceApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE).response()

        data = "/services/data/{version}"
        sobjects = f"{data}/sobjects/{{sobject}}"
        record = f"{sobjects}/{{record_id}}"
        routes = [
            # The versions list needs no session on a real instance either.
            Route("/services/data", self._versions, methods=["GET"]),
            Route("/services/data/", self._versions, methods=["GET"]),
            Route(
                "/services/oauth2/authorize",
                with_consent_page(self._authorize, "Salesforce"),
                methods=["GET", "POST"],
            ),
            Route("/services/oauth2/token", self._token, methods=["POST"]),
            Route("/services/oauth2/revoke", self._revoke, methods=["POST"]),
            Route("/services/oauth2/userinfo", self._userinfo, methods=["GET"]),
            Route("/id/{org_id}/{user_id}", self._identity, methods=["GET"]),
        ]
        # Clients send both `/query?q=` and `/query/?q=`: serve both rather than redirect.
        for path, handler in (
            (f"{data}/query", self._query),
            (f"{data}/query/", self._query),
            (f"{data}/queryAll", self._query_all),
            (f"{data}/queryAll/", self._query_all),
            (f"{data}/query/{{locator}}", self._query_more),
            (f"{data}/queryAll/{{locator}}", self._query_more),
            (f"{sobjects}/deleted", self._deleted),
            (f"{sobjects}/deleted/", self._deleted),
            (f"{sobjects}/describe", self._describe),
            (f"{sobjects}/describe/", self._describe),
            (data, self._version_resources),
            (f"{data}/", self._version_resources),
            (f"{data}/limits", self._limits),
            (f"{data}/limits/", self._limits),
            (record, self._get_record),
        ):
            routes.append(Route(path, self._data_endpoint(handler), methods=["GET"]))
        routes += [
            Route(sobjects, self._data_endpoint(self._create_record), methods=["POST"]),
            Route(f"{sobjects}/", self._data_endpoint(self._create_record), methods=["POST"]),
            Route(record, self._data_endpoint(self._update_record), methods=["PATCH"]),
            Route(record, self._data_endpoint(self._delete_record), methods=["DELETE"]),
            *self.push.routes(self._authenticated),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error},
        )
