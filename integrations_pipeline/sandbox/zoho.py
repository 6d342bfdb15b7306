"""A Zoho CRM v8 sandbox: Zoho Accounts OAuth, users, Contacts and Events with Zoho's paging, search, deleted
records, `If-Modified-Since`, API credits and error shapes, served over real HTTP.

Behaviour follows Zoho's public v8 documentation closely enough that the official Python SDK (`zohocrmsdk8-0`)
and our connector both run against it unchanged:

- Accounts: `GET /oauth/v2/auth` (auto-consent; a refresh token only with `access_type=offline`), `POST
  /oauth/v2/token` (form or query), `POST /oauth/v2/token/revoke`. Token errors come back as HTTP 200 with
  `{"error": "invalid_code"}` and friends, as Zoho does, not RFC 6749's 400 `invalid_grant`.
- CRM: records need `fields`; `per_page` is at most 200; `page` alone cannot reach past record 2,000
  (DISCRETE_PAGINATION_LIMIT_EXCEEDED) and `next_page_token` / `page_token` pages beyond it; page tokens expire
  (EXPIRED_VALUE). Empty answers are 204, and 304 when `If-Modified-Since` matched nothing.
- Data centres: every data centre has an accounts server and an API host of its own. Served on one origin, the
  emulator is one data centre (`location`); `serve_data_centre` names further origins (the caller serves `app` on
  each), and then a grant is redeemed, refreshed and revoked only at its data centre's accounts server, and a token
  is honoured only at its data centre's API host (elsewhere: 401 INVALID_TOKEN, as Zoho answers).
- Timestamps are rendered in the org's time zone with an offset (`2025-03-01T10:15:30+05:30`), as Zoho does, so
  clients must convert to UTC themselves.

Pages are one bisect plus a slice over an ordered index that is cached until the next mutation, so paging through
100,000 contacts stays fast. Data comes from a seed and never depends on the clock.
"""

from __future__ import annotations

import bisect
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    custom_field_sample,
    events_first_day,
    json_response,
    read_form,
    sample_guests,
    synchronized,
    with_consent_page,
)
from integrations_pipeline.sandbox.zoho_push import ZohoPush, write_handler
from integrations_pipeline.sandbox.zoho_push import routes as push_routes

__all__ = ["RequestRecord", "ZohoEmulator"]

# --- Zoho facts ----------------------------------------------------------------------------------------------------

PER_PAGE_MAX = 200
DISCRETE_PAGINATION_LIMIT = 2_000
"""`page` / `per_page` cannot reach past this record; `page_token` must be used instead."""
PAGE_TOKEN_LIMIT = 100_000
"""Get Records serves at most this many records per query, page tokens included."""
SEARCH_RESULT_LIMIT = 2_000
MAX_FIELDS = 50
MAX_IDS = 100
MAX_CRITERIA = 10
PAGE_TOKEN_TTL_S = 86_400
ACCESS_TOKEN_TTL_S = 3_600
DATA_CENTRES = {
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    "uk": ("https://accounts.zoho.uk", "https://www.zohoapis.uk"),
}
"""Zoho's data centres (the `location` of the callback): accounts server and API domain of the real provider."""
OAUTH_HEADER_SCHEME = "Zoho-oauthtoken"
SEARCH_SCOPE = "ZohoSearch.securesearch.READ"
ORG_ID = "60012345678"
ZGID = "60012345679"

_ID_BASE = 5_725_767_000_000_000_000
USER_ID_BASE = _ID_BASE + 100_000_000
CONTACT_ID_BASE = _ID_BASE + 200_000_000
EVENT_ID_BASE = _ID_BASE + 400_000_000
ACCOUNT_ID_BASE = _ID_BASE + 600_000_000

_EPOCH_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
CREATED_FROM_S = _EPOCH_2025
CREATED_UNTIL_S = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
MODIFIED_UNTIL_S = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
EVENTS_FROM = date(2025, 6, 1)
EVENT_DAYS = 30
"""Events start within this many days of EVENTS_FROM (or from half as many before `events_around`), so a day
partition holds several of them."""

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Chen", "Dara", "Elena", "Emeka", "Farah", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Lars", "Leila", "Mateo", "Mira", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
)  # fmt: skip
LAST_NAMES = (
    "Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Silva", "Tanaka",
)  # fmt: skip
COMPANIES = (
    "Acme Analytics", "Blue Harbor", "Cobalt Labs", "Delta Freight", "Evergreen Health", "Foxglove Media",
    "Granite Works", "Helios Energy",
)  # fmt: skip
TITLES = ("Account Executive", "CTO", "Data Engineer", "Founder", "Head of Growth", "Product Manager", "VP Finance")
EVENT_TITLES = ("Discovery call", "Demo", "Quarterly review", "Onboarding", "Contract walkthrough", "Lunch")
VENUES = ("Zoom", "Google Meet", "HQ, room 2", "Client office", None)
ROLES = ("CEO", "Manager", "Sales Rep")
PROFILES = ("Administrator", "Standard")

# (api_name, data_type, system_mandatory) per module, served by /settings/fields and accepted in `fields=`.
MODULE_FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "Contacts": (
        ("Owner", "ownerlookup", False),
        ("First_Name", "text", False),
        ("Last_Name", "text", True),
        ("Email", "email", False),
        ("Phone", "phone", False),
        ("Title", "text", False),
        ("Account_Name", "lookup", False),
        ("Created_Time", "datetime", False),
        ("Modified_Time", "datetime", False),
    ),
    "Events": (
        ("Owner", "ownerlookup", False),
        ("Event_Title", "text", True),
        ("Start_DateTime", "datetime", True),
        ("End_DateTime", "datetime", True),
        ("All_day", "boolean", False),
        ("Venue", "text", False),
        ("Participants", "bigint", False),  # as Zoho describes it; its values are a JSON array
        ("Created_Time", "datetime", False),
        ("Modified_Time", "datetime", False),
    ),
    # Served only because Contacts.Account_Name looks up Accounts and the SDK then reads Accounts' fields too.
    "Accounts": (
        ("Owner", "ownerlookup", False),
        ("Account_Name", "text", True),
        ("Created_Time", "datetime", False),
        ("Modified_Time", "datetime", False),
    ),
}
DEFAULT_CUSTOM_FIELDS: dict[str, dict[str, str]] = {
    "Contacts": {"Lead_Score": "integer", "Customer_Tier": "picklist", "Is_Partner": "boolean", "Renewal_Date": "date"},
    "Events": {"Meeting_Type": "picklist"},
    "Accounts": {},
}
"""The org's own fields (api_name -> data_type) until a test adds or removes some (`add_custom_field`)."""
CUSTOM_DATA_TYPES = {
    "text": "string", "integer": "integer", "double": "double", "boolean": "boolean", "date": "date",
    "datetime": "datetime", "picklist": "picklist",
}  # fmt: skip
"""Zoho data types a custom field may have here -> the kind of sample value it holds."""
CUSTOM_JSON_TYPES = {"boolean": "boolean", "integer": "integer", "double": "double"}
RECORD_MODULES = ("Contacts", "Events")
MODULES = {"Accounts": ("Account", 2), "Contacts": ("Contact", 3), "Events": ("Meeting", 6)}
"""The modules `/settings/modules` lists (each with fields at `/settings/fields`): singular label, tab position."""
SYSTEM_FIELDS = frozenset(("Owner", "Created_Time", "Modified_Time"))
DATETIME_FIELDS = frozenset(("Created_Time", "Modified_Time", "Start_DateTime", "End_DateTime"))
SORTABLE_FIELDS = ("id", "Created_Time", "Modified_Time")
USER_TYPES = ("AllUsers", "ActiveUsers", "DeactiveUsers", "DeletedUsers", "CurrentUser", "AdminUsers")
TEXT_OPERATORS = frozenset(("equals", "not_equal", "starts_with", "in"))
ORDER_OPERATORS = frozenset(("equals", "not_equal", "greater_than", "greater_equal", "less_than", "less_equal"))


# --- rows ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One record of any module. Datetimes are epoch seconds; `values` holds the module's other fields."""

    id: int
    values: dict[str, Any]
    created_s: int
    modified_s: int
    owner_id: int
    deleted_s: int | None = None


@dataclass(slots=True)
class _User:
    id: int
    first_name: str
    last_name: str
    email: str
    role: str
    profile: str
    created_s: int
    modified_s: int
    status: str = "active"  # active | disabled | deleted


@dataclass
class _PageToken:
    """What a `next_page_token` resumes: the query, where it stopped, and when the token stops working."""

    module: str
    sort_by: str
    descending: bool
    modified_since_s: int | None
    last_key: tuple[int, int]
    served: int
    expires_at: float


class ZohoApiError(Exception):
    """Raised inside handlers; rendered as Zoho's `{"code", "details", "message", "status": "error"}` body."""

    def __init__(self, status_code: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = dict(details or {})

    def response(self) -> JSONResponse:
        body = {"code": self.code, "details": self.details, "message": self.message, "status": "error"}
        return json_response(body, self.status_code)


def _invalid_data(message: str, **details: Any) -> ZohoApiError:
    return ZohoApiError(400, "INVALID_DATA", message, details)


def _missing_param(name: str) -> ZohoApiError:
    return ZohoApiError(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param_name": name})


def _invalid_query(reason: str, **details: Any) -> ZohoApiError:
    return ZohoApiError(400, "INVALID_QUERY", "invalid query formed", {"reason": reason, **details})


def _with_query(url: str, extra: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _parse_iso(value: str, name: str) -> int:
    """Epoch seconds of an ISO 8601 instant with an offset; Zoho refuses naive datetimes."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _invalid_data(f"invalid datetime for {name}", param_name=name) from None
    if parsed.tzinfo is None:
        raise _invalid_data(f"{name} needs a UTC offset (yyyy-MM-ddTHH:mm:ss+HH:mm)", param_name=name)
    return int(parsed.timestamp())


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise _invalid_data(f"invalid value for {name}", param_name=name, expected_data_type="integer")
    return int(raw)


# --- search criteria -------------------------------------------------------------------------------------------------

_Predicate = Callable[[_Row], bool]


def _split_unescaped(text: str, separator: str, limit: int = -1) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
            continue
        if char == separator and (limit < 0 or len(parts) < limit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _combine(left: _Predicate, right: _Predicate, *, conjunction: bool) -> _Predicate:
    if conjunction:
        return lambda row: left(row) and right(row)
    return lambda row: left(row) or right(row)


class _CriteriaParser:
    """Zoho's `((field:operator:value)and(field:operator:value))` grammar, with `\\(`, `\\)`, `\\,` escapes."""

    def __init__(self, text: str, module: str, row_value: Callable[[_Row, str], Any]) -> None:
        self.text = text.strip()
        self.position = 0
        self.module = module
        self.row_value = row_value
        self.conditions = 0

    def parse(self) -> _Predicate:
        if not self.text.startswith("("):
            raise _invalid_query("criteria must be wrapped in parentheses")
        predicate = self._group()
        if self.position != len(self.text):
            raise _invalid_query("unexpected text after the criteria")
        if self.conditions > MAX_CRITERIA:
            raise _invalid_query(f"at most {MAX_CRITERIA} criteria are allowed")
        return predicate

    def _group(self) -> _Predicate:
        self.position += 1  # "("
        if self.text.startswith("(", self.position):
            predicate = self._group()
            while not self.text.startswith(")", self.position):
                for joiner in ("and", "or"):
                    if self.text.lower().startswith(joiner, self.position):
                        self.position += len(joiner)
                        break
                else:
                    raise _invalid_query("criteria must be joined with and / or")
                if not self.text.startswith("(", self.position):
                    raise _invalid_query("expected ( after and / or")
                predicate = _combine(predicate, self._group(), conjunction=joiner == "and")
            self.position += 1  # ")"
            return predicate
        end = self.position
        while end < len(self.text) and self.text[end] != ")":
            end += 2 if self.text[end] == "\\" else 1
        if end >= len(self.text):
            raise _invalid_query("unbalanced parentheses")
        condition = self.text[self.position : end]
        self.position = end + 1
        self.conditions += 1
        return self._condition(condition)

    def _condition(self, condition: str) -> _Predicate:
        parts = condition.split(":", 2)
        if len(parts) != 3:
            raise _invalid_query("a criterion is field:operator:value")
        name, operator, raw_value = parts[0].strip(), parts[1].strip().lower(), parts[2]
        known = {api_name for api_name, _, _ in MODULE_FIELDS[self.module]} | {"id"}
        if name not in known:
            raise _invalid_query("invalid field in criteria", api_name=name)
        if name in DATETIME_FIELDS:
            return self._datetime_condition(name, operator, raw_value)
        if operator not in TEXT_OPERATORS:
            raise _invalid_query("operator not supported for this field", api_name=name, operator=operator)
        values = [value.lower() for value in _split_unescaped(raw_value, ",")]

        def text_of(row: _Row) -> str:
            value = self.row_value(row, name)
            if isinstance(value, dict):
                value = value.get("name")
            return "" if value is None else str(value).lower()

        if operator == "equals":
            return lambda row: text_of(row) == values[0]
        if operator == "not_equal":
            return lambda row: text_of(row) != values[0]
        if operator == "starts_with":
            return lambda row: text_of(row).startswith(values[0])
        members = frozenset(values)
        return lambda row: text_of(row) in members

    def _datetime_condition(self, name: str, operator: str, raw_value: str) -> _Predicate:
        def seconds(row: _Row) -> int:
            value = self.row_value(row, name)
            return int(value)

        if operator == "between":
            bounds = _split_unescaped(raw_value, ",")
            if len(bounds) != 2:
                raise _invalid_query("between takes two comma-separated values", api_name=name)
            low, high = (_parse_iso(bound, name) for bound in bounds)
            return lambda row: low <= seconds(row) <= high
        if operator not in ORDER_OPERATORS:
            raise _invalid_query("operator not supported for this field", api_name=name, operator=operator)
        bound = _parse_iso(raw_value, name)
        compare: dict[str, Callable[[int], bool]] = {
            "equals": lambda value: value == bound,
            "not_equal": lambda value: value != bound,
            "greater_than": lambda value: value > bound,
            "greater_equal": lambda value: value >= bound,
            "less_than": lambda value: value < bound,
            "less_equal": lambda value: value <= bound,
        }
        test = compare[operator]
        return lambda row: test(seconds(row))


# --- data generation ------------------------------------------------------------------------------------------------


def _generate_users(count: int, rng: random.Random) -> list[_User]:
    users = []
    for index in range(count):
        first, last = FIRST_NAMES[index % len(FIRST_NAMES)], LAST_NAMES[(index * 7) % len(LAST_NAMES)]
        created = CREATED_FROM_S + index * 3_600 + int(rng.random() * 3_600)
        users.append(
            _User(
                id=USER_ID_BASE + index + 1,
                first_name=first,
                last_name=last,
                email=f"{first.lower()}.{last.lower()}.{index + 1}@sandbox-org.example",
                role=ROLES[0] if index == 0 else rng.choice(ROLES[1:]),
                profile=PROFILES[0] if index == 0 else rng.choice(PROFILES),
                created_s=created,
                modified_s=created + int(rng.random() * (MODIFIED_UNTIL_S - created)),
                status="disabled" if index and index % 9 == 0 else "active",
            )
        )
    return users


def _generate_contacts(count: int, owner_ids: list[int], rng: random.Random) -> list[_Row]:
    """`count` contacts whose ids and Created_Time rise together; a few bulk draws keep 100,000 well under 1 s."""
    first_names = rng.choices(FIRST_NAMES, k=count)
    last_names = rng.choices(LAST_NAMES, k=count)
    companies = rng.choices(range(len(COMPANIES)), k=count)
    titles = rng.choices(TITLES, k=count)
    owners = rng.choices(owner_ids, k=count)
    span = CREATED_UNTIL_S - CREATED_FROM_S
    draw = rng.random
    created = [CREATED_FROM_S + index * span // max(count, 1) + int(draw() * 60) for index in range(count)]
    modified = [stamp + int(draw() * (MODIFIED_UNTIL_S - stamp)) for stamp in created]
    lowercase = {name: name.lower() for name in (*FIRST_NAMES, *LAST_NAMES)}
    domains = [company.split()[0].lower() + ".example" for company in COMPANIES]
    rows = []
    for index in range(count):
        first, last, company = first_names[index], last_names[index], companies[index]
        number = index + 1
        rows.append(
            _Row(
                CONTACT_ID_BASE + number,
                {
                    "First_Name": first,
                    "Last_Name": last,
                    "Email": f"{lowercase[first]}.{lowercase[last]}.{number}@{domains[company]}",
                    "Phone": None
                    if number % 17 == 0
                    else f"+1 555 {number // 10_000 % 1_000:03d} {number % 10_000:04d}",
                    "Title": titles[index],
                    "Account_Name": {"name": COMPANIES[company], "id": str(ACCOUNT_ID_BASE + company + 1)},
                },
                created[index],
                modified[index],
                owners[index],
            )
        )
    return rows


def _generate_events(count: int, owner_ids: list[int], around: date | None, rng: random.Random) -> list[_Row]:
    first_day = events_first_day(EVENTS_FROM, EVENT_DAYS, around)
    events_from_s = int(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC).timestamp())
    # Coming events were created before the day they are generated around, never in the future.
    created_until_s = events_from_s + EVENT_DAYS // 2 * 86_400 if around else None
    rows = []
    for index in range(count):
        number = index + 1
        all_day = number % 8 == 0
        day = int(rng.random() * EVENT_DAYS)
        if all_day:
            start = events_from_s + day * 86_400  # rendered as local midnight of that date, see _render_event_time
            end = start + 86_400
        else:
            start = events_from_s + day * 86_400 + int(rng.random() * 96) * 900
            end = start + rng.choice((1_800, 3_600, 5_400))
        created = start - 86_400 * (1 + int(rng.random() * 20))
        modified = created + int(rng.random() * 86_400 * 5)
        if created_until_s is not None:
            created, modified = min(created, created_until_s - 86_400), min(modified, created_until_s)
        rows.append(
            _Row(
                EVENT_ID_BASE + number,
                {
                    "Event_Title": f"{rng.choice(EVENT_TITLES)} #{number}",
                    "Start_DateTime": start,
                    "End_DateTime": end,
                    "All_day": all_day,
                    "Venue": rng.choice(VENUES),
                },
                created,
                modified,
                rng.choice(owner_ids),
            )
        )
    return rows


ZOHO_RESPONSES = {"accepted": "accepted", "declined": "declined", "tentative": "tentative", "none": "not_known"}


def _participants(event_id: int) -> list[dict[str, Any]]:
    """A generated event's invitees in Zoho's shape: email participants (no CRM record behind them)."""
    return [
        {
            "Email": guest.email,
            "name": f"{guest.first_name} {guest.last_name}",
            "invited": True,
            "type": "email",
            "participant": guest.email,
            "status": ZOHO_RESPONSES[guest.response],
        }
        for guest in sample_guests(str(event_id), "sandbox-org.example")
    ]


# --- the emulator ---------------------------------------------------------------------------------------------------


@dataclass
class _Module:
    rows: dict[int, _Row] = field(default_factory=dict)
    next_number: int = 1
    version: int = 0


class ZohoEmulator:
    """One Zoho CRM org with one OAuth client; serve `app` with any ASGI server.

    Inspection, mutation and fault knobs are thread-safe and can be called while `app` serves requests. `clock`
    (seconds since the epoch) drives token, page-token and credit expiry and stamps mutations; generated data never
    depends on it. `daily_credits=None` turns credit enforcement off (calls are still counted).
    """

    INDEX_CACHE_SIZE = 16

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        users: int = 12,
        contacts: int = 2_000,
        events: int = 300,
        events_around: date | None = None,
        seed: int = 7,
        access_token_ttl_s: int = ACCESS_TOKEN_TTL_S,
        page_token_ttl_s: int = PAGE_TOKEN_TTL_S,
        daily_credits: int | None = None,
        utc_offset_minutes: int = 330,
        api_domain: str | None = None,
        location: str = "us",
        push_time_scale: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        self._lock = threading.RLock()
        # The data centre the sandbox account lives in; its grants and tokens work only at that data centre's origins.
        self.location = location
        self._data_centres: dict[str, tuple[str, str]] = {}
        """location -> (accounts server origin, API origin) where the caller serves `app` for that data centre."""
        self.client_id = client_id
        self.clock = clock
        self.request_log: list[RequestRecord] = []
        self.org_timezone = timezone(timedelta(minutes=utc_offset_minutes))
        self._api_domain = api_domain
        # Watch channels (zoho_push.py); `push_time_scale` compresses the retry backoff for tests.
        self.push = ZohoPush(
            lock=self._lock,
            clock=clock,
            org_timezone=self.org_timezone,
            api_origin=api_domain or "https://www.zohoapis.com",
            time_scale=push_time_scale,
        )
        self._page_token_ttl_s = page_token_ttl_s
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret},
            access_token_ttl_s=access_token_ttl_s,
            clock=clock,
            access_token_prefix="1000.",
            refresh_token_prefix="1000.",
        )
        self._offline_codes: set[str] = set()
        # Unenforced credits are still counted against a budget nobody reaches, so tests can read credits_used().
        self._credits = DailyQuota(daily_credits if daily_credits is not None else 10**12, clock)
        self._enforce_credits = daily_credits is not None
        self._page_tokens: dict[str, _PageToken] = {}
        self._custom_fields = {module: dict(fields) for module, fields in DEFAULT_CUSTOM_FIELDS.items()}
        self._index_cache: OrderedDict[tuple[Any, ...], list[tuple[int, int]]] = OrderedDict()

        rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
        self._users = {user.id: user for user in _generate_users(max(users, 1), rng)}
        owner_ids = list(self._users)
        self._modules = {
            "Contacts": _Module({row.id: row for row in _generate_contacts(contacts, owner_ids, rng)}, contacts + 1),
            "Events": _Module(
                {row.id: row for row in _generate_events(events, owner_ids, events_around, rng)}, events + 1
            ),
        }
        self.app = self._build_app()

    # --- rendering ---------------------------------------------------------------------------------------------------

    def _iso(self, epoch_s: int) -> str:
        return datetime.fromtimestamp(epoch_s, self.org_timezone).isoformat()

    def _render_event_time(self, row: _Row, name: str) -> str:
        """All-day events are local midnights of their dates; the generator keeps their date as a UTC midnight."""
        epoch_s = int(row.values[name])
        if row.values.get("All_day"):
            day = datetime.fromtimestamp(epoch_s, UTC).date()
            return datetime(day.year, day.month, day.day, tzinfo=self.org_timezone).isoformat()
        return self._iso(epoch_s)

    def _custom_sample(self, module: str, row: _Row, name: str) -> Any:
        value = custom_field_sample(str(row.id), name, CUSTOM_DATA_TYPES[self._custom_fields[module][name]])
        if isinstance(value, datetime):
            return self._iso(int(value.timestamp()))
        return value.isoformat() if isinstance(value, date) else value

    def _owner(self, owner_id: int) -> dict[str, Any]:
        user = self._users[owner_id]
        return {"name": f"{user.first_name} {user.last_name}", "id": str(user.id), "email": user.email}

    def _row_value(self, module: str, row: _Row, name: str) -> Any:
        """Raw comparable value (epoch seconds for datetimes) for criteria and sorting."""
        if name == "id":
            return str(row.id)
        if name == "Created_Time":
            return row.created_s
        if name == "Modified_Time":
            return row.modified_s
        if name == "Owner":
            return self._owner(row.owner_id)
        if module == "Events" and name in ("Start_DateTime", "End_DateTime"):
            return self._event_instant(row, name)
        return row.values.get(name)

    def _event_instant(self, row: _Row, name: str) -> int:
        return int(datetime.fromisoformat(self._render_event_time(row, name)).timestamp())

    def _render(self, module: str, row: _Row, names: Iterable[str]) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name in names:
            if name == "Owner":
                record[name] = self._owner(row.owner_id)
            elif name in ("Created_Time", "Modified_Time"):
                record[name] = self._iso(row.created_s if name == "Created_Time" else row.modified_s)
            elif module == "Events" and name in ("Start_DateTime", "End_DateTime"):
                record[name] = self._render_event_time(row, name)
            elif module == "Events" and name == "Participants" and name not in row.values:
                record[name] = _participants(row.id)
            elif name in self._custom_fields[module] and name not in row.values:
                record[name] = self._custom_sample(module, row, name)
            else:
                value = row.values.get(name)
                record[name] = dict(value) if isinstance(value, dict) else value
        record["id"] = str(row.id)
        return record

    def _render_user(self, user: _User) -> dict[str, Any]:
        return {
            "id": str(user.id),
            "first_name": user.first_name,
            "last_name": user.last_name,
            "full_name": f"{user.first_name} {user.last_name}",
            "email": user.email,
            "status": user.status,
            "confirm": True,
            "role": {"name": user.role, "id": str(USER_ID_BASE + 90_000 + ROLES.index(user.role))},
            "profile": {"name": user.profile, "id": str(USER_ID_BASE + 80_000 + PROFILES.index(user.profile))},
            "time_zone": "Asia/Kolkata",
            "created_time": self._iso(user.created_s),
            "Modified_Time": self._iso(user.modified_s),
        }

    def _render_deleted(self, module: str, row: _Row) -> dict[str, Any]:
        deleter = self._owner(row.owner_id)
        name_field = "Event_Title" if module == "Events" else "Last_Name"
        return {
            "deleted_by": {"name": deleter["name"], "id": deleter["id"]},
            "id": str(row.id),
            "display_name": row.values.get(name_field),
            "type": "recycle",
            "created_by": {"name": deleter["name"], "id": deleter["id"]},
            "deleted_time": self._iso(row.deleted_s or row.modified_s),
        }

    # --- inspection (Python side) -------------------------------------------------------------------------------------

    def _all_fields(self, module: str) -> tuple[str, ...]:
        return (*(api_name for api_name, _, _ in MODULE_FIELDS[module]), *self._custom_fields[module])

    @synchronized
    def add_custom_field(self, module: str, api_name: str, data_type: str = "text") -> None:
        """An admin adds a field to Contacts or Events: settings/fields lists it (custom_field true), `fields=` may
        name it at once, and existing records hold sample values until written."""
        if data_type not in CUSTOM_DATA_TYPES or api_name in self._all_fields(module):
            raise ValueError(f"a new field's data_type is one of {sorted(CUSTOM_DATA_TYPES)}")
        self._custom_fields[module][api_name] = data_type

    @synchronized
    def remove_custom_field(self, module: str, api_name: str) -> None:
        """An admin deletes a custom field: settings/fields drops it and a request naming it is INVALID_DATA."""
        del self._custom_fields[module][api_name]
        for row in self._modules[module].rows.values():
            row.values.pop(api_name, None)

    @synchronized
    def _records(self, module: str, include_deleted: bool) -> list[dict[str, Any]]:
        records = []
        for row_id in sorted(self._modules[module].rows):
            row = self._modules[module].rows[row_id]
            if row.deleted_s is not None and not include_deleted:
                continue
            record = self._render(module, row, self._all_fields(module))
            record["$deleted_time"] = self._iso(row.deleted_s) if row.deleted_s is not None else None
            records.append(record)
        return records

    def contact_records(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Contacts in Zoho's shape with every field, by id; `$deleted_time` (ours) marks deleted ones."""
        return self._records("Contacts", include_deleted)

    def event_records(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._records("Events", include_deleted)

    @synchronized
    def user_records(self, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        users = sorted(self._users.values(), key=lambda user: user.id)
        return [self._render_user(user) for user in users if include_deleted or user.status != "deleted"]

    @synchronized
    def token_requests(self, grant_type: str | None = None) -> int:
        return self._oauth.count_token_requests(grant_type)

    @synchronized
    def issued_tokens(self) -> frozenset[str]:
        return frozenset(self._oauth.issued)

    @synchronized
    def credits_used(self) -> int:
        """Credits spent today (one per authorized CRM call)."""
        return self._credits.limit - self._credits.remaining

    # --- mutations and fault knobs -----------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _touch(self, module: str) -> None:
        self._modules[module].version += 1

    def _check_values(self, module: str, values: Mapping[str, Any]) -> None:
        writable = set(self._all_fields(module)) - SYSTEM_FIELDS
        unknown = sorted(set(values) - writable)
        if unknown:
            raise ValueError(f"not writable on {module}: {', '.join(unknown)}")

    def _stored(self, module: str, values: Mapping[str, Any], all_day: bool = False) -> dict[str, Any]:
        stored = dict(values)
        all_day = bool(stored.get("All_day", all_day))
        for name in ("Start_DateTime", "End_DateTime"):
            if module == "Events" and isinstance(stored.get(name), str):
                if all_day:  # kept as the UTC midnight of the local date, as the generator does
                    local_date = datetime.fromisoformat(stored[name]).date()
                    stored[name] = int(
                        datetime(local_date.year, local_date.month, local_date.day, tzinfo=UTC).timestamp()
                    )
                else:
                    stored[name] = _parse_iso(stored[name], name)
        if module == "Contacts" and isinstance(stored.get("Account_Name"), str):
            stored["Account_Name"] = {"name": stored["Account_Name"], "id": str(ACCOUNT_ID_BASE + 999)}
        return stored

    @synchronized
    def _create(self, module: str, values: Mapping[str, Any]) -> str:
        self._check_values(module, values)
        state = self._modules[module]
        base = CONTACT_ID_BASE if module == "Contacts" else EVENT_ID_BASE
        now = self._now()
        defaults: dict[str, Any] = {"All_day": False} if module == "Events" else {}
        row = _Row(base + state.next_number, defaults | self._stored(module, values), now, now, min(self._users))
        state.next_number += 1
        state.rows[row.id] = row
        self._touch(module)
        self.push.changed(module, "create", str(row.id), values)
        return str(row.id)

    @synchronized
    def _update(self, module: str, record_id: str, values: Mapping[str, Any]) -> None:
        self._check_values(module, values)
        row = self._modules[module].rows.get(int(record_id)) if record_id.isdigit() else None
        if row is None or row.deleted_s is not None:
            raise KeyError(record_id)
        row.values.update(self._stored(module, values, bool(row.values.get("All_day"))))
        row.modified_s = max(self._now(), row.created_s)
        self._touch(module)
        self.push.changed(module, "edit", record_id, values)

    @synchronized
    def _delete(self, module: str, record_id: str) -> None:
        row = self._modules[module].rows.get(int(record_id)) if record_id.isdigit() else None
        if row is None or row.deleted_s is not None:
            raise KeyError(record_id)
        row.deleted_s = self._now()
        self._touch(module)
        self.push.changed(module, "delete", record_id, {})

    @synchronized
    def record_stamps(self, module: str, record_id: str) -> dict[str, Any]:
        """What Zoho's write APIs answer in `details` for a record."""
        row = self._modules[module].rows[int(record_id)]
        owner = self._owner(row.owner_id)
        return {
            "Modified_Time": self._iso(row.modified_s),
            "Modified_By": owner,
            "Created_Time": self._iso(row.created_s),
            "id": str(row.id),
            "Created_By": owner,
        }

    def create_contact(self, values: Mapping[str, Any]) -> str:
        """Field API names as keys (Account_Name may be a plain company name); returns the new id."""
        return self._create("Contacts", values)

    def update_contact(self, contact_id: str, values: Mapping[str, Any]) -> None:
        self._update("Contacts", contact_id, values)

    def delete_contact(self, contact_id: str) -> None:
        self._delete("Contacts", contact_id)

    def create_event(self, values: Mapping[str, Any]) -> str:
        """Start_DateTime / End_DateTime as ISO 8601 strings with an offset."""
        return self._create("Events", values)

    def update_event(self, event_id: str, values: Mapping[str, Any]) -> None:
        self._update("Events", event_id, values)

    def delete_event(self, event_id: str) -> None:
        self._delete("Events", event_id)

    @synchronized
    def update_user(self, user_id: str, **values: str) -> None:
        user = self._users[int(user_id)]
        for name, value in values.items():
            if name not in ("first_name", "last_name", "email", "status"):
                raise ValueError(f"not writable on users: {name}")
            setattr(user, name, value)
        user.modified_s = self._now()

    def delete_user(self, user_id: str) -> None:
        self.update_user(user_id, status="deleted")

    @synchronized
    def set_rate_limit(self, daily_credits: int | None) -> None:
        """Change the org's daily credits (None: count, never refuse), even while serving."""
        self._enforce_credits = daily_credits is not None
        self._credits.limit = daily_credits if daily_credits is not None else 10**12

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        self._oauth.revoke_all_refresh_tokens()

    @synchronized
    def expire_page_tokens(self, *, from_now_on: bool = False) -> None:
        """Every outstanding `next_page_token` now answers EXPIRED_VALUE, as after `page_token_expiry`; with
        `from_now_on`, so does every token issued later (a reader that fetches ahead has already taken the next
        pages' tokens by the time a test could expire them)."""
        now = self.clock()
        for token in self._page_tokens.values():
            token.expires_at = min(token.expires_at, now)
        if from_now_on:
            self._page_token_ttl_s = 0

    # --- ordered indexes ---------------------------------------------------------------------------------------------

    @synchronized
    def _ordered(self, module: str, sort_by: str, descending: bool, since_s: int | None) -> list[tuple[int, int]]:
        """(sort key, id) of live records modified at or after `since_s`, in page order; cached per version."""
        state = self._modules[module]
        cache_key = (module, state.version, sort_by, descending, since_s)
        cached = self._index_cache.get(cache_key)
        if cached is not None:
            self._index_cache.move_to_end(cache_key)
            return cached
        sign = -1 if descending else 1
        keyed = []
        for row in state.rows.values():
            if row.deleted_s is not None or (since_s is not None and row.modified_s < since_s):
                continue
            key = row.id if sort_by == "id" else row.created_s if sort_by == "Created_Time" else row.modified_s
            keyed.append((sign * key, sign * row.id))
        keyed.sort()
        self._index_cache[cache_key] = keyed
        if len(self._index_cache) > self.INDEX_CACHE_SIZE:
            self._index_cache.popitem(last=False)
        return keyed

    # --- HTTP: accounts -----------------------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            known_client = self._oauth.is_known_client(client_id)
        if not known_client:
            return PlainTextResponse("Invalid Client: the client_id is not registered.", status_code=400)
        if not redirect_uri:
            return PlainTextResponse("Invalid Redirect Uri: redirect_uri is required.", status_code=400)
        if params.get("response_type") != "code":
            return PlainTextResponse("Invalid response_type: only code is supported.", status_code=400)
        code_challenge = params.get("code_challenge") or None
        if code_challenge is not None and params.get("code_challenge_method") != "S256":
            return PlainTextResponse("Invalid code_challenge_method: only S256 is supported.", status_code=400)
        # Zoho separates scopes with commas; auto-consent grants all of them.
        scopes = tuple(dict.fromkeys(scope.strip() for scope in params.get("scope", "").split(",") if scope.strip()))
        with self._lock:
            code = self._oauth.issue_code(
                client_id=client_id, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
            )
            if params.get("access_type") == "offline":
                self._offline_codes.add(code)
        redirect_params = {"code": code}
        if "state" in params:
            redirect_params["state"] = params["state"]
        # Multi-DC: Zoho names the user's data centre and the accounts server the code must be redeemed at.
        redirect_params |= {"location": self.location, "accounts-server": self._home(request)[0]}
        return RedirectResponse(_with_query(redirect_uri, redirect_params), status_code=302)

    @synchronized
    def serve_data_centre(self, location: str, *, accounts_origin: str, api_origin: str) -> None:
        """Serve `location`'s accounts server and API host at these origins (the caller serves `app` on each; one
        origin may be both). Once any is named, every data centre in use must be: an origin not named is no one's."""
        if location not in DATA_CENTRES:
            raise ValueError(f"Zoho has no data centre {location!r}; known: {', '.join(DATA_CENTRES)}")
        self._data_centres[location] = (accounts_origin.rstrip("/"), api_origin.rstrip("/"))

    @synchronized
    def data_centre_origins(self, location: str) -> tuple[str, str]:
        """The (accounts server, API host) origins `serve_data_centre` named for `location`."""
        return self._data_centres[location]

    def _home(self, request: Request) -> tuple[str, str]:
        """(accounts server, API origin) of the account's data centre: the named ones, or with none named the origin
        that was asked (one origin, one data centre) with the configured api_domain."""
        with self._lock:
            named = self._data_centres.get(self.location) if self._data_centres else None
        if named is not None:
            return named
        here = f"{request.url.scheme}://{request.url.netloc}"
        return ("", "") if self._data_centres else (here, self._api_domain or here)

    def _at_own(self, request: Request, role: int) -> bool:
        """Whether the request reached the account's own accounts server (role 0) or API host (role 1)."""
        return not self._data_centres or f"{request.url.scheme}://{request.url.netloc}" == self._home(request)[role]

    def _at_own_accounts_server(self, request: Request) -> bool:
        """Grants of an account are redeemable only at its data centre's accounts server."""
        return self._at_own(request, 0)

    @staticmethod
    def _token_error(kind: OAuthErrorKind) -> JSONResponse:
        """Zoho answers token errors with HTTP 200 and its own `error` codes (not RFC 6749's 400 invalid_grant)."""
        zoho_error = {
            OAuthErrorKind.INVALID_REQUEST: "invalid_request",
            OAuthErrorKind.INVALID_CLIENT: "invalid_client",
            OAuthErrorKind.INVALID_CLIENT_SECRET: "invalid_client_secret",
            OAuthErrorKind.INVALID_CODE: "invalid_code",
            OAuthErrorKind.REDIRECT_URI_MISMATCH: "invalid_redirect_uri",
            OAuthErrorKind.CODE_VERIFIER_MISMATCH: "invalid_code",
            OAuthErrorKind.INVALID_REFRESH_TOKEN: "invalid_code",
            OAuthErrorKind.UNSUPPORTED_GRANT_TYPE: "unsupported_grant_type",
        }[kind]
        return json_response({"error": zoho_error})

    async def _token(self, request: Request) -> Response:
        # Zoho takes the parameters from the query string or the form body alike.
        form = dict(parse_qsl(request.url.query, keep_blank_values=True)) | await read_form(request)
        grant_type = form.get("grant_type", "")
        required = {
            "authorization_code": ("client_id", "client_secret", "code"),
            "refresh_token": ("client_id", "client_secret", "refresh_token"),
        }
        with self._lock:
            self._oauth.record_token_request(grant_type)
        if not self._at_own_accounts_server(request):
            return self._token_error(OAuthErrorKind.INVALID_CODE)
        if grant_type not in required:
            kind = OAuthErrorKind.UNSUPPORTED_GRANT_TYPE if grant_type else OAuthErrorKind.INVALID_REQUEST
            return self._token_error(kind)
        if any(not form.get(name) for name in required[grant_type]):
            return self._token_error(OAuthErrorKind.INVALID_REQUEST)
        offline = False
        try:
            with self._lock:
                if grant_type == "authorization_code":
                    code = form["code"]
                    offline = code in self._offline_codes
                    self._offline_codes.discard(code)
                    grant = self._oauth.exchange_code(
                        client_id=form["client_id"],
                        client_secret=form["client_secret"],
                        code=code,
                        redirect_uri=form.get("redirect_uri", ""),
                        code_verifier=form.get("code_verifier") or None,
                    )
                    if not offline:  # online access: no refresh token exists for this grant
                        self._oauth.revoke_refresh_token(grant.refresh_token)
                else:
                    grant = self._oauth.refresh(
                        client_id=form["client_id"],
                        client_secret=form["client_secret"],
                        refresh_token=form["refresh_token"],
                    )
        except OAuthError as error:
            return self._token_error(error.kind)
        body: dict[str, Any] = {"access_token": grant.access_token}
        if offline:
            body["refresh_token"] = grant.refresh_token
        # Zoho's token response names no scope: clients learn nothing about what was granted from it.
        body |= {
            "api_domain": self._home(request)[1],
            "token_type": "Bearer",
            "expires_in": grant.expires_in,
        }
        return json_response(body)

    async def _revoke(self, request: Request) -> Response:
        form = dict(parse_qsl(request.url.query, keep_blank_values=True)) | await read_form(request)
        if not form.get("token"):
            return json_response({"error": "invalid_request"})
        if not self._at_own_accounts_server(request):
            return json_response({"error": "invalid_code"})
        with self._lock:
            revoked = self._oauth.revoke_refresh_token(form["token"])
        return json_response({"status": "success"} if revoked else {"error": "invalid_code"})

    # --- HTTP: CRM --------------------------------------------------------------------------------------------------

    def _crm_endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], *scopes: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate `Zoho-oauthtoken`, check every required scope, spend one credit, then run `handler`."""

        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip() if scheme == OAUTH_HEADER_SCHEME else ""
            if token and not self._at_own(request, 1):
                # Another data centre's API host knows nothing of this account's tokens.
                return ZohoApiError(401, "INVALID_TOKEN", "invalid oauth token").response()
            with self._lock:
                status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
                granted = access.scopes if access is not None else ()
                authorized = status is AccessStatus.VALID and all(_scope_granted(scope, granted) for scope in scopes)
                credit_ok = not authorized or self._credits.try_consume() or not self._enforce_credits
                remaining = self._credits.remaining if self._enforce_credits else None
            if not token:
                return ZohoApiError(401, "AUTHENTICATION_FAILURE", "Authentication failed").response()
            if status is not AccessStatus.VALID:
                return ZohoApiError(401, "INVALID_TOKEN", "invalid oauth token").response()
            if not authorized:
                return ZohoApiError(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL").response()
            if not credit_ok:
                return ZohoApiError(
                    429, "TOO_MANY_REQUESTS", "The API credits limit for the org has been exceeded."
                ).response()
            try:
                response = await handler(request)
            except ZohoApiError as error:
                response = error.response()
            if remaining is not None:
                response.headers["X-RATELIMIT-LIMIT"] = str(self._credits.limit)
                response.headers["X-RATELIMIT-REMAINING"] = str(remaining)
            return response

        return endpoint

    @staticmethod
    def _if_modified_since(request: Request) -> int | None:
        raw = request.headers.get("if-modified-since")
        return _parse_iso(raw, "If-Modified-Since") if raw else None

    def _requested_fields(self, module: str, raw: str | None, *, required: bool) -> tuple[str, ...]:
        if raw is None or not raw.strip():
            if required:
                raise _missing_param("fields")
            return self._all_fields(module)
        names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
        if len(names) > MAX_FIELDS:
            raise ZohoApiError(400, "LIMIT_EXCEEDED", f"at most {MAX_FIELDS} fields", {"limit": MAX_FIELDS})
        known = set(self._all_fields(module)) | {"id"}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise _invalid_data("the field is not available", api_name=unknown[0], param_name="fields")
        return tuple(name for name in names if name != "id")

    def _per_page(self, request: Request) -> int:
        per_page = _int_param(request.query_params.get("per_page"), "per_page", PER_PAGE_MAX)
        if not 1 <= per_page <= PER_PAGE_MAX:
            raise _invalid_data(f"per_page must be between 1 and {PER_PAGE_MAX}", param_name="per_page")
        return per_page

    async def _list_records(self, request: Request) -> Response:
        module = request.path_params["module"]
        params = request.query_params
        if params.get("ids"):
            return self._records_by_id(
                module, params["ids"], self._requested_fields(module, params.get("fields"), required=False)
            )
        fields = self._requested_fields(module, params.get("fields"), required=True)
        per_page = self._per_page(request)
        page_token = params.get("page_token")
        if page_token is not None and params.get("page") is not None:
            raise _invalid_data("page and page_token cannot be used together", param_names=["page", "page_token"])
        with self._lock:
            if page_token is not None:
                return self._continue_page(module, page_token, per_page, fields)
            sort_by = params.get("sort_by") or "id"
            if sort_by not in SORTABLE_FIELDS:
                raise _invalid_data("sort_by must be id, Created_Time or Modified_Time", param_name="sort_by")
            sort_order = params.get("sort_order") or "asc"
            if sort_order not in ("asc", "desc"):
                raise _invalid_data("sort_order must be asc or desc", param_name="sort_order")
            since_s = self._if_modified_since(request)
            page = _int_param(params.get("page"), "page", 1)
            if page < 1:
                raise _invalid_data("page must be a positive integer", param_name="page")
            if (page - 1) * per_page >= DISCRETE_PAGINATION_LIMIT:
                raise ZohoApiError(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    f"you can only get the first {DISCRETE_PAGINATION_LIMIT} records without using page_token",
                    {"limit": DISCRETE_PAGINATION_LIMIT},
                )
            ordered = self._ordered(module, sort_by, sort_order == "desc", since_s)
            start = (page - 1) * per_page
            stop = min(start + per_page, len(ordered), DISCRETE_PAGINATION_LIMIT)
            if start >= len(ordered):
                return Response(status_code=304 if since_s is not None else 204)
            state = _PageToken(module, sort_by, sort_order == "desc", since_s, ordered[stop - 1], stop, 0.0)
            body = self._page_body(module, ordered[start:stop], fields, per_page, page, stop < len(ordered), state)
        return json_response(body)

    def _records_by_id(self, module: str, raw_ids: str, fields: tuple[str, ...]) -> Response:
        """`ids=` (at most MAX_IDS): those live records, in the order asked, unknown ids left out; 204 for none."""
        ids = [part.strip() for part in raw_ids.split(",") if part.strip()]
        if len(ids) > MAX_IDS:
            raise ZohoApiError(400, "LIMIT_EXCEEDED", f"at most {MAX_IDS} ids", {"limit": MAX_IDS})
        with self._lock:
            rows = self._modules[module].rows
            found = [rows.get(int(record_id)) if record_id.isdigit() else None for record_id in ids]
            data = [self._render(module, row, fields) for row in found if row is not None and row.deleted_s is None]
        if not data:
            return Response(status_code=204)
        return json_response(
            {"data": data, "info": {"per_page": len(ids), "count": len(data), "page": 1, "more_records": False}}
        )

    def _continue_page(self, module: str, token: str, per_page: int, fields: tuple[str, ...]) -> Response:
        state = self._page_tokens.get(token)
        if state is None or state.module != module:
            raise _invalid_data("invalid page_token", param_name="page_token")
        if state.expires_at <= self.clock():
            raise ZohoApiError(400, "EXPIRED_VALUE", "the given page_token has expired", {"param_name": "page_token"})
        ordered = self._ordered(module, state.sort_by, state.descending, state.modified_since_s)
        start = bisect.bisect_right(ordered, state.last_key)  # keyset: later mutations never shift the position
        stop = min(start + per_page, len(ordered), start + PAGE_TOKEN_LIMIT - state.served)
        if start >= len(ordered) or stop <= start:
            return Response(status_code=204)
        next_state = _PageToken(
            module,
            state.sort_by,
            state.descending,
            state.modified_since_s,
            ordered[stop - 1],
            state.served + stop - start,
            state.expires_at,
        )
        more = stop < len(ordered) and next_state.served < PAGE_TOKEN_LIMIT
        page_number = state.served // per_page + 1
        return json_response(
            self._page_body(module, ordered[start:stop], fields, per_page, page_number, more, next_state)
        )

    def _page_body(
        self,
        module: str,
        keys: list[tuple[int, int]],
        fields: tuple[str, ...],
        per_page: int,
        page: int,
        more_records: bool,
        state: _PageToken,
    ) -> dict[str, Any]:
        rows = self._modules[module].rows
        data = [self._render(module, rows[abs(row_key)], fields) for _, row_key in keys]
        info: dict[str, Any] = {
            "per_page": per_page,
            "next_page_token": None,
            "count": len(data),
            "sort_by": state.sort_by,
            "page": page,
            "previous_page_token": None,
            "page_token_expiry": None,
            "sort_order": "desc" if state.descending else "asc",
            "more_records": more_records,
        }
        if more_records:
            token = secrets.token_hex(48)
            if state.expires_at == 0.0:
                state.expires_at = self.clock() + self._page_token_ttl_s
            self._page_tokens[token] = state
            info["next_page_token"] = token
            info["page_token_expiry"] = self._iso(int(state.expires_at))
        return {"data": data, "info": info}

    async def _search_records(self, request: Request) -> Response:
        module = request.path_params["module"]
        params = request.query_params
        criteria = params.get("criteria")
        if not criteria:
            raise _missing_param("criteria")
        fields = self._requested_fields(module, params.get("fields"), required=False)
        per_page = self._per_page(request)
        page = _int_param(params.get("page"), "page", 1)
        if page < 1 or (page - 1) * per_page >= SEARCH_RESULT_LIMIT:
            raise ZohoApiError(
                400,
                "LIMIT_REACHED",
                f"search returns at most {SEARCH_RESULT_LIMIT} records: narrow the criteria",
                {"limit": SEARCH_RESULT_LIMIT},
            )
        with self._lock:
            predicate = _CriteriaParser(criteria, module, lambda row, name: self._row_value(module, row, name)).parse()
            rows = self._modules[module].rows
            matches = [row_id for row_id in sorted(rows) if rows[row_id].deleted_s is None and predicate(rows[row_id])]
            start = (page - 1) * per_page
            stop = min(start + per_page, len(matches), SEARCH_RESULT_LIMIT)
            if start >= len(matches):
                return Response(status_code=204)
            data = [self._render(module, rows[row_id], fields) for row_id in matches[start:stop]]
        more = stop < len(matches)
        info = {"per_page": per_page, "count": len(data), "page": page, "more_records": more}
        return json_response({"data": data, "info": info})

    async def _deleted_records(self, request: Request) -> Response:
        module = request.path_params["module"]
        params = request.query_params
        kind = params.get("type") or "all"
        if kind not in ("all", "recycle", "permanent"):
            raise _invalid_data("type must be all, recycle or permanent", param_name="type")
        per_page = self._per_page(request)
        page = _int_param(params.get("page"), "page", 1)
        if page < 1:
            raise _invalid_data("page must be a positive integer", param_name="page")
        since_s = self._if_modified_since(request)
        with self._lock:
            rows = self._modules[module].rows
            # Deleted records stay in the recycle bin in this sandbox: type=permanent is always empty.
            deleted = sorted(
                (row for row in rows.values() if row.deleted_s is not None and kind != "permanent"),
                key=lambda row: (row.deleted_s, row.id),
            )
            if since_s is not None:
                deleted = [row for row in deleted if (row.deleted_s or 0) >= since_s]
            start = (page - 1) * per_page
            if start >= len(deleted):
                return Response(status_code=304 if since_s is not None else 204)
            data = [self._render_deleted(module, row) for row in deleted[start : start + per_page]]
        info = {"per_page": per_page, "count": len(data), "page": page, "more_records": start + per_page < len(deleted)}
        return json_response({"data": data, "info": info})

    async def _users_endpoint(self, request: Request) -> Response:
        params = request.query_params
        kind = params.get("type") or "AllUsers"
        if kind not in USER_TYPES:
            raise _invalid_data("invalid user type", param_name="type")
        per_page = self._per_page(request)
        page = _int_param(params.get("page"), "page", 1)
        if page < 1:
            raise _invalid_data("page must be a positive integer", param_name="page")
        since_s = self._if_modified_since(request)
        with self._lock:
            users = sorted(self._users.values(), key=lambda user: user.id)
            admin_id = users[0].id
            wanted = {
                "AllUsers": lambda user: user.status != "deleted",
                "ActiveUsers": lambda user: user.status == "active",
                "DeactiveUsers": lambda user: user.status == "disabled",
                "DeletedUsers": lambda user: user.status == "deleted",
                "CurrentUser": lambda user: user.id == admin_id,
                "AdminUsers": lambda user: user.profile == "Administrator" and user.status != "deleted",
            }[kind]
            selected = [user for user in users if wanted(user) and (since_s is None or user.modified_s >= since_s)]
            start = (page - 1) * per_page
            if start >= len(selected):
                return Response(status_code=304 if since_s is not None else 204)
            data = [self._render_user(user) for user in selected[start : start + per_page]]
        info = {
            "per_page": per_page,
            "count": len(data),
            "page": page,
            "more_records": start + per_page < len(selected),
        }
        return json_response({"users": data, "info": info})

    async def _org(self, request: Request) -> Response:
        org = {
            "id": ORG_ID,
            "zgid": ZGID,
            "company_name": "Sandbox Org",
            "primary_email": self.user_records()[0]["email"],
            "time_zone": "Asia/Kolkata",
            "country_code": "IN",
            "currency": "US Dollar",
            "iso_code": "USD",
            "domain_name": f"org{ZGID}",
        }
        return json_response({"org": [org]})

    async def _fields(self, request: Request) -> Response:
        module = request.query_params.get("module")
        if not module:
            raise _missing_param("module")
        if module not in MODULE_FIELDS:
            raise _invalid_data("the module name given seems to be invalid", param_name="module")
        fields = []
        for index, (api_name, data_type, mandatory) in enumerate(MODULE_FIELDS[module]):
            description: dict[str, Any] = {
                "api_name": api_name,
                "field_label": api_name.replace("_", " "),
                "display_label": api_name.replace("_", " "),
                "data_type": data_type,
                "json_type": {"boolean": "boolean", "lookup": "jsonobject", "ownerlookup": "jsonobject"}.get(
                    data_type, "jsonarray" if api_name == "Participants" else "string"
                ),
                "id": str(_ID_BASE + 700_000_000 + RECORD_MODULES.index(module) * 100 + index)
                if module in RECORD_MODULES
                else str(_ID_BASE + 790_000_000 + index),
                "system_mandatory": mandatory,
                "custom_field": False,
                "read_only": api_name in SYSTEM_FIELDS,
                "visible": True,
                "length": 255,
            }
            if data_type == "lookup":
                description["lookup"] = {"module": {"api_name": "Accounts", "id": _module_id("Accounts")}}
            fields.append(description)
        with self._lock:
            custom = list(self._custom_fields[module].items())
        for index, (api_name, data_type) in enumerate(custom, start=len(fields)):
            label = api_name.replace("_", " ")
            fields.append(
                {
                    "api_name": api_name,
                    "field_label": label,
                    "display_label": label,
                    "data_type": data_type,
                    "json_type": {"boolean": "boolean", "integer": "integer", "double": "double"}.get(
                        data_type, "string"
                    ),
                    "id": str(_ID_BASE + 710_000_000 + index),
                    "system_mandatory": False,
                    "custom_field": True,
                    "read_only": False,
                    "visible": True,
                    "length": 255,
                }
            )
        return json_response({"fields": fields})

    async def _settings_modules(self, request: Request) -> Response:
        """`GET /settings/modules`: the SDK lists modules (keeping the api_supported ones) before it reads fields."""
        return json_response({"modules": [_module_description(name) for name in sorted(MODULES)]})

    # --- app --------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            if status_code == 404:
                return ZohoApiError(
                    404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
                ).response()
            if status_code == 405:
                return ZohoApiError(
                    405, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one"
                ).response()
            return ZohoApiError(status_code, "INTERNAL_ERROR", "Internal Server Error").response()

        def module_scoped(handler: Callable[[Request], Awaitable[Response]], *extra: str) -> Callable[..., Any]:
            """Resolve `{module}` (only Contacts and Events hold records here) and require its read scope."""
            return by_module(
                {
                    module: self._crm_endpoint(handler, f"ZohoCRM.modules.{module.lower()}.READ", *extra)
                    for module in RECORD_MODULES
                }
            )

        def by_module(endpoints: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
            """Dispatch on `{module}`: Zoho's INVALID_MODULE for a module that holds no records here."""

            async def endpoint(request: Request) -> Response:
                module = request.path_params["module"]
                if module not in endpoints:
                    return ZohoApiError(
                        400, "INVALID_MODULE", "the module name given seems to be invalid", {"module": module}
                    ).response()
                return await endpoints[module](request)

            return endpoint

        def module_written(method: str, operation: str) -> Route:
            """POST/PUT/DELETE /crm/v8/{module}: the module's CREATE, UPDATE or DELETE scope (WRITE or ALL)."""
            endpoints = {
                module: self._crm_endpoint(write_handler(self), f"ZohoCRM.modules.{module.lower()}.{operation}")
                for module in RECORD_MODULES
            }
            return Route("/crm/v8/{module}", by_module(endpoints), methods=[method])

        routes = [
            *push_routes(self.push, self._crm_endpoint),
            module_written("POST", "CREATE"),
            module_written("PUT", "UPDATE"),
            module_written("DELETE", "DELETE"),
            Route("/oauth/v2/auth", with_consent_page(self._authorize, "Zoho"), methods=["GET", "POST"]),
            Route("/oauth/v2/token", self._token, methods=["POST"]),
            Route("/oauth/v2/token/revoke", self._revoke, methods=["POST"]),
            Route("/crm/v8/users", self._crm_endpoint(self._users_endpoint, "ZohoCRM.users.READ"), methods=["GET"]),
            Route("/crm/v8/org", self._crm_endpoint(self._org, "ZohoCRM.org.READ"), methods=["GET"]),
            Route(
                "/crm/v8/settings/modules",
                self._crm_endpoint(self._settings_modules, "ZohoCRM.settings.modules.READ"),
                methods=["GET"],
            ),
            Route(
                "/crm/v8/settings/fields",
                self._crm_endpoint(self._fields, "ZohoCRM.settings.fields.READ"),
                methods=["GET"],
            ),
            Route("/crm/v8/{module}/search", module_scoped(self._search_records, SEARCH_SCOPE), methods=["GET"]),
            Route("/crm/v8/{module}/deleted", module_scoped(self._deleted_records), methods=["GET"]),
            Route("/crm/v8/{module}", module_scoped(self._list_records), methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error},
        )


def _module_id(api_name: str) -> str:
    return str(_ID_BASE + 800_000_001 + sorted(MODULES).index(api_name))


def _module_description(api_name: str) -> dict[str, Any]:
    """One module as `/settings/modules` describes it (the keys of Zoho's v8 answer; standard, API-supported)."""
    singular, sequence = MODULES[api_name]
    return {
        "has_more_profiles": False,
        "access_type": "org_based",
        "global_search_supported": True,
        "deletable": False,
        "description": None,
        "creatable": True,
        "recycle_bin_on_delete": True,
        "modified_time": None,
        "plural_label": api_name if api_name != "Events" else "Meetings",
        "presence_sub_menu": api_name == "Events",
        "triggers_supported": True,
        "id": _module_id(api_name),
        "visibility": 1,
        "convertable": False,
        "editable": True,
        "emailTemplate_support": api_name != "Events",
        "profiles": [{"name": "Administrator", "id": str(_ID_BASE + 900_000_001)}],
        "filter_supported": True,
        "show_as_tab": True,
        "web_link": None,
        "sequence_number": sequence,
        "singular_label": singular,
        "viewable": True,
        "api_supported": True,
        "api_name": api_name,
        "quick_create": True,
        "modified_by": None,
        "generated_type": "default",
        "feeds_required": False,
        "scoring_supported": api_name != "Events",
        "webform_supported": api_name == "Contacts",
        "arguments": [],
        "module_name": api_name,
        "business_card_field_limit": 5,
        "parent_module": {},
        "status": "visible",
        "isBlueprintSupported": api_name != "Events",
    }


def _scope_granted(required: str, granted: Iterable[str]) -> bool:
    """Zoho scopes are `Service.group[.sub].OPERATION`; `...ALL` covers every operation and `ZohoCRM.modules.ALL`
    (or `.READ`) covers every module."""
    service, _, rest = required.partition(".")
    parts = rest.split(".")
    group, operation = parts[0], parts[-1]
    sub = parts[1] if len(parts) == 3 else None
    for scope in granted:
        scope_service, _, scope_rest = scope.partition(".")
        scope_parts = scope_rest.split(".")
        if scope_service != service or scope_parts[0] != group:
            continue
        scope_operation = scope_parts[-1]
        scope_sub = scope_parts[1] if len(scope_parts) == 3 else None
        writes = scope_operation == "WRITE" and operation in ("CREATE", "UPDATE", "DELETE")
        if scope_operation not in ("ALL", operation) and not writes:
            continue
        if scope_sub is None or scope_sub.lower() == (sub or "").lower():
            return True
    return False
