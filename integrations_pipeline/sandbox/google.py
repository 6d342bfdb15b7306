"""A Google Workspace sandbox: OAuth (incremental authorization, revocation, tokeninfo), Admin SDK Directory users,
People API connections and Calendar events, all served from one origin over real HTTP.

The real APIs live on three hosts (admin.googleapis.com, people.googleapis.com, www.googleapis.com); here their
paths share one origin: `/admin/directory/v1/...`, `/v1/people/...`, `/calendar/v3/...`, with the OAuth server's
paths (`/o/oauth2/v2/auth`, `/token`, `/revoke`, `/tokeninfo`) beside them. Behaviour follows Google's public
reference closely enough that google-api-python-client (with its packaged discovery documents) and our connector
both run against it unchanged, including the rejections: page-size limits, `syncToken` combined with filters,
stale sync tokens (Calendar 410 `fullSyncRequired`, People 400 `EXPIRED_SYNC_TOKEN`) and `updatedMin` older than
what Calendar still remembers (410 `updatedMinTooLongAgo`).

Every mutation takes the next number of one change sequence: a sync token remembers the sequence it was issued
at, and a sync round returns rows changed after it, in change order (keyset paging, so rows changed while a
client pages are not skipped). Data is generated from a seed; 100,000 contacts build in well under a second.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import secrets
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import (
    AccessStatus,
    Clock,
    OAuthAuthorizationServer,
    OAuthError,
    OAuthErrorKind,
    RequestLogMiddleware,
    RequestRecord,
    SlidingWindowRateLimiter,
    events_first_day,
    json_response,
    read_form,
    sample_guests,
    synchronized,
    with_consent_page,
)
from integrations_pipeline.sandbox.google_push import GoogleApiRefusal, GooglePush
from integrations_pipeline.sandbox.google_push import routes as push_routes
from integrations_pipeline.sandbox.google_schemas import SCHEMA_SCOPES, GoogleSchemas

__all__ = ["GoogleEmulator", "RequestRecord"]

# --- Google facts ----------------------------------------------------------------------------------------------------

AUTHORIZE_PATH = "/o/oauth2/v2/auth"
TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"
TOKENINFO_PATH = "/tokeninfo"
USERS_PATH = "/admin/directory/v1/users"
CONNECTIONS_PATH = "/v1/people/{person}/connections"
EVENTS_PATH = "/calendar/v3/calendars/{calendar_id}/events"

DIRECTORY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.readonly"
# Any one of these grants read access to the API (the broader read-write scopes included).
SCHEMAS_PATH = "/admin/directory/v1/customer/{customer}/schemas"
API_SCOPES: dict[str, frozenset[str]] = {
    "schemas": SCHEMA_SCOPES,
    "directory": frozenset((DIRECTORY_SCOPE, "https://www.googleapis.com/auth/admin.directory.user")),
    "people": frozenset((CONTACTS_SCOPE, "https://www.googleapis.com/auth/contacts")),
    "calendar": frozenset(
        (
            CALENDAR_SCOPE,
            "https://www.googleapis.com/auth/calendar",
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/calendar.events.readonly",
        )
    ),
    # Writes (google_push.py's routes) need a read-write scope, as Google's reference lists for each method.
    "calendar_write": frozenset(
        ("https://www.googleapis.com/auth/calendar", "https://www.googleapis.com/auth/calendar.events")
    ),
    "directory_write": frozenset(("https://www.googleapis.com/auth/admin.directory.user",)),
}

EMAIL_SCOPES = frozenset(("email", "https://www.googleapis.com/auth/userinfo.email"))
IDENTITY_SCOPES = EMAIL_SCOPES | {"openid", "profile", "https://www.googleapis.com/auth/userinfo.profile"}
ACCESS_TOKEN_TTL_S = 3599  # what Google's token endpoint answers as expires_in
USERS_PAGE_DEFAULT, USERS_PAGE_MAX = 100, 500
PEOPLE_PAGE_DEFAULT, PEOPLE_PAGE_MAX = 100, 1000
EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX = 250, 2500  # Calendar caps silently; it only rejects values below 1
PEOPLE_SYNC_TOKEN_TTL_S = 7 * 86_400
RATE_WINDOW_S = 60
PERSON_FIELDS = frozenset(
    (
        "addresses", "ageRanges", "biographies", "birthdays", "calendarUrls", "clientData", "coverPhotos",
        "emailAddresses", "events", "externalIds", "genders", "imClients", "interests", "locales", "locations",
        "memberships", "metadata", "miscKeywords", "names", "nicknames", "occupations", "organizations",
        "phoneNumbers", "photos", "relations", "sipAddresses", "skills", "urls", "userDefined",
    )
)  # fmt: skip
PEOPLE_SORT_ORDERS = (
    "LAST_MODIFIED_ASCENDING",
    "LAST_MODIFIED_DESCENDING",
    "FIRST_NAME_ASCENDING",
    "LAST_NAME_ASCENDING",
)
# Calendar refuses these next to a syncToken: the token already fixes the result set.
SYNC_TOKEN_EXCLUSIVE = ("updatedMin", "timeMin", "timeMax", "orderBy", "iCalUID", "q")
# Parameters that change nothing in the result, so they may differ between pages of one listing.
PAGE_NEUTRAL_PARAMS = frozenset(("pageToken", "alt", "prettyPrint", "fields", "quotaUser", "$.xgafv"))

# --- deterministic data --------------------------------------------------------------------------------------------

SANDBOX_DOMAIN = "sandbox-workspace.example"
GOOGLE_RESPONSES = {"accepted": "accepted", "declined": "declined", "tentative": "tentative", "none": "needsAction"}
SANDBOX_USER_SUB = "110248495921238986420"
SANDBOX_CUSTOMER_ID = "C03az79cb"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CREATED_FROM_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
MODIFIED_UNTIL_MS = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp() * 1000)
EVENTS_FIRST_DAY = date(2026, 9, 1)

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Chen", "Dara", "Elena", "Emeka", "Farah", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Lars", "Leila", "Mateo", "Mira", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
)  # fmt: skip
LAST_NAMES = (
    "Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Silva", "Tanaka", "Varga", "Zhang",
)  # fmt: skip
COMPANIES = ("Acme Analytics", "Blue Harbor", "Cobalt Labs", "Delta Freight", "Evergreen Health", "Granite Works")
TITLES = ("Account Executive", "CTO", "Data Engineer", "Designer", "Founder", "Product Manager", "VP Finance")
DEPARTMENTS = ("Engineering", "Finance", "Marketing", "Operations", "Sales")
MEETINGS = ("1:1", "Standup", "Pipeline review", "Customer call", "Design critique", "Quarterly planning", "Demo")
ROOMS = ("Room Ada", "Room Turing", "Video call", None)
# Zones without daylight saving, so a local time maps to UTC by a fixed offset and no tz database is needed.
TIME_ZONES: dict[str, timedelta] = {
    "UTC": timedelta(0),
    "Asia/Tokyo": timedelta(hours=9),
    "Asia/Kolkata": timedelta(hours=5, minutes=30),
    "America/Phoenix": timedelta(hours=-7),
    "Africa/Lagos": timedelta(hours=1),
}


def _rfc3339_ms(epoch_ms: int) -> str:
    """Google's timestamp format for `updated`, `creationTime`...: UTC with milliseconds and a `Z`."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@dataclass(slots=True)
class _User:
    id: str
    given_name: str
    family_name: str
    email: str
    title: str
    department: str
    suspended: bool
    is_admin: bool
    created_ms: int
    last_login_ms: int
    deleted_ms: int | None = None


@dataclass(slots=True)
class _Contact:
    number: int
    given_name: str
    family_name: str
    email: str
    phone: str
    company: str
    title: str
    updated_ms: int
    seq: int = 0
    deleted_ms: int | None = None

    @property
    def resource_name(self) -> str:
        return f"people/c{self.number}"


@dataclass(slots=True)
class _Event:
    id: str
    summary: str
    location: str | None
    organizer: str
    all_day: bool
    start_ms: int  # all-day events: midnight UTC of their date (the sandbox calendar's time zone is UTC)
    end_ms: int
    time_zone: str
    created_ms: int
    updated_ms: int
    seq: int = 0
    cancelled: bool = False


@dataclass
class _SyncToken:
    api: str  # "people" | "calendar"
    seq: int
    issued_at: float
    stale: bool = False


# --- errors --------------------------------------------------------------------------------------------------------


class GoogleApiError(Exception):
    """Rendered as Google's JSON error: `{"error": {"code", "message", "errors": [{"reason", ...}], "status"}}`."""

    def __init__(
        self,
        code: int,
        status: str,
        message: str,
        reason: str,
        *,
        domain: str = "global",
        location: str | None = None,
        error_info_reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.reason = code, status, message, reason
        self.domain, self.location, self.error_info_reason = domain, location, error_info_reason
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        item: dict[str, Any] = {"message": self.message, "domain": self.domain, "reason": self.reason}
        if self.location is not None:
            item |= {"location": self.location, "locationType": "parameter"}
        error: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [item], "status": self.status}
        if self.error_info_reason is not None:  # newer APIs (People) carry the machine reason in an ErrorInfo
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.error_info_reason,
                    "domain": "googleapis.com",
                }
            ]
        return json_response({"error": error}, self.code, self.headers)


def _invalid_parameter(name: str, message: str) -> GoogleApiError:
    return GoogleApiError(400, "INVALID_ARGUMENT", message, "invalidParameter", location=name)


def _bad_request(message: str, reason: str = "badRequest") -> GoogleApiError:
    return GoogleApiError(400, "INVALID_ARGUMENT", message, reason)


def _int_param(params: QueryParams, name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid_parameter(name, f"Invalid value '{raw}'. Values must be integers.") from None
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f"[{low}, ∞)"
        raise _invalid_parameter(name, f"Invalid value '{raw}'. Values must be within the range: {bounds}")
    return value


def _bool_param(params: QueryParams, name: str) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() not in ("true", "false"):
        raise _invalid_parameter(name, f"Invalid boolean value: '{raw}'.")
    return raw.lower() == "true"


def _enum_param(params: QueryParams, name: str, allowed: Iterable[str], default: str | None = None) -> str | None:
    raw = params.get(name) or default
    if raw is not None and raw not in allowed:
        raise _invalid_parameter(name, f"Invalid value for {name}: {raw}")
    return raw


def _instant_param(params: QueryParams, name: str) -> int | None:
    """An RFC 3339 timestamp with a mandatory offset, as epoch milliseconds."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad_request(f"Bad Request: {name} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise _bad_request(f"Bad Request: {name} needs a time zone offset")
    return _to_ms(moment)


def _fingerprint(params: QueryParams, path: str) -> int:
    """Identifies a listing's parameters, so a page token only continues the listing that issued it."""
    kept = sorted((name, value) for name, value in params.multi_items() if name not in PAGE_NEUTRAL_PARAMS)
    return zlib.crc32(json.dumps([path, kept]).encode())


def _page_token(position: Any, fingerprint: int) -> str:
    raw = json.dumps({"p": position, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_page_token(params: QueryParams, path: str) -> Any:
    raw = params.get("pageToken")
    if not raw:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        position, fingerprint = decoded["p"], decoded["f"]
    except (ValueError, KeyError, TypeError):
        raise _invalid_parameter("pageToken", "Invalid page token value.") from None
    if fingerprint != _fingerprint(params, path):
        raise _invalid_parameter("pageToken", "Page token does not match the other parameters of the listing.")
    return position


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- the emulator --------------------------------------------------------------------------------------------------


class GoogleEmulator:
    """One Workspace customer with one signed-in user (who owns the contacts and the primary calendar) and one
    OAuth client; serve `app` with any ASGI server. Public methods are thread-safe; `clock` moves token expiry,
    sync-token age and rate-limit windows without sleeping, while generated data never depends on it."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        users: int = 40,
        contacts: int = 2_000,
        events: int = 600,
        event_days: int = 90,
        events_around: date | None = None,
        seed: int = 7,
        access_token_ttl_s: int = ACCESS_TOKEN_TTL_S,
        requests_per_minute: int | None = None,
        push_time_scale: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self.client_id = client_id
        self.clock = clock
        # Push channels (google_push.py); `push_time_scale` compresses Google's retry backoff for tests.
        self.push = GooglePush(lock=self._lock, clock=clock, time_scale=push_time_scale)
        self.request_log: list[RequestRecord] = []
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret},
            access_token_ttl_s=access_token_ttl_s,
            clock=clock,
            access_token_prefix="ya29.",
            refresh_token_prefix="1//",
        )
        self._rate = SlidingWindowRateLimiter(requests_per_minute, RATE_WINDOW_S, clock)
        # Incremental authorization: what the sandbox user has granted each client so far.
        self._granted: dict[str, tuple[str, ...]] = {}
        self._code_wants_refresh: dict[str, bool] = {}
        self._refresh_of_access: dict[str, str | None] = {}
        self._sync_tokens: dict[str, _SyncToken] = {}
        self._updated_min_horizon_ms = 0  # Calendar forgets deletions before this: older updatedMin is a 410

        rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
        self.owner_email = f"owner@{SANDBOX_DOMAIN}"
        self._users: dict[str, _User] = {user.id: user for user in self._generate_users(users, rng)}
        self._contacts: dict[int, _Contact] = {row.number: row for row in self._generate_contacts(contacts, rng)}
        generated_events = self._generate_events(events, event_days, events_around, rng)
        self._events: dict[str, _Event] = {row.id: row for row in generated_events}
        self._next_contact = max(self._contacts, default=1_000) + 1
        self._next_event = len(self._events) + 1
        self._seq = 0
        self._changes: list[tuple[int, str, str]] = []  # (seq, "people" | "calendar", row key), seq ascending
        self._version = 0
        self._sorted_cache: dict[tuple[Any, ...], list[Any]] = {}
        # Directory custom schemas (google_schemas.py): tests add and remove custom fields through it.
        self.schemas = GoogleSchemas(self._lock, frozenset(("my_customer", SANDBOX_CUSTOMER_ID)))
        self.app = self._build_app()

    # --- data generation -------------------------------------------------------------------------------------------

    def _generate_users(self, count: int, rng: random.Random) -> list[_User]:
        users = []
        for number in range(1, count + 1):
            given, family = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            created_ms = CREATED_FROM_MS + rng.randrange(MODIFIED_UNTIL_MS - CREATED_FROM_MS)
            users.append(
                _User(
                    id=f"1{(number * 7_919_113_471 + 104_729) % 10**20:020d}",
                    given_name=given,
                    family_name=family,
                    email=f"{given}.{family}.{number}@{SANDBOX_DOMAIN}".lower(),
                    title=rng.choice(TITLES),
                    department=rng.choice(DEPARTMENTS),
                    suspended=number % 17 == 0,
                    is_admin=number == 1,
                    created_ms=created_ms,
                    last_login_ms=created_ms + rng.randrange(max(MODIFIED_UNTIL_MS - created_ms, 1)),
                )
            )
        return users

    @staticmethod
    def _generate_contacts(count: int, rng: random.Random) -> list[_Contact]:
        """A few bulk draws and one comprehension: 100,000 contacts build in a fraction of a second."""
        given = rng.choices(FIRST_NAMES, k=count)
        family = rng.choices(LAST_NAMES, k=count)
        companies = rng.choices(COMPANIES, k=count)
        titles = rng.choices(TITLES, k=count)
        span = MODIFIED_UNTIL_MS - CREATED_FROM_MS
        draw = rng.random
        base = 3_000_000_000_000_000_000
        lowercase = {name: name.lower() for name in (*FIRST_NAMES, *LAST_NAMES)}
        domains = {company: company.split()[0].lower() + ".example" for company in COMPANIES}
        return [
            _Contact(
                number=base + index * 7_919,
                given_name=first,
                family_name=last,
                email=f"{lowercase[first]}.{lowercase[last]}.{index}@{domains[company]}",
                phone=f"+1 555 {index // 10_000 % 1_000:03d} {index % 10_000:04d}",
                company=company,
                title=title,
                updated_ms=CREATED_FROM_MS + int(draw() * span),
            )
            for index, first, last, company, title in zip(
                range(1, count + 1), given, family, companies, titles, strict=True
            )
        ]

    def _generate_events(self, count: int, days: int, around: date | None, rng: random.Random) -> list[_Event]:
        first_day = events_first_day(EVENTS_FIRST_DAY, days, around)
        first_day_ms = _to_ms(datetime.combine(first_day, datetime.min.time(), UTC))
        events = []
        for number in range(1, count + 1):
            day_ms = first_day_ms + rng.randrange(max(days, 1)) * 86_400_000
            all_day = number % 9 == 0
            if all_day:
                start_ms, end_ms, zone = day_ms, day_ms + 86_400_000 * rng.choice((1, 1, 2)), "UTC"
            else:
                # Any quarter hour of the UTC day, so events whose local date differs from the UTC date exist.
                start_ms = day_ms + rng.randrange(96) * 900_000
                end_ms, zone = start_ms + rng.choice((15, 30, 45, 60, 90)) * 60_000, rng.choice(tuple(TIME_ZONES))
            created_ms = CREATED_FROM_MS + rng.randrange(MODIFIED_UNTIL_MS - CREATED_FROM_MS)
            events.append(
                _Event(
                    id=f"ev{number:08d}",
                    summary=rng.choice(MEETINGS),
                    location=rng.choice(ROOMS),
                    organizer=self.owner_email if number % 3 else f"colleague{number % 11}@{SANDBOX_DOMAIN}",
                    all_day=all_day,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    time_zone=zone,
                    created_ms=created_ms,
                    updated_ms=created_ms + rng.randrange(max(MODIFIED_UNTIL_MS - created_ms, 1)),
                )
            )
        return events

    # --- rendering (Google's raw shapes) ---------------------------------------------------------------------------

    def _render_user(self, user: _User, projection: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "admin#directory#user",
            "id": user.id,
            "etag": f'"{zlib.crc32(repr(user).encode()):08x}"',
            "primaryEmail": user.email,
            "name": {
                "givenName": user.given_name,
                "familyName": user.family_name,
                "fullName": f"{user.given_name} {user.family_name}",
            },
            "isAdmin": user.is_admin,
            "isDelegatedAdmin": False,
            "lastLoginTime": _rfc3339_ms(user.last_login_ms),
            "creationTime": _rfc3339_ms(user.created_ms),
            "agreedToTerms": True,
            "suspended": user.suspended,
            "archived": False,
            "changePasswordAtNextLogin": False,
            "ipWhitelisted": False,
            "emails": [{"address": user.email, "primary": True}],
            "organizations": [{"title": user.title, "primary": True, "customType": "", "department": user.department}],
            "customerId": SANDBOX_CUSTOMER_ID,
            "orgUnitPath": "/",
            "isMailboxSetup": True,
            "isEnrolledIn2Sv": False,
            "isEnforcedIn2Sv": False,
            "includeInGlobalAddressList": True,
        }
        if user.deleted_ms is not None:
            record["deletionTime"] = _rfc3339_ms(user.deleted_ms)
        if projection == "full":
            record["customSchemas"] = self.schemas.sample_values(user.id)
        return record

    @staticmethod
    def _render_person(row: _Contact, fields: frozenset[str]) -> dict[str, Any]:
        source_id = format(row.number, "x")
        etag = base64.b64encode(f"{row.number}:{row.updated_ms}".encode()).decode()
        source = {"type": "CONTACT", "id": source_id}
        field_metadata = {"primary": True, "source": source}
        metadata: dict[str, Any] = {
            "sources": [{**source, "etag": f"#{etag}", "updateTime": _rfc3339_ms(row.updated_ms)}],
            "objectType": "PERSON",
        }
        person: dict[str, Any] = {"resourceName": row.resource_name, "etag": f"%{etag}"}
        if row.deleted_ms is not None:  # a deletion in a sync round carries nothing but its metadata
            return person | {"metadata": metadata | {"deleted": True}}
        if "metadata" in fields:
            person["metadata"] = metadata
        if "names" in fields:
            person["names"] = [
                {
                    "metadata": field_metadata,
                    "displayName": f"{row.given_name} {row.family_name}",
                    "familyName": row.family_name,
                    "givenName": row.given_name,
                    "displayNameLastFirst": f"{row.family_name}, {row.given_name}",
                    "unstructuredName": f"{row.given_name} {row.family_name}",
                }
            ]
        if "emailAddresses" in fields and row.email:
            person["emailAddresses"] = [{"metadata": field_metadata, "value": row.email}]
        if "phoneNumbers" in fields and row.phone:
            canonical = "+" + "".join(character for character in row.phone if character.isdigit())
            person["phoneNumbers"] = [
                {
                    "metadata": field_metadata,
                    "value": row.phone,
                    "canonicalForm": canonical,
                    "type": "work",
                    "formattedType": "Work",
                }
            ]
        if "organizations" in fields and (row.company or row.title):
            organization = {"metadata": field_metadata, "name": row.company or None, "title": row.title or None}
            person["organizations"] = [{key: value for key, value in organization.items() if value is not None}]
        return person

    def _render_event(self, row: _Event) -> dict[str, Any]:
        def moment(epoch_ms: int) -> dict[str, str]:
            if row.all_day:
                return {"date": time.strftime("%Y-%m-%d", time.gmtime(epoch_ms // 1000))}
            offset = TIME_ZONES[row.time_zone]
            local = datetime.fromtimestamp(epoch_ms / 1000, UTC) + offset
            sign, magnitude = ("+" if offset >= timedelta(0) else "-"), abs(offset)
            hours, minutes = divmod(int(magnitude.total_seconds()) // 60, 60)
            suffix = "Z" if not offset else f"{sign}{hours:02d}:{minutes:02d}"
            stamp = local.strftime("%Y-%m-%dT%H:%M:%S") + suffix
            return {"dateTime": stamp, "timeZone": row.time_zone}

        event: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": f'"{row.updated_ms}000"',
            "id": row.id,
            "status": "cancelled" if row.cancelled else "confirmed",
            "htmlLink": f"https://www.google.com/calendar/event?eid={row.id}",
            "created": _rfc3339_ms(row.created_ms),
            "updated": _rfc3339_ms(row.updated_ms),
            "summary": row.summary,
            "creator": {"email": row.organizer},
            "organizer": {"email": row.organizer, **({"self": True} if row.organizer == self.owner_email else {})},
            "start": moment(row.start_ms),
            "end": moment(row.end_ms),
            "iCalUID": f"{row.id}@google.com",
            "sequence": 0,
            "eventType": "default",
        }
        if row.location is not None:
            event["location"] = row.location
        guests = sample_guests(row.id, SANDBOX_DOMAIN)
        if guests:  # Calendar lists the organizer among the attendees of an event with guests
            event["attendees"] = [
                {"email": row.organizer, "organizer": True, "responseStatus": "accepted"},
                *(
                    {
                        "email": guest.email,
                        "displayName": f"{guest.first_name} {guest.last_name}",
                        "responseStatus": GOOGLE_RESPONSES[guest.response],
                    }
                    for guest in guests
                ),
            ]
        return event

    # --- inspection (the emulator's truth, in Google's raw shapes) -------------------------------------------------

    @synchronized
    def user_records(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every live user (and deleted ones on request) as the Directory API renders them, ordered by email."""
        rows = [user for user in self._users.values() if include_deleted or user.deleted_ms is None]
        return [self._render_user(user, "full") for user in sorted(rows, key=lambda user: user.email)]

    @synchronized
    def contact_records(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every contact with every field, ordered by resource number; deleted ones render as in a sync round."""
        rows = sorted(self._contacts.values(), key=lambda row: row.number)
        return [self._render_person(row, PERSON_FIELDS) for row in rows if include_deleted or row.deleted_ms is None]

    @synchronized
    def event_records(self, *, include_cancelled: bool = True) -> list[dict[str, Any]]:
        """Every event on the primary calendar as Calendar renders it, ordered by id."""
        rows = sorted(self._events.values(), key=lambda row: row.id)
        return [self._render_event(row) for row in rows if include_cancelled or not row.cancelled]

    @synchronized
    def token_requests(self, grant_type: str | None = None) -> int:
        """How many POST /token calls arrived (failed ones included), optionally of one grant_type."""
        return self._oauth.count_token_requests(grant_type)

    @synchronized
    def issued_tokens(self) -> frozenset[str]:
        """Every authorization code, access token, refresh token and sync token ever issued."""
        return frozenset(self._oauth.issued | set(self._sync_tokens))

    @synchronized
    def granted_scopes(self) -> tuple[str, ...]:
        """What the sandbox user has granted the client so far (empty after a revocation)."""
        return self._granted.get(self.client_id, ())

    # --- mutations (stamped with the clock's now, each taking the next change number) ------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _record_change(self, api: str, key: str) -> int:
        self._seq += 1
        self._changes.append((self._seq, api, key))
        self._version += 1
        self._sorted_cache.clear()
        return self._seq

    @synchronized
    def create_contact(
        self,
        *,
        given_name: str,
        family_name: str,
        email: str = "",
        phone: str = "",
        company: str = "",
        title: str = "",
    ) -> str:
        """Returns the new contact's resourceName (`people/c...`)."""
        row = _Contact(self._next_contact, given_name, family_name, email, phone, company, title, self._now_ms())
        self._next_contact += 1
        self._contacts[row.number] = row
        row.seq = self._record_change("people", str(row.number))
        return row.resource_name

    @synchronized
    def update_contact(self, resource_name: str, **fields: str) -> None:
        """Change any of given_name, family_name, email, phone, company, title; KeyError if unknown or deleted."""
        row = self._live_contact(resource_name)
        for name, value in fields.items():
            if name not in ("given_name", "family_name", "email", "phone", "company", "title"):
                raise ValueError(f"unknown contact field {name!r}")
            setattr(row, name, value)
        row.updated_ms = self._now_ms()
        row.seq = self._record_change("people", str(row.number))

    @synchronized
    def delete_contact(self, resource_name: str) -> None:
        row = self._live_contact(resource_name)
        row.deleted_ms = row.updated_ms = self._now_ms()
        row.seq = self._record_change("people", str(row.number))

    def _live_contact(self, resource_name: str) -> _Contact:
        number = resource_name.removeprefix("people/c")
        row = self._contacts.get(int(number)) if number.isdigit() else None
        if row is None or row.deleted_ms is not None:
            raise KeyError(resource_name)
        return row

    @synchronized
    def create_event(
        self,
        *,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        location: str | None = None,
        time_zone: str = "UTC",
    ) -> str:
        """A timed event (aware datetimes) or an all-day event (dates, end exclusive); returns its id."""
        all_day = not isinstance(start, datetime)
        if time_zone not in TIME_ZONES:
            raise ValueError(f"the sandbox knows only the time zones {sorted(TIME_ZONES)}")
        now_ms = self._now_ms()
        row = _Event(
            id=f"ev{self._next_event:08d}",
            summary=summary,
            location=location,
            organizer=self.owner_email,
            all_day=all_day,
            start_ms=self._event_ms(start),
            end_ms=self._event_ms(end),
            time_zone="UTC" if all_day else time_zone,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        self._next_event += 1
        self._events[row.id] = row
        row.seq = self._record_change("calendar", row.id)
        self.push.calendar_changed()
        return row.id

    @synchronized
    def update_event(
        self,
        event_id: str,
        *,
        summary: str | None = None,
        location: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        row = self._events.get(event_id)
        if row is None or row.cancelled:
            raise KeyError(event_id)
        if summary is not None:
            row.summary = summary
        if location is not None:
            row.location = location
        if start is not None:
            row.start_ms = self._event_ms(start)
        if end is not None:
            row.end_ms = self._event_ms(end)
        row.updated_ms = self._now_ms()
        row.seq = self._record_change("calendar", row.id)
        self.push.calendar_changed()

    @synchronized
    def delete_event(self, event_id: str) -> None:
        """Calendar keeps a deleted event as `status: cancelled` for incremental and showDeleted readers."""
        row = self._events.get(event_id)
        if row is None or row.cancelled:
            raise KeyError(event_id)
        row.cancelled = True
        row.updated_ms = self._now_ms()
        row.seq = self._record_change("calendar", row.id)
        self.push.calendar_changed()

    @staticmethod
    def _event_ms(moment: datetime | date) -> int:
        if isinstance(moment, datetime):
            if moment.tzinfo is None:
                raise ValueError("event times must be timezone-aware")
            return _to_ms(moment)
        return _to_ms(datetime.combine(moment, datetime.min.time(), UTC))

    @synchronized
    def update_user(self, user_id: str, *, title: str | None = None, suspended: bool | None = None) -> None:
        user = self._users[user_id]
        if title is not None:
            user.title = title
        if suspended is not None:
            user.suspended = suspended
        self._version += 1
        self._sorted_cache.clear()
        self.push.user_changed("update", self._render_user(user, "basic"))

    @synchronized
    def delete_user(self, user_id: str) -> None:
        """The user leaves the live listing; `showDeleted=true` lists it (Google keeps deleted users 20 days)."""
        user = self._users[user_id]
        if user.deleted_ms is not None:
            raise KeyError(user_id)
        user.deleted_ms = self._now_ms()
        self._version += 1
        self._sorted_cache.clear()
        self.push.user_changed("delete", self._render_user(user, "basic"))

    # --- helpers for google_push.py's routes -------------------------------------------------------------------------

    @staticmethod
    def refusal_response(refusal: GoogleApiRefusal) -> JSONResponse:
        status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(refusal.code, "UNKNOWN")
        return GoogleApiError(refusal.code, status, refusal.message, refusal.reason).response()

    @staticmethod
    def json(body: dict[str, Any]) -> JSONResponse:
        return json_response(body)

    @synchronized
    def event_record(self, event_id: str) -> dict[str, Any]:
        return self._render_event(self._events[event_id])

    @synchronized
    def user_record(self, user_id: str) -> dict[str, Any]:
        return self._render_user(self._users[user_id], "full")

    @synchronized
    def user_id_for(self, user_key: str) -> str:
        """A Directory userKey (the id or the primary email) as the live user's id; KeyError when none."""
        for user in self._users.values():
            if user.deleted_ms is None and user_key in (user.id, user.email):
                return user.id
        raise KeyError(user_key)

    # --- fault knobs -----------------------------------------------------------------------------------------------

    @synchronized
    def set_rate_limit(self, requests_per_minute: int | None, *, window_s: float | None = None) -> None:
        """Change the per-user limit (None: off) and its rolling window, even while serving."""
        self._rate.set_limit(requests_per_minute, window_s)

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        self._oauth.revoke_all_refresh_tokens()

    @synchronized
    def expire_sync_tokens(self) -> None:
        """Every sync token issued so far goes stale, and Calendar forgets changes before now: an `updatedMin`
        earlier than this moment answers 410 `updatedMinTooLongAgo`, as after Google prunes deleted events."""
        for token in self._sync_tokens.values():
            token.stale = True
        self._updated_min_horizon_ms = self._now_ms()

    # --- HTTP: OAuth -----------------------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            known_client = self._oauth.is_known_client(client_id)
            previously_granted = self._granted.get(client_id, ())
        if not known_client:
            return PlainTextResponse("Error 401: invalid_client. The OAuth client was not found.", status_code=401)
        if not redirect_uri:
            return PlainTextResponse("Error 400: invalid_request. Missing required parameter: redirect_uri", 400)
        state = {"state": params["state"]} if "state" in params else {}
        if params.get("response_type") != "code":
            return RedirectResponse(_with_query(redirect_uri, {"error": "unsupported_response_type", **state}), 302)
        requested = tuple(dict.fromkeys(params.get("scope", "").split()))
        if not requested:
            return PlainTextResponse("Error 400: invalid_request. Missing required parameter: scope", 400)
        code_challenge = params.get("code_challenge") or None
        if code_challenge is not None and params.get("code_challenge_method") != "S256":
            return PlainTextResponse("Error 400: invalid_request. The sandbox accepts only S256 challenges.", 400)
        # Auto-consent. include_granted_scopes=true folds in everything granted before (incremental authorization).
        incremental = params.get("include_granted_scopes") == "true"
        scopes = tuple(dict.fromkeys((*previously_granted, *requested))) if incremental else requested
        offline = params.get("access_type") == "offline"
        with self._lock:
            code = self._oauth.issue_code(
                client_id=client_id, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
            )
            # Google sends a refresh token only for offline access, and again only when consent is prompted.
            self._code_wants_refresh[code] = offline and (params.get("prompt") == "consent" or not previously_granted)
        return RedirectResponse(_with_query(redirect_uri, {"code": code, **state}), status_code=302)

    @staticmethod
    def _token_error(error: str, description: str, status_code: int = 400) -> JSONResponse:
        return json_response({"error": error, "error_description": description}, status_code)

    def _oauth_error_response(self, error: OAuthError) -> JSONResponse:
        if error.kind in (OAuthErrorKind.INVALID_CLIENT, OAuthErrorKind.INVALID_CLIENT_SECRET):
            return self._token_error("invalid_client", "Unauthorized", 401)
        if error.kind is OAuthErrorKind.REDIRECT_URI_MISMATCH:
            return self._token_error("redirect_uri_mismatch", "Bad Request")
        if error.kind is OAuthErrorKind.INVALID_REFRESH_TOKEN:
            return self._token_error("invalid_grant", "Token has been expired or revoked.")
        if error.kind is OAuthErrorKind.CODE_VERIFIER_MISMATCH:
            return self._token_error("invalid_grant", "Invalid code verifier.")
        if error.kind is OAuthErrorKind.INVALID_CODE:
            return self._token_error("invalid_grant", "Bad Request")
        return self._token_error(error.kind.rfc6749_error, error.description)

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":  # Google accepts client credentials in a Basic header as well as the body
            try:
                basic_id, _, basic_secret = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                basic_id = basic_secret = ""
            form.setdefault("client_id", basic_id)
            form.setdefault("client_secret", basic_secret)
        grant_type = form.get("grant_type", "")
        required = {
            "authorization_code": ("code", "client_id", "client_secret", "redirect_uri"),
            "refresh_token": ("refresh_token", "client_id", "client_secret"),
        }
        with self._lock:
            self._oauth.record_token_request(grant_type)
        if not grant_type:
            return self._token_error("invalid_request", "Missing required parameter: grant_type")
        if grant_type not in required:
            return self._token_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        missing = [name for name in required[grant_type] if not form.get(name)]
        if missing:
            return self._token_error("invalid_request", f"Missing required parameter: {missing[0]}")
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
                    refresh_token: str | None = grant.refresh_token
                    if not self._code_wants_refresh.pop(form["code"], False):
                        self._oauth.revoke_refresh_token(grant.refresh_token)
                        refresh_token = None
                    self._granted[form["client_id"]] = grant.scopes
                    self._refresh_of_access[grant.access_token] = refresh_token
                else:
                    grant = self._oauth.refresh(
                        client_id=form["client_id"],
                        client_secret=form["client_secret"],
                        refresh_token=form["refresh_token"],
                    )
                    self._refresh_of_access[grant.access_token] = grant.refresh_token
                    refresh_token = None  # Google never rotates: the refresh response carries no refresh_token
        except OAuthError as error:
            return self._oauth_error_response(error)
        body: dict[str, Any] = {
            "access_token": grant.access_token,
            "expires_in": grant.expires_in,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return json_response(body, headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})

    async def _revoke(self, request: Request) -> Response:
        """Revoking either token of a grant revokes the whole grant, as Google does."""
        form = await read_form(request)
        token = form.get("token") or request.query_params.get("token", "")
        with self._lock:
            if token in self._oauth.refresh_tokens:
                refresh_token: str | None = token
                client_id = self._oauth.refresh_tokens[token].client_id
            elif token in self._oauth.access_tokens and self._oauth.authenticate(token)[0] is AccessStatus.VALID:
                refresh_token = self._refresh_of_access.get(token)
                client_id = self._oauth.access_tokens[token].client_id
            else:
                return self._token_error("invalid_token", "Token expired or revoked")
            if refresh_token is not None:
                self._oauth.revoke_refresh_token(refresh_token)
            doomed = {token} | {
                access
                for access, parent in self._refresh_of_access.items()
                if refresh_token and parent == refresh_token
            }
            for access in doomed:
                self._oauth.access_tokens.pop(access, None)
            self._granted.pop(client_id, None)
        return json_response({})

    async def _tokeninfo(self, request: Request) -> Response:
        """Answers GET ?access_token=, a form body, or (as Google's own client libraries send it) a Bearer header."""
        form = await read_form(request) if request.method == "POST" else {}
        scheme, _, header_token = request.headers.get("authorization", "").partition(" ")
        token = (
            form.get("access_token")
            or request.query_params.get("access_token")
            or (header_token.strip() if scheme.lower() == "bearer" else "")
        )
        with self._lock:
            status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
            if status is not AccessStatus.VALID or access is None:
                return self._token_error("invalid_token", "Invalid Value")
            seconds_left = self._oauth.seconds_left(access)
            offline = self._refresh_of_access.get(token) is not None
        info: dict[str, Any] = {
            "azp": access.client_id,
            "aud": access.client_id,
            "scope": " ".join(access.scopes),
            "exp": str(int(self.clock()) + seconds_left),
            "expires_in": str(seconds_left),
            "access_type": "offline" if offline else "online",
        }
        # Like Google, the user's identity only shows when the grant includes an identity scope.
        if IDENTITY_SCOPES & set(access.scopes):
            info["sub"] = SANDBOX_USER_SUB
        if EMAIL_SCOPES & set(access.scopes):
            info |= {"email": self.owner_email, "email_verified": "true"}
        return json_response(info)

    # --- HTTP: APIs ------------------------------------------------------------------------------------------------

    def _api_endpoint(
        self, api: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check the API's scopes, count against the per-minute quota, then run `handler`."""

        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            with self._lock:
                status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
                allowed_scope = access is not None and bool(API_SCOPES[api] & set(access.scopes))
                quota_ok = self._rate.hit().allowed if status is AccessStatus.VALID and allowed_scope else True
            try:
                if status is not AccessStatus.VALID:
                    raise GoogleApiError(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                        "or other valid authentication credential.",
                        "authError",
                        location="Authorization",
                        headers={
                            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                        },
                    )
                if not allowed_scope:
                    raise GoogleApiError(
                        403,
                        "PERMISSION_DENIED",
                        "Request had insufficient authentication scopes.",
                        "insufficientPermissions",
                        error_info_reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    )
                if not quota_ok:
                    if api == "people":  # the newer API family signals quota with a 429
                        raise GoogleApiError(
                            429,
                            "RESOURCE_EXHAUSTED",
                            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per "
                            "user'.",
                            "rateLimitExceeded",
                            domain="usageLimits",
                            error_info_reason="RATE_LIMIT_EXCEEDED",
                        )
                    raise GoogleApiError(
                        403,
                        "PERMISSION_DENIED",
                        "User Rate Limit Exceeded",
                        "userRateLimitExceeded",
                        domain="usageLimits",
                    )
                alt = request.query_params.get("alt", "json")
                if alt != "json":
                    raise _invalid_parameter("alt", f"Invalid value for alt: {alt}")
                return await handler(request)
            except GoogleApiError as error:
                return error.response()

        return endpoint

    @synchronized
    def _sorted(self, key: tuple[Any, ...], rows: Callable[[], list[Any]]) -> list[Any]:
        """A listing's ordered rows, cached until the next mutation (sorting 100,000 rows per page would not do)."""
        cached = self._sorted_cache.get(key)
        if cached is None:
            cached = self._sorted_cache[key] = rows()
        return cached

    async def _list_users(self, request: Request) -> Response:
        params = request.query_params
        customer, domain = params.get("customer"), params.get("domain")
        if not customer and not domain:
            raise _bad_request("Bad Request")
        if customer and customer not in ("my_customer", SANDBOX_CUSTOMER_ID):
            raise GoogleApiError(404, "NOT_FOUND", "Resource Not Found: customer", "notFound")
        if domain and domain != SANDBOX_DOMAIN:
            raise GoogleApiError(403, "PERMISSION_DENIED", "Not Authorized to access this resource/api", "forbidden")
        limit = _int_param(params, "maxResults", USERS_PAGE_DEFAULT, 1, USERS_PAGE_MAX)
        order_by = _enum_param(params, "orderBy", ("email", "familyName", "givenName"))
        descending = _enum_param(params, "sortOrder", ("ASCENDING", "DESCENDING"), "ASCENDING") == "DESCENDING"
        projection = _enum_param(params, "projection", ("basic", "custom", "full"), "basic") or "basic"
        _enum_param(params, "viewType", ("admin_view", "domain_public"))
        if projection == "custom" and not params.get("customFieldMask"):
            raise _bad_request("Bad Request: customFieldMask is required for projection=custom", "invalid")
        show_deleted = _bool_param(params, "showDeleted")
        offset = _read_page_token(params, USERS_PATH) or 0

        def order(user: _User) -> tuple[str, ...]:
            if order_by == "familyName":
                return (user.family_name.lower(), user.email)
            if order_by == "givenName":
                return (user.given_name.lower(), user.email)
            return (user.email,)

        with self._lock:
            ordered = self._sorted(
                ("users", order_by, descending, show_deleted),
                lambda: sorted(
                    (user for user in self._users.values() if (user.deleted_ms is not None) == show_deleted),
                    key=order,
                    reverse=descending,
                ),
            )
            page = [self._render_user(user, projection) for user in ordered[offset : offset + limit]]
            more = offset + limit < len(ordered)
        body: dict[str, Any] = {"kind": "admin#directory#users", "etag": f'"{self._version}"'}
        if page:
            body["users"] = page
        if more:
            body["nextPageToken"] = _page_token(offset + limit, _fingerprint(params, USERS_PATH))
        return json_response(body)

    def _check_sync_token(self, raw: str, api: str) -> _SyncToken:
        token = self._sync_tokens.get(raw)
        people_expired = token is not None and self.clock() - token.issued_at > PEOPLE_SYNC_TOKEN_TTL_S
        if token is None or token.api != api or token.stale or (api == "people" and people_expired):
            if api == "people":
                raise GoogleApiError(
                    400,
                    "FAILED_PRECONDITION",
                    "Sync token is expired. Clear local cache and retry call without the sync token.",
                    "failedPrecondition",
                    error_info_reason="EXPIRED_SYNC_TOKEN",
                )
            raise GoogleApiError(
                410, "GONE", "Sync token is no longer valid, a full sync is required.", "fullSyncRequired"
            )
        return token

    def _issue_sync_token(self, api: str) -> str:
        raw = ("CP" if api == "calendar" else "EgYI") + secrets.token_urlsafe(24)
        self._sync_tokens[raw] = _SyncToken(api, self._seq, self.clock())
        return raw

    def _changed_since(self, api: str, after_seq: int, limit: int) -> tuple[list[Any], int | None]:
        """Rows of `api` changed after `after_seq`, in change order, each once at its latest change; and the
        change number to continue from when more remain."""
        rows: list[Any] = []
        index = bisect.bisect_right(self._changes, (after_seq, "\uffff", ""))
        while index < len(self._changes):
            seq, change_api, key = self._changes[index]
            index += 1
            if change_api != api:
                continue
            row = self._contacts[int(key)] if api == "people" else self._events[key]
            if row.seq != seq:  # changed again later: it is returned at that later change
                continue
            if len(rows) == limit:
                return rows, rows[-1].seq
            rows.append(row)
        return rows, None

    async def _list_connections(self, request: Request) -> Response:
        params = request.query_params
        if request.path_params["person"] != "me":
            raise GoogleApiError(400, "INVALID_ARGUMENT", "Must be a valid resource name: people/me", "badRequest")
        raw_fields = params.get("personFields") or params.get("requestMask.includeField") or ""
        fields = frozenset(name.strip().removeprefix("person.") for name in raw_fields.split(",") if name.strip())
        if not fields:
            raise GoogleApiError(
                400, "INVALID_ARGUMENT", "personFields mask is required. Please specify one or more valid paths.",
                "badRequest",
            )  # fmt: skip
        unknown = sorted(fields - PERSON_FIELDS)
        if unknown:
            raise GoogleApiError(
                400, "INVALID_ARGUMENT", f'Invalid personFields mask path: "{unknown[0]}".', "badRequest"
            )
        # 0 or absent means the default, as People documents.
        page_size = _int_param(params, "pageSize", PEOPLE_PAGE_DEFAULT, 0, PEOPLE_PAGE_MAX) or PEOPLE_PAGE_DEFAULT
        sort_order = _enum_param(params, "sortOrder", PEOPLE_SORT_ORDERS, "LAST_MODIFIED_ASCENDING")
        wants_sync_token = _bool_param(params, "requestSyncToken")
        position = _read_page_token(params, "/v1/people/me/connections")
        body: dict[str, Any] = {}
        with self._lock:
            sync_token = params.get("syncToken")
            if sync_token:
                token = self._check_sync_token(sync_token, "people")
                rows, next_seq = self._changed_since(
                    "people", position if position is not None else token.seq, page_size
                )
                people = [self._render_person(row, fields) for row in rows]
                next_position: int | None = next_seq
                total = len(people)
            else:
                ordered = self._sorted(("people", sort_order), lambda: self._ordered_contacts(sort_order))
                offset = position or 0
                people = [self._render_person(row, fields) for row in ordered[offset : offset + page_size]]
                next_position = offset + page_size if offset + page_size < len(ordered) else None
                total = len(ordered)
            if next_position is None and wants_sync_token:
                body["nextSyncToken"] = self._issue_sync_token("people")
        if people:
            body["connections"] = people
        if next_position is not None:
            body["nextPageToken"] = _page_token(next_position, _fingerprint(params, "/v1/people/me/connections"))
        body |= {"totalPeople": total, "totalItems": total}
        return json_response(body)

    def _ordered_contacts(self, sort_order: str | None) -> list[_Contact]:
        live = [row for row in self._contacts.values() if row.deleted_ms is None]
        if sort_order == "FIRST_NAME_ASCENDING":
            return sorted(live, key=lambda row: (row.given_name, row.family_name, row.number))
        if sort_order == "LAST_NAME_ASCENDING":
            return sorted(live, key=lambda row: (row.family_name, row.given_name, row.number))
        descending = sort_order == "LAST_MODIFIED_DESCENDING"
        return sorted(live, key=lambda row: (row.updated_ms, row.number), reverse=descending)

    async def _list_events(self, request: Request) -> Response:
        params = request.query_params
        if request.path_params["calendar_id"] not in ("primary", self.owner_email):
            raise GoogleApiError(404, "NOT_FOUND", "Not Found", "notFound")
        limit = min(_int_param(params, "maxResults", EVENTS_PAGE_DEFAULT, 1, None), EVENTS_PAGE_MAX)
        single_events = _bool_param(params, "singleEvents")
        show_deleted = _bool_param(params, "showDeleted")
        order_by = _enum_param(params, "orderBy", ("startTime", "updated"))
        if order_by == "startTime" and not single_events:
            raise _bad_request("The requested ordering is not available for the particular query.", "badRequest")
        time_min, time_max = _instant_param(params, "timeMin"), _instant_param(params, "timeMax")
        updated_min = _instant_param(params, "updatedMin")
        if time_min is not None and time_max is not None and time_max <= time_min:
            raise _bad_request("The specified time range is empty.", "timeRangeEmpty")
        sync_token = params.get("syncToken")
        if sync_token:
            clashing = [name for name in SYNC_TOKEN_EXCLUSIVE if params.get(name)]
            if clashing:
                raise _bad_request(f"Sync token cannot be used with {clashing[0]}.", "invalid")
            # A sync always reports deletions since the token; events.list documents that showDeleted may not be
            # set to false next to a syncToken.
            if params.get("showDeleted", "").lower() == "false":
                raise _bad_request("Sync token cannot be used with showDeleted set to false.", "invalid")
        position = _read_page_token(params, EVENTS_PATH)
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": self.owner_email,
            "description": "",
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
        }
        with self._lock:
            if sync_token:
                token = self._check_sync_token(sync_token, "calendar")
                rows, next_position = self._changed_since(
                    "calendar", position if position is not None else token.seq, limit
                )
            else:
                if updated_min is not None and updated_min < self._updated_min_horizon_ms:
                    raise GoogleApiError(
                        410, "GONE", "The requested minimum modification time lies too far in the past.",
                        "updatedMinTooLongAgo",
                    )  # fmt: skip
                # updatedMin always brings deletions since then, whatever showDeleted says.
                include_cancelled = show_deleted or updated_min is not None
                matches = [
                    row
                    for row in self._events.values()
                    if (include_cancelled or not row.cancelled)
                    and (time_min is None or row.end_ms > time_min)
                    and (time_max is None or row.start_ms < time_max)
                    and (updated_min is None or row.updated_ms >= updated_min)
                ]
                if order_by == "startTime":
                    matches.sort(key=lambda row: (row.start_ms, row.id))
                elif order_by == "updated":
                    matches.sort(key=lambda row: (row.updated_ms, row.id))
                else:
                    matches.sort(key=lambda row: row.id)
                offset = position or 0
                rows = matches[offset : offset + limit]
                next_position = offset + limit if offset + limit < len(matches) else None
            items = [self._render_event(row) for row in rows]
            if next_position is None:
                body["nextSyncToken"] = self._issue_sync_token("calendar")
            latest = max((row.updated_ms for row in self._events.values()), default=0)
        body |= {"updated": _rfc3339_ms(latest), "etag": f'"{latest}000"', "items": items}
        if next_position is not None:
            body["nextPageToken"] = _page_token(next_position, _fingerprint(params, EVENTS_PATH))
        return json_response(body)

    # --- app -------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            if status_code == 404:
                return GoogleApiError(404, "NOT_FOUND", "Not Found", "notFound").response()
            if status_code == 405:
                return GoogleApiError(405, "UNIMPLEMENTED", "Method Not Allowed", "httpMethodNotAllowed").response()
            return GoogleApiError(
                status_code, "UNKNOWN", str(getattr(error, "detail", error)), "backendError"
            ).response()

        routes = [
            Route(AUTHORIZE_PATH, with_consent_page(self._authorize, "Google"), methods=["GET", "POST"]),
            Route(TOKEN_PATH, self._token, methods=["POST"]),
            Route(REVOKE_PATH, self._revoke, methods=["POST"]),
            Route(TOKENINFO_PATH, self._tokeninfo, methods=["GET", "POST"]),
            Route(USERS_PATH, self._api_endpoint("directory", self._list_users), methods=["GET"]),
            Route(CONNECTIONS_PATH, self._api_endpoint("people", self._list_connections), methods=["GET"]),
            Route(EVENTS_PATH, self._api_endpoint("calendar", self._list_events), methods=["GET"]),
            *push_routes(self, self._api_endpoint),
            Route(SCHEMAS_PATH, self._api_endpoint("schemas", self.schemas.list_schemas), methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error},
        )
