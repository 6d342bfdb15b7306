"""A Microsoft Graph v1.0 sandbox: Entra ID OAuth (v2.0 endpoints), users, personal contacts and calendar view with
delta queries, throttling and Graph's error shapes, served over real HTTP.

Behaviour follows Microsoft's public documentation closely enough that the official `msgraph-sdk` and our connector
run against it unchanged:

- Delta rounds: the first call of a round lists everything in scope, `@odata.nextLink` pages carry an opaque
  `$skiptoken`, the last page carries `@odata.deltaLink` with an opaque `$deltatoken`; following the delta link
  returns only what changed since, deletions as `{"id": ..., "@removed": {"reason": ...}}`. Query parameters of the
  first call ($select, the calendar view's window) are encoded in the tokens, as Graph does.
- Both `/delta` and `/delta()` are served (Graph accepts both; the SDK calls `delta()`), and links echo the form
  the caller used.
- Page size is asked for with `Prefer: odata.maxpagesize=N` (answered with `Preference-Applied`).
- Tokens live server-side: `expire_sync_tokens()` (or `delta_token_ttl_s`) makes them stale, and a stale token is
  answered 410 with `resyncRequired` (directory: users) or `SyncStateNotFound` (Outlook: contacts, events).
- Refresh tokens rotate and are single use here: a refresh token already exchanged is refused with invalid_grant.
  (Entra ID itself tolerates reuse for a while; the sandbox is stricter so a connector that fails to store the
  rotated token is caught.) A refresh token is only issued when `offline_access` was granted, as in Entra ID.
- Token responses never contain null values (MSAL rejects them).
- Identity (microsoft_identity.py): every v2.0 endpoint is served per tenant (`common`, `organizations`, the tenant
  id or its domain): OpenID discovery, the signing keys, ID tokens and `client_info` for `openid` requests, admin
  consent (`/{tenant}/v2.0/adminconsent`) and the client-credentials grant for a consented tenant, whose app-only
  tokens carry the application permissions and are refused at `/me`, as Graph refuses them.

The connection's own user is the first generated user; contacts and events belong to that mailbox, and asking for
another user's contacts is refused with Outlook's ErrorAccessDenied, as a delegated Contacts.Read token is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import (
    AccessStatus,
    AccessToken,
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
from integrations_pipeline.sandbox.microsoft_identity import (
    GRAPH_DEFAULT_SCOPE,
    TENANT_ALIASES,
    client_info,
    id_token,
    jwks,
    openid_configuration,
)
from integrations_pipeline.sandbox.microsoft_push import GraphPush, write_routes

__all__ = ["MicrosoftEmulator", "RequestRecord"]

# --- Graph facts ---------------------------------------------------------------------------------------------------

GRAPH_RESOURCE = "https://graph.microsoft.com/"
OFFLINE_ACCESS = "offline_access"
USERS_SCOPES = frozenset(("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"))
CONTACTS_SCOPES = frozenset(("Contacts.Read", "Contacts.ReadWrite"))
EVENTS_SCOPES = frozenset(("Calendars.Read", "Calendars.ReadWrite"))
# GET /me needs any of these (User.Read is what every Entra app gets by default).
ME_SCOPES = frozenset(("User.Read", *USERS_SCOPES))

USERS_PAGE_DEFAULT = 100
OUTLOOK_PAGE_DEFAULT = 10
PAGE_MAX = 999
USER_DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
CONTACT_FIELDS = (
    "givenName",
    "surname",
    "emailAddress",
    "businessPhone",
    "mobilePhone",
    "companyName",
    "jobTitle",
)
USER_PROPERTIES = frozenset(
    (
        *USER_DEFAULT_PROPERTIES, "accountEnabled", "createdDateTime", "department", "companyName", "employeeId",
        "employeeType", "city", "country", "state", "streetAddress", "postalCode", "usageLocation", "mailNickname",
        "otherMails", "proxyAddresses", "userType", "faxNumber", "ageGroup", "employeeHireDate", "imAddresses",
    )
)  # fmt: skip
"""Properties `$select` may name on a user (a documented subset); those a user was not given come back null."""
CONTACT_PROPERTIES = frozenset(
    (
        "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "parentFolderId", "birthday",
        "fileAs", "displayName", "givenName", "initials", "middleName", "nickName", "surname", "title", "jobTitle",
        "companyName", "department", "officeLocation", "profession", "businessHomePage", "assistantName", "manager",
        "homePhones", "mobilePhone", "businessPhones", "spouseName", "personalNotes", "children", "emailAddresses",
        "imAddresses", "homeAddress", "businessAddress", "otherAddress",
    )
)  # fmt: skip
"""A contact's properties, every one of which `$select` may name."""
DEPARTMENTS = ("Sales", "Engineering", "Finance", "Marketing", "Support")
TENANT_DOMAIN = "contoso.example"
GRAPH_RESPONSES = {"accepted": "accepted", "declined": "declined", "tentative": "tentativelyAccepted", "none": "none"}
WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)

# --- deterministic data ----------------------------------------------------------------------------------------------

CREATED_FROM = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
CREATED_UNTIL = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
MODIFIED_UNTIL = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
EVENTS_FROM = datetime(2026, 6, 1, tzinfo=UTC)
EVENT_DAYS = 30

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Chen", "Dara", "Elena", "Emeka", "Farah", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Lars", "Leila", "Mateo", "Mira", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
)  # fmt: skip
LAST_NAMES = (
    "Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber", "Yilmaz", "Zhang",
)  # fmt: skip
COMPANIES = ("Acme Analytics", "Blue Harbor", "Cobalt Labs", "Delta Freight", "Evergreen Health", "Granite Works")
JOB_TITLES = ("Account Executive", "CTO", "Data Engineer", "Designer", "Product Manager", "Sales Director")
SUBJECTS = ("Weekly sync", "Pipeline review", "1:1", "Customer call", "Planning", "Design critique", "Offsite")
ROOMS = ("Room 101", "Harbor View", "Teams", None)


def graph_timestamp(epoch_s: float, *, fraction_digits: int = 0) -> str:
    """Graph's UTC instants: `2026-01-02T03:04:05Z` (directory, contacts) or with 7 fraction digits (events)."""
    whole = int(epoch_s)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if fraction_digits:
        text += "." + f"{round((epoch_s - whole) * 10**7):07d}"[:fraction_digits]
    return text + "Z"


def _change_key(item_id: str, modified: str) -> str:
    """Exchange's changeKey changes with every edit; derived here so the same seed gives the same records."""
    return base64.b64encode(hashlib.sha256(f"{item_id}|{modified}".encode()).digest()[:12]).decode()


def _graph_local(moment: datetime) -> str:
    """A `dateTimeTimeZone.dateTime`: no offset, seven fraction digits."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000"


def _outlook_id(prefix: str, seed: int, number: int) -> str:
    """Long, opaque, url-safe ids shaped like Exchange's, deterministic for (seed, number)."""
    raw = f"{prefix}:{seed}:{number:09d}".encode()
    return "AAMkAGI2" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(slots=True)
class _Row:
    """One stored item; `seq` is the change sequence number of its last change (creation, update or deletion)."""

    id: str
    data: dict[str, Any]
    seq: int
    deleted: bool = False
    removed_reason: str = "deleted"


@dataclass
class _Collection:
    rows: dict[str, _Row] = field(default_factory=dict)
    changes: list[tuple[int, str]] = field(default_factory=list)
    """(seq, id) of every change in order; a delta round since S replays the tail after S."""


@dataclass(frozen=True)
class _Scope:
    """What a delta round covers, fixed by its first request and carried in its tokens."""

    kind: str  # users | contacts | events
    path: str  # the path the caller used, echoed in links
    select: tuple[str, ...] | None = None
    window: tuple[float, float] | None = None  # events: [start, end) epoch seconds


@dataclass
class _Round:
    scope: _Scope
    entries: list[tuple[str, str | None]]
    """(id, removed reason or None) in page order."""
    end_seq: int
    members: frozenset[str]
    """Events: ids inside the calendar view when the round ends (so a later round can report those leaving it)."""


@dataclass
class _DeltaState:
    scope: _Scope
    seq: int
    members: frozenset[str]
    issued_at: float


class GraphError(Exception):
    """Raised inside handlers; rendered as Graph's `{"error": {"code", "message", "innerError"}}`."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _parse_prefer(request: Request) -> dict[str, str]:
    """`Prefer: odata.maxpagesize=5, outlook.timezone="UTC"` -> {"odata.maxpagesize": "5", ...} (headers may repeat)."""
    preferences: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name:
                preferences[name.strip().lower()] = value.strip().strip('"')
    return preferences


def _parse_instant(value: str, name: str) -> float:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise GraphError(
            400, "ErrorInvalidParameter", f"The value '{value}' of parameter '{name}' is invalid."
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# --- the emulator --------------------------------------------------------------------------------------------------


class MicrosoftEmulator:
    """One Entra ID tenant with one app registration and one signed-in mailbox; serve `app` with any ASGI server.

    Inspection and mutation methods are thread-safe. `clock` (seconds since the epoch) drives token expiry, rate
    windows, delta-token age and modification stamps; generated data never depends on it.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        users: int = 25,
        contacts: int = 500,
        events: int = 300,
        events_around: date | None = None,
        seed: int = 7,
        access_token_ttl_s: int = 3599,
        requests_per_window: int | None = 10_000,
        rate_window_s: float = 600.0,
        delta_token_ttl_s: float | None = None,
        clock: Clock = time.time,
        push_time_scale: float = 1.0,
        application_permissions: tuple[str, ...] = ("User.Read.All",),
    ) -> None:
        self._lock = threading.RLock()
        self.client_id = client_id
        self.clock = clock
        self.tenant_id = str(
            uuid.UUID(
                int=random.Random(f"tenant:{seed}").getrandbits(128),  # noqa: S311 - a stable sample id
                version=4,
            )
        )
        self.request_log: list[RequestRecord] = []
        # App-only access: the application permissions an admin consents to, the tenants that consented, and the
        # tokens the client-credentials grant issued (Graph refuses them at /me).
        self.application_permissions = application_permissions
        self._consented_tenants: set[str] = set()
        self.admin_cancels_consent = False  # the administrator cancels on the consent page instead of accepting
        self._app_only_tokens: set[str] = set()
        self._nonces: dict[str, str] = {}  # authorization code -> the nonce its ID token must carry
        self._oauth = OAuthAuthorizationServer(
            clients={client_id: client_secret},
            access_token_ttl_s=access_token_ttl_s,
            clock=clock,
            rotate_refresh_tokens=True,
            access_token_prefix="eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.",
            refresh_token_prefix="1.AQ4A",
        )
        # Outlook's documented limit is 10,000 requests per 10 minutes per app and mailbox.
        self._limiter = SlidingWindowRateLimiter(requests_per_window, rate_window_s, clock, reported_limit=10_000)
        self._forced_throttles: list[int] = []  # Retry-After seconds of the next forced 429s, in order
        self.retry_attempts: list[int] = []
        """`Retry-Attempt` header values seen on Graph calls: the SDK's retry handler numbers its re-sends."""
        self.delta_token_ttl_s = delta_token_ttl_s
        self._seq = 0
        self._collections = {kind: _Collection() for kind in ("users", "contacts", "events")}
        self._pages: dict[str, tuple[_Round, int]] = {}  # $skiptoken -> (round, offset)
        self._delta_states: dict[str, _DeltaState] = {}  # $deltatoken -> state
        self._seed = seed
        self._next_number = {"contacts": contacts + 1, "events": events + 1}
        self.me_id = ""  # the first generated user: the mailbox the OAuth grant signs in as
        # Change notifications (microsoft_push.py); `push_time_scale` compresses Graph's retry schedule for tests.
        self.push = GraphPush(
            lock=self._lock,
            clock=clock,
            tenant_id=self.tenant_id,
            application_id=client_id,
            me_id=lambda: self.me_id,
            time_scale=push_time_scale,
        )
        self._generate(users, contacts, events, seed, events_around)
        self.app = self._build_app()

    # --- data generation -------------------------------------------------------------------------------------------

    def _generate(self, users: int, contacts: int, events: int, seed: int, events_around: date | None) -> None:
        rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
        for number in range(1, max(users, 1) + 1):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            upn = f"{first.lower()}.{last.lower()}{number}@{TENANT_DOMAIN}"
            self._store(
                "users",
                user_id,
                {
                    "businessPhones": [f"+1 425 555 {number:04d}"],
                    "displayName": f"{first} {last}",
                    "givenName": first,
                    "jobTitle": rng.choice(JOB_TITLES),
                    "mail": upn if number % 7 else None,  # some accounts have no mailbox
                    "mobilePhone": None,
                    "officeLocation": rng.choice(("Redmond", "Dublin", "Remote")),
                    "preferredLanguage": "en-US",
                    "surname": last,
                    "userPrincipalName": upn,
                    "id": user_id,
                    "accountEnabled": number % 11 != 0,
                    "department": DEPARTMENTS[number % len(DEPARTMENTS)],
                    "companyName": "Contoso",
                    "employeeId": f"E{number:05d}",
                    "usageLocation": "US",
                    "createdDateTime": graph_timestamp(CREATED_FROM + rng.random() * (CREATED_UNTIL - CREATED_FROM)),
                },
            )
            self.me_id = self.me_id or user_id
        first_names = rng.choices(FIRST_NAMES, k=contacts)
        last_names = rng.choices(LAST_NAMES, k=contacts)
        companies = rng.choices(COMPANIES, k=contacts)
        titles = rng.choices(JOB_TITLES, k=contacts)
        span = CREATED_UNTIL - CREATED_FROM
        draw = rng.random
        lowercase = {name: name.lower() for name in (*FIRST_NAMES, *LAST_NAMES)}
        domains = {company: company.split()[0].lower() + ".example" for company in COMPANIES}
        for index in range(contacts):
            created = CREATED_FROM + index * span / contacts + draw() * span / contacts
            modified = created + draw() * (MODIFIED_UNTIL - created)
            number = index + 1
            contact_id = _outlook_id("contact", seed, number)
            self._store(
                "contacts",
                contact_id,
                {
                    "givenName": first_names[index],
                    "surname": last_names[index],
                    "emailAddress": f"{lowercase[first_names[index]]}.{lowercase[last_names[index]]}.{number}@"
                    f"{domains[companies[index]]}",
                    "businessPhone": f"+1 555 {number // 10_000 % 1_000:03d} {number % 10_000:04d}",
                    "mobilePhone": None,
                    "companyName": companies[index],
                    "jobTitle": titles[index],
                    "created": created,
                    "modified": modified,
                },
            )
        first_day = events_first_day(EVENTS_FROM.date(), EVENT_DAYS, events_around)
        events_from = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
        for index in range(events):
            number = index + 1
            day = events_from + timedelta(days=index * EVENT_DAYS // max(events, 1))
            all_day = number % 10 == 0
            if all_day:
                start, end = day, day + timedelta(days=1)
            else:
                # Hours 8..23: some late events run past midnight into the next day's view.
                start = day + timedelta(hours=8 + rng.randrange(16), minutes=rng.choice((0, 30)))
                end = start + timedelta(minutes=rng.choice((30, 60, 90, 120)))
            created = CREATED_FROM + draw() * span
            modified = created + draw() * (MODIFIED_UNTIL - created)
            event_id = _outlook_id("event", seed, number)
            self._store(
                "events",
                event_id,
                {
                    "subject": f"{rng.choice(SUBJECTS)} #{number}",
                    "start": start.timestamp(),
                    "end": end.timestamp(),
                    "isAllDay": all_day,
                    "location": rng.choice(ROOMS),
                    "organizer": rng.choice((None, "colleague")),
                    "created": created,
                    "modified": modified,
                },
            )

    def _me(self) -> dict[str, Any]:
        return self._collections["users"].rows[self.me_id].data

    def _full(self, kind: str, row: _Row) -> dict[str, Any]:
        """Contacts and events are stored as their few varying fields and rendered whole only when served."""
        if kind == "contacts":
            return self._contact_body(row.id, row.data)
        if kind == "events":
            return self._event_body(row.id, row.data)
        return row.data

    def _contact_body(self, contact_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        created, modified = fields["created"], fields["modified"]
        given, surname = fields.get("givenName"), fields.get("surname")
        email = fields.get("emailAddress")
        display = " ".join(part for part in (given, surname) if part) or None
        change_key = _change_key(contact_id, graph_timestamp(modified))
        return {
            "@odata.etag": f'W/"{change_key}"',
            "id": contact_id,
            "createdDateTime": graph_timestamp(created),
            "lastModifiedDateTime": graph_timestamp(modified),
            "changeKey": change_key,
            "categories": [],
            "parentFolderId": "AAMkAGI2AAAAAAEOAAA=",
            "birthday": None,
            "fileAs": "",
            "displayName": display,
            "givenName": given,
            "initials": None,
            "middleName": None,
            "nickName": None,
            "surname": surname,
            "title": None,
            "jobTitle": fields.get("jobTitle"),
            "companyName": fields.get("companyName"),
            "department": None,
            "officeLocation": None,
            "profession": None,
            "businessHomePage": None,
            "assistantName": None,
            "manager": None,
            "homePhones": [],
            "mobilePhone": fields.get("mobilePhone"),
            "businessPhones": [fields["businessPhone"]] if fields.get("businessPhone") else [],
            "spouseName": None,
            "personalNotes": "",
            "children": [],
            "emailAddresses": [{"name": display or email, "address": email}] if email else [],
            "imAddresses": [],
            "homeAddress": {},
            "businessAddress": {},
            "otherAddress": {},
        }

    def _event_body(self, event_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        created, modified = fields["created"], fields["modified"]
        start, end = datetime.fromtimestamp(fields["start"], UTC), datetime.fromtimestamp(fields["end"], UTC)
        me = self._me() if self._collections["users"].rows else {}
        organizer: dict[str, Any]
        if fields.get("organizer") == "colleague":
            organizer = {"name": "Colleague", "address": f"colleague@{TENANT_DOMAIN}"}
        else:
            organizer = {"name": me.get("displayName"), "address": me.get("mail") or me.get("userPrincipalName")}
        location = fields.get("location")
        change_key = _change_key(event_id, graph_timestamp(modified, fraction_digits=7))
        return {
            "@odata.etag": f'W/"{change_key}"',
            "id": event_id,
            "createdDateTime": graph_timestamp(created, fraction_digits=7),
            "lastModifiedDateTime": graph_timestamp(modified, fraction_digits=7),
            "changeKey": change_key,
            "categories": [],
            "transactionId": None,
            "originalStartTimeZone": "UTC",
            "originalEndTimeZone": "UTC",
            "iCalUId": "040000008200E00074C5B7101A82E008"
            + hashlib.md5(event_id.encode(), usedforsecurity=False).hexdigest().upper(),
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": True,
            "hasAttachments": False,
            "subject": fields.get("subject"),
            "bodyPreview": "",
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": bool(fields.get("isAllDay")),
            "isCancelled": False,
            "isOrganizer": organizer["address"] == (me.get("mail") or me.get("userPrincipalName")),
            "responseRequested": True,
            "seriesMasterId": None,
            "showAs": "busy",
            "type": "singleInstance",
            "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None,
            "isOnlineMeeting": location == "Teams",
            "onlineMeetingProvider": "teamsForBusiness" if location == "Teams" else "unknown",
            "allowNewTimeProposals": True,
            "isDraft": False,
            "hideAttendees": False,
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": {"contentType": "html", "content": ""},
            "start": {"dateTime": _graph_local(start), "timeZone": "UTC"},
            "end": {"dateTime": _graph_local(end), "timeZone": "UTC"},
            "location": {
                "displayName": location or "",
                "locationType": "default",
                "uniqueIdType": "unknown",
            },
            "locations": [{"displayName": location, "locationType": "default"}] if location else [],
            "recurrence": None,
            "attendees": [
                {
                    "type": "required",
                    "status": {"response": GRAPH_RESPONSES[guest.response], "time": "0001-01-01T00:00:00Z"},
                    "emailAddress": {"name": f"{guest.first_name} {guest.last_name}", "address": guest.email},
                }
                for guest in sample_guests(event_id, TENANT_DOMAIN)
            ],
            "organizer": {"emailAddress": organizer},
        }

    def _store(self, kind: str, item_id: str, data: dict[str, Any]) -> None:
        self._seq += 1
        collection = self._collections[kind]
        collection.rows[item_id] = _Row(item_id, data, self._seq)
        collection.changes.append((self._seq, item_id))
        self.push.changed(kind, item_id, "created")

    def _touch(self, kind: str, row: _Row) -> None:
        self._seq += 1
        row.seq = self._seq
        self._collections[kind].changes.append((self._seq, row.id))
        self.push.changed(kind, row.id, "deleted" if row.deleted else "updated")

    # --- inspection ------------------------------------------------------------------------------------------------

    def _records(self, kind: str) -> list[dict[str, Any]]:
        rows = self._collections[kind].rows.values()
        return [json.loads(json.dumps(self._full(kind, row))) for row in rows if not row.deleted]

    @synchronized
    def user_records(self) -> list[dict[str, Any]]:
        """Every live user with every property, in delta order; deleted users are gone from the directory list."""
        return self._records("users")

    @synchronized
    def contact_records(self) -> list[dict[str, Any]]:
        """The signed-in user's live contacts as Graph renders them, in delta order."""
        return self._records("contacts")

    @synchronized
    def event_records(self) -> list[dict[str, Any]]:
        """The signed-in user's live events as Graph renders them (times in UTC), in delta order."""
        return self._records("events")

    @synchronized
    def deleted_ids(self, kind: str) -> list[str]:
        return [row.id for row in self._collections[kind].rows.values() if row.deleted]

    @synchronized
    def token_requests(self, grant_type: str | None = None) -> int:
        """How many token-endpoint calls arrived (failed ones included), optionally of one grant_type."""
        return self._oauth.count_token_requests(grant_type)

    @synchronized
    def issued_tokens(self) -> frozenset[str]:
        """Every authorization code, access token and refresh token this emulator ever issued."""
        return frozenset(self._oauth.issued)

    # --- mutations (Python side) -----------------------------------------------------------------------------------

    @synchronized
    def create_contact(self, **fields: str | None) -> str:
        """Fields: givenName, surname, emailAddress, businessPhone, mobilePhone, companyName, jobTitle."""
        contact_id = _outlook_id("contact", self._seed, self._next_number["contacts"])
        self._next_number["contacts"] += 1
        now = self.clock()
        self._store("contacts", contact_id, {**self._contact_fields(fields), "created": now, "modified": now})
        return contact_id

    @synchronized
    def update_contact(self, contact_id: str, **changes: str | None) -> None:
        """Same fields as `create_contact`; KeyError for an unknown or deleted contact."""
        row = self._live("contacts", contact_id)
        row.data.update(self._contact_fields(changes, partial=True))
        self._stamp("contacts", row)

    @staticmethod
    def _contact_fields(fields: dict[str, str | None], *, partial: bool = False) -> dict[str, str | None]:
        unknown = set(fields) - set(CONTACT_FIELDS)
        if unknown:
            raise ValueError(f"unknown contact fields: {sorted(unknown)}")
        return dict(fields) if partial else {name: fields.get(name) for name in CONTACT_FIELDS}

    @synchronized
    def delete_contact(self, contact_id: str) -> None:
        self._delete("contacts", self._live("contacts", contact_id), "deleted")

    @synchronized
    def create_event(
        self, *, subject: str, start: datetime, end: datetime, is_all_day: bool = False, location: str | None = None
    ) -> str:
        """An event organized by the signed-in user; `start`/`end` must be timezone-aware."""
        event_id = _outlook_id("event", self._seed, self._next_number["events"])
        self._next_number["events"] += 1
        now = self.clock()
        fields = {
            "subject": subject,
            "start": start.timestamp(),
            "end": end.timestamp(),
            "isAllDay": is_all_day,
            "location": location,
            "organizer": None,
            "created": now,
            "modified": now,
        }
        self._store("events", event_id, fields)
        return event_id

    @synchronized
    def update_event(
        self, event_id: str, *, subject: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> None:
        row = self._live("events", event_id)
        if subject is not None:
            row.data["subject"] = subject
        if start is not None:
            row.data["start"] = start.timestamp()
        if end is not None:
            row.data["end"] = end.timestamp()
        self._stamp("events", row)

    @synchronized
    def delete_event(self, event_id: str) -> None:
        self._delete("events", self._live("events", event_id), "deleted")

    @synchronized
    def update_user(self, user_id: str, **changes: Any) -> None:
        row = self._live("users", user_id)
        row.data.update(changes)
        self._touch("users", row)

    @synchronized
    def delete_user(self, user_id: str, *, permanently: bool = False) -> None:
        """A soft delete (restorable for 30 days) shows in delta as reason "changed", a hard one as "deleted"."""
        self._delete("users", self._live("users", user_id), "deleted" if permanently else "changed")

    def _live(self, kind: str, item_id: str) -> _Row:
        row = self._collections[kind].rows.get(item_id)
        if row is None or row.deleted:
            raise KeyError(item_id)
        return row

    def _stamp(self, kind: str, row: _Row) -> None:
        row.data["modified"] = self.clock()
        self._touch(kind, row)

    def _delete(self, kind: str, row: _Row, reason: str) -> None:
        row.deleted, row.removed_reason = True, reason
        self._touch(kind, row)

    # --- fault knobs -----------------------------------------------------------------------------------------------

    @synchronized
    def set_rate_limit(self, requests_per_window: int | None, *, window_s: float | None = None) -> None:
        """Change the per-mailbox limit (None: off) and its rolling window, even while serving."""
        self._limiter.set_limit(requests_per_window, window_s)

    @synchronized
    def expire_access_tokens(self) -> None:
        self._oauth.expire_all_access_tokens()

    @synchronized
    def revoke_refresh_tokens(self) -> None:
        self._oauth.revoke_all_refresh_tokens()

    @synchronized
    def expire_sync_tokens(self) -> None:
        """Every $deltatoken and $skiptoken handed out so far becomes stale (410 on next use)."""
        self._pages.clear()
        self._delta_states.clear()

    @synchronized
    def throttle_next(self, requests: int = 1, *, retry_after_s: int = 1) -> None:
        """The next `requests` Graph calls are answered 429 with `Retry-After: retry_after_s`."""
        self._forced_throttles.extend([retry_after_s] * requests)

    # --- delta rounds ----------------------------------------------------------------------------------------------

    def _in_window(self, row: _Row, window: tuple[float, float]) -> bool:
        """calendarView semantics: the event overlaps [start, end) (an instant event at the start counts)."""
        start, end = row.data["start"], row.data["end"]
        return start < window[1] and (end > window[0] or start == end == window[0])

    def _in_scope(self, scope: _Scope, row: _Row) -> bool:
        return scope.window is None or self._in_window(row, scope.window)

    @synchronized
    def _start_round(self, scope: _Scope, since: _DeltaState | None) -> _Round:
        collection = self._collections[scope.kind]
        entries: list[tuple[str, str | None]] = []
        if since is None:
            entries = [
                (row.id, None) for row in collection.rows.values() if not row.deleted and self._in_scope(scope, row)
            ]
            members = frozenset(item_id for item_id, _ in entries)
        else:
            changed: dict[str, None] = {}
            tail = collection.changes[self._first_change_after(collection, since.seq) :]
            for _, item_id in tail:
                changed.pop(item_id, None)
                changed[item_id] = None  # keep each id once, at its latest change
            members_now = set(since.members)
            for item_id in changed:
                row = collection.rows[item_id]
                tracked = scope.window is None or item_id in since.members
                if row.deleted:
                    if tracked:
                        entries.append((item_id, row.removed_reason))
                    members_now.discard(item_id)
                elif self._in_scope(scope, row):
                    entries.append((item_id, None))
                    members_now.add(item_id)
                elif tracked:
                    entries.append((item_id, "deleted"))  # moved out of the calendar view
                    members_now.discard(item_id)
            members = frozenset(members_now)
        return _Round(scope, entries, self._seq, members)

    @staticmethod
    def _first_change_after(collection: _Collection, seq: int) -> int:
        low, high = 0, len(collection.changes)
        while low < high:
            middle = (low + high) // 2
            if collection.changes[middle][0] <= seq:
                low = middle + 1
            else:
                high = middle
        return low

    def _render(self, scope: _Scope, item_id: str, removed: str | None) -> dict[str, Any]:
        if removed is not None:
            return {"id": item_id, "@removed": {"reason": removed}}
        data = self._full(scope.kind, self._collections[scope.kind].rows[item_id])
        if scope.kind == "users":
            names = scope.select or USER_DEFAULT_PROPERTIES
            return {"id": item_id} | {name: data.get(name) for name in names if name != "id"}
        if scope.select:
            keep = {*scope.select, "id", "@odata.etag"}
            return {name: value for name, value in data.items() if name in keep}
        return dict(data)

    @synchronized
    def _serve_page(self, base_url: str, round_: _Round, offset: int, page_size: int) -> dict[str, Any]:
        scope = round_.scope
        chunk = round_.entries[offset : offset + page_size]
        body: dict[str, Any] = {
            "@odata.context": f"{base_url}/v1.0/$metadata#Collection({scope.kind})",
            "value": [self._render(scope, item_id, removed) for item_id, removed in chunk],
        }
        link_base = base_url + scope.path
        if offset + page_size < len(round_.entries):
            token = secrets.token_urlsafe(24)
            self._pages[token] = (round_, offset + page_size)
            body["@odata.nextLink"] = f"{link_base}?$skiptoken={token}"
        else:
            token = secrets.token_urlsafe(24)
            self._delta_states[token] = _DeltaState(scope, round_.end_seq, round_.members, self.clock())
            body["@odata.deltaLink"] = f"{link_base}?$deltatoken={token}"
        return body

    def _delta_state(self, token: str, kind: str) -> _DeltaState:
        state = self._delta_states.get(token)
        expired = (
            state is not None
            and self.delta_token_ttl_s is not None
            and self.clock() - state.issued_at > self.delta_token_ttl_s
        )
        if state is None or expired or state.scope.kind != kind:
            raise self._stale_token(kind)
        return state

    @staticmethod
    def _stale_token(kind: str) -> GraphError:
        if kind == "users":
            return GraphError(
                410,
                "resyncRequired",
                "Resync required. Replace any local cached data with the data returned by a delta request without "
                "a state token.",
            )
        return GraphError(410, "SyncStateNotFound", "The sync state generation was not found.")

    # --- HTTP: Graph -----------------------------------------------------------------------------------------------

    def _graph_error(self, error: GraphError, request: Request | None = None) -> JSONResponse:
        inner = {
            "date": graph_timestamp(self.clock()),
            "request-id": str(uuid.uuid4()),
            "client-request-id": (request.headers.get("client-request-id") if request else None) or str(uuid.uuid4()),
        }
        body = {"error": {"code": error.code, "message": error.message, "innerError": inner}}
        return json_response(body, error.status_code, error.headers)

    def _graph_endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], scopes: frozenset[str], denied: GraphError
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, check scopes and throttling, then run `handler`, mapping GraphError to Graph's body."""

        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            retry_attempt = request.headers.get("retry-attempt", "")
            with self._lock:
                if retry_attempt.isdigit():
                    self.retry_attempts.append(int(retry_attempt))
                status, access = self._oauth.authenticate(token) if token else (AccessStatus.UNKNOWN, None)
                granted = set(access.scopes) if access is not None else set()
                authorized = status is AccessStatus.VALID and bool(granted & scopes)
                forced = self._forced_throttles.pop(0) if authorized and self._forced_throttles else None
                decision = self._limiter.hit() if authorized and forced is None else self._limiter.peek()
            try:
                if not token:
                    raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
                if status is AccessStatus.EXPIRED:
                    raise GraphError(
                        401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
                    )
                if status is AccessStatus.UNKNOWN:
                    raise GraphError(
                        401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.)."
                    )
                if token in self._app_only_tokens and request.url.path.startswith("/v1.0/me"):
                    raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
                if not authorized:
                    raise denied
                retry_after = forced if forced is not None else (None if decision.allowed else decision.retry_after_s)
                if retry_after is not None:
                    raise GraphError(
                        429,
                        "ApplicationThrottled"
                        if "/contacts" in request.url.path or "/calendar" in request.url.path
                        else "TooManyRequests",
                        "Application is over its MailboxConcurrency limit."
                        if "/contacts" in request.url.path or "/calendar" in request.url.path
                        else "Too many requests.",
                        {"Retry-After": str(retry_after)},
                    )
                response = await handler(request)
            except GraphError as error:
                response = self._graph_error(error, request)
                if error.status_code == 401:
                    response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
            response.headers["request-id"] = str(uuid.uuid4())
            if request.headers.get("client-request-id"):
                response.headers["client-request-id"] = request.headers["client-request-id"]
            return response

        return endpoint

    def _page_size(self, request: Request, default: int) -> tuple[int, dict[str, str]]:
        raw = _parse_prefer(request).get("odata.maxpagesize")
        if raw is None:
            return default, {}
        if not raw.isdigit() or int(raw) < 1:
            raise GraphError(400, "BadRequest", f"Invalid odata.maxpagesize preference value '{raw}'.")
        size = min(int(raw), PAGE_MAX)
        return size, {"Preference-Applied": f"odata.maxpagesize={size}"}

    async def _delta(self, request: Request, kind: str) -> Response:
        params = request.query_params
        page_size, headers = self._page_size(request, USERS_PAGE_DEFAULT if kind == "users" else OUTLOOK_PAGE_DEFAULT)
        base_url = str(request.base_url).rstrip("/")
        skiptoken, deltatoken = params.get("$skiptoken"), params.get("$deltatoken")
        with self._lock:
            if skiptoken is not None:
                page = self._pages.get(skiptoken)
                if page is None or page[0].scope.kind != kind:
                    raise self._stale_token(kind)
                round_, offset = page
                body = self._serve_page(base_url, round_, offset, page_size)
            elif deltatoken is not None and deltatoken != "latest":
                state = self._delta_state(deltatoken, kind)
                body = self._serve_page(base_url, self._start_round(state.scope, state), 0, page_size)
            else:
                scope = self._first_scope(request, kind)
                if deltatoken == "latest":  # no data, just a delta link for the current state
                    empty = _Round(scope, [], self._seq, self._start_round(scope, None).members)
                    body = self._serve_page(base_url, empty, 0, page_size)
                else:
                    body = self._serve_page(base_url, self._start_round(scope, None), 0, page_size)
        return json_response(body, headers=headers)

    def _first_scope(self, request: Request, kind: str) -> _Scope:
        params = request.query_params
        select = tuple(name.strip() for name in params.get("$select", "").split(",") if name.strip()) or None
        if kind in ("users", "contacts") and select:
            known = USER_PROPERTIES if kind == "users" else CONTACT_PROPERTIES
            unknown = [name for name in select if name not in known]
            if unknown:
                raise GraphError(
                    400,
                    "Request_BadRequest" if kind == "users" else "RequestBroker--ParseUri",
                    f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.{kind[:-1]}'.",
                )
        window = None
        if kind == "events":
            start, end = params.get("startDateTime"), params.get("endDateTime")
            if not start or not end:
                raise GraphError(
                    400,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters StartDateTime and "
                    "EndDateTime.",
                )
            window = (_parse_instant(start, "startDateTime"), _parse_instant(end, "endDateTime"))
            if window[1] <= window[0]:
                raise GraphError(
                    400, "ErrorInvalidParameter", "The parameter 'EndDateTime' must be after 'StartDateTime'."
                )
            select = None  # calendarView delta does not support $select: every property comes back
        return _Scope(kind, request.url.path, select, window)

    async def _users_delta(self, request: Request) -> Response:
        return await self._delta(request, "users")

    async def _contacts_delta(self, request: Request) -> Response:
        user_id = request.path_params.get("user_id", "me")
        if user_id not in ("me", self.me_id):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return await self._delta(request, "contacts")

    async def _events_delta(self, request: Request) -> Response:
        user_id = request.path_params.get("user_id", "me")
        if user_id not in ("me", self.me_id):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return await self._delta(request, "events")

    async def _list_users(self, request: Request) -> Response:
        """GET /users: a plain list ($top 1..999, $select, $skiptoken), the non-delta way to read the directory."""
        params = request.query_params
        raw_top = params.get("$top")
        if raw_top is not None and (not raw_top.isdigit() or not 1 <= int(raw_top) <= PAGE_MAX):
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{raw_top}'. Must be between 1 and 999 inclusive.",
            )
        top = int(raw_top) if raw_top is not None else USERS_PAGE_DEFAULT
        base_url = str(request.base_url).rstrip("/")
        skiptoken = params.get("$skiptoken")
        with self._lock:
            if skiptoken is not None:
                page = self._pages.get(skiptoken)
                if page is None or page[0].scope.path != request.url.path:
                    raise GraphError(400, "Request_BadRequest", "The specified page token value has expired.")
                round_, offset = page
            else:
                round_, offset = self._start_round(self._first_scope(request, "users"), None), 0
            chunk = round_.entries[offset : offset + top]
            body: dict[str, Any] = {
                "@odata.context": f"{base_url}/v1.0/$metadata#users",
                "value": [self._render(round_.scope, item_id, None) for item_id, _ in chunk],
            }
            if offset + top < len(round_.entries):
                token = secrets.token_urlsafe(24)
                self._pages[token] = (round_, offset + top)
                body["@odata.nextLink"] = f"{base_url}{request.url.path}?$top={top}&$skiptoken={token}"
        return json_response(body)

    async def _get_me(self, request: Request) -> Response:
        with self._lock:
            data = self._me()
            body: dict[str, Any] = {
                "@odata.context": f"{str(request.base_url).rstrip('/')}/v1.0/$metadata#users/$entity"
            }
            body |= {name: data.get(name) for name in USER_DEFAULT_PROPERTIES}
        return json_response(body)

    # --- HTTP: OAuth (Entra ID v2.0) -------------------------------------------------------------------------------

    def _aad_error(self, status_code: int, error: str, code: int, message: str) -> JSONResponse:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.clock()))
        description = (
            f"AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {stamp}"
        )
        body = {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }
        return json_response(body, status_code)

    def _oauth_error(self, error: OAuthError, form: dict[str, str]) -> JSONResponse:
        kind = error.kind
        if kind is OAuthErrorKind.INVALID_CLIENT:
            return self._aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id', '')}' was not found in the directory.",
            )
        if kind is OAuthErrorKind.INVALID_CLIENT_SECRET:
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if kind is OAuthErrorKind.CODE_VERIFIER_MISMATCH:
            return self._aad_error(
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        if kind is OAuthErrorKind.INVALID_REQUEST:
            return self._aad_error(400, "invalid_request", 900144, f"The request is invalid: {error.description}.")
        if kind is OAuthErrorKind.INVALID_REFRESH_TOKEN:
            return self._aad_error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'refresh_token' is not valid: it was revoked or already redeemed.",
            )
        return self._aad_error(
            400,
            "invalid_grant",
            70000,
            f"The provided value for the 'code' parameter is not valid: {error.description}.",
        )

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        if not self._known_tenant(request.path_params["tenant"]):
            return HTMLResponse(self._unknown_tenant_message(request.path_params["tenant"]), 400)
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            known_client = self._oauth.is_known_client(client_id)
        if not known_client:
            return HTMLResponse(
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory.", 400
            )
        if not redirect_uri:
            return HTMLResponse(
                "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.", 400
            )

        def redirect_error(error: str, code: int, message: str) -> Response:
            extra = {"error": error, "error_description": f"AADSTS{code}: {message}"}
            if "state" in params:
                extra["state"] = params["state"]
            return RedirectResponse(_with_query(redirect_uri, extra), status_code=302)

        if params.get("response_type") != "code":
            return redirect_error("unsupported_response_type", 700054, "response_type 'code' is required.")
        scopes = self._normalize_scopes(params.get("scope", ""))
        if not scopes:
            return redirect_error(
                "invalid_request", 900144, "The request body must contain the following parameter: 'scope'."
            )
        code_challenge = params.get("code_challenge") or None
        if code_challenge is not None and params.get("code_challenge_method", "plain") != "S256":
            return redirect_error(
                "invalid_request", 501491, "Invalid code_challenge_method: only S256 is accepted here."
            )
        with self._lock:
            code = self._oauth.issue_code(
                client_id=client_id, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
            )
            if params.get("nonce"):
                self._nonces[code] = params["nonce"]
        extra = {"code": code}
        if "state" in params:
            extra["state"] = params["state"]
        extra["session_state"] = str(uuid.uuid4())
        return RedirectResponse(_with_query(redirect_uri, extra), status_code=302)

    @staticmethod
    def _normalize_scopes(raw: str) -> tuple[str, ...]:
        """Entra accepts `https://graph.microsoft.com/X` and bare `X`; both name the same Graph permission."""
        names = (name.removeprefix(GRAPH_RESOURCE) for name in raw.split())
        return tuple(dict.fromkeys(name for name in names if name))

    def _known_tenant(self, tenant: str) -> bool:
        return tenant in TENANT_ALIASES or tenant in (self.tenant_id, TENANT_DOMAIN)

    @staticmethod
    def _unknown_tenant_message(tenant: str) -> str:
        return (
            f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud."
        )

    def _issuer(self, request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}/{self.tenant_id}/v2.0"

    async def _openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not self._known_tenant(tenant):
            return self._aad_error(400, "invalid_tenant", 90002, self._unknown_tenant_message(tenant)[12:])
        base = str(request.base_url).rstrip("/")
        return json_response(openid_configuration(base, tenant, self.tenant_id))

    async def _keys(self, request: Request) -> Response:
        return json_response(jwks(self._issuer(request)))

    async def _admin_consent(self, request: Request) -> Response:
        """The tenant's admin grants the app its application permissions and is sent back with `admin_consent=True`
        and the tenant id, or cancels (`admin_cancels_consent`) and is sent back with Entra ID's documented
        `error=permission_denied`, as Entra ID's admin consent endpoint does; the state comes back either way."""
        params = request.query_params
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or not redirect_uri:
            return HTMLResponse(f"AADSTS700016: Application with identifier '{params.get('client_id', '')}' was "
                                "not found in the directory.", 400)  # fmt: skip
        if not self._known_tenant(request.path_params["tenant"]):
            return HTMLResponse(self._unknown_tenant_message(request.path_params["tenant"]), 400)
        extra = {"error": "permission_denied", "error_description": "The admin canceled the request"}
        if not self.admin_cancels_consent:
            with self._lock:
                self._consented_tenants.add(self.tenant_id)
            scope = params.get("scope", GRAPH_DEFAULT_SCOPE)
            extra = {"admin_consent": "True", "tenant": self.tenant_id, "scope": scope}
        if "state" in params:
            extra["state"] = params["state"]
        return RedirectResponse(_with_query(redirect_uri, extra), status_code=302)

    @synchronized
    def grant_admin_consent(self) -> None:
        """The tenant's admin consented out of band (in the Entra admin center)."""
        self._consented_tenants.add(self.tenant_id)

    def _client_credentials(self, form: dict[str, str], tenant: str) -> JSONResponse:
        """App-only tokens for a tenant whose admin consented: the application permissions, no refresh token."""
        if tenant in TENANT_ALIASES:
            return self._aad_error(
                400, "invalid_request", 900023,
                f"Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain.",
            )  # fmt: skip
        if form.get("scope") != GRAPH_DEFAULT_SCOPE:
            return self._aad_error(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )  # fmt: skip
        with self._lock:
            expected = self._oauth.clients.get(form.get("client_id", ""))
            consented = self.tenant_id in self._consented_tenants
        if expected is None or not consented:
            return self._aad_error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{form.get('client_id', '')}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )  # fmt: skip
        if not secrets.compare_digest(expected, form.get("client_secret", "")):
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        with self._lock:
            access_token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32)
            ttl = self._oauth.access_token_ttl_s
            self._oauth.issued.add(access_token)
            self._oauth.access_tokens[access_token] = AccessToken(
                access_token, form["client_id"], self.application_permissions, self.clock() + ttl
            )
            self._app_only_tokens.add(access_token)
        body = {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": access_token}
        return json_response(body)

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        tenant = request.path_params["tenant"]
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic ") and "client_secret" not in form:
            try:
                decoded = base64.b64decode(basic[6:].strip()).decode()
            except ValueError:
                decoded = ""
            client_id, _, client_secret = decoded.partition(":")
            form.setdefault("client_id", client_id)
            form["client_secret"] = client_secret
        grant_type = form.get("grant_type", "")
        with self._lock:
            self._oauth.record_token_request(grant_type)
        if not self._known_tenant(tenant):
            return self._aad_error(400, "invalid_tenant", 90002, self._unknown_tenant_message(tenant)[12:])
        if not grant_type:
            return self._aad_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        if grant_type == "client_credentials":
            return self._client_credentials(form, tenant)
        required = {
            "authorization_code": ("client_id", "code", "redirect_uri", "client_secret"),
            "refresh_token": ("client_id", "refresh_token", "client_secret"),
        }
        if grant_type not in required:
            return self._aad_error(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
            )
        missing = [name for name in required[grant_type] if not form.get(name)]
        if missing:
            if missing[0] == "client_secret":
                return self._aad_error(
                    401,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                )
            return self._aad_error(
                400,
                "invalid_request",
                900144,
                f"The request body must contain the following parameter: '{missing[0]}'.",
            )
        try:
            with self._lock:
                nonce = self._nonces.pop(form.get("code", ""), None)
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
                if OFFLINE_ACCESS not in grant.scopes:
                    # Entra ID only hands out refresh tokens for offline_access: forget the one the core minted.
                    self._oauth.refresh_tokens.pop(grant.refresh_token, None)
        except OAuthError as error:
            return self._oauth_error(error, form)
        granted = [name for name in grant.scopes if name != OFFLINE_ACCESS]
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": grant.expires_in,
            "ext_expires_in": grant.expires_in,
            "access_token": grant.access_token,
        }
        if OFFLINE_ACCESS in grant.scopes:
            body["refresh_token"] = grant.refresh_token
        if "openid" in grant.scopes:  # OpenID Connect: who signed in, and (asked for by MSAL) where they live
            with self._lock:
                user = dict(self._me())
            body["id_token"] = id_token(
                issuer=self._issuer(request),
                client_id=form["client_id"],
                tenant_id=self.tenant_id,
                user=user,
                scopes=grant.scopes,
                now=self.clock(),
                nonce=nonce,
            )
            if form.get("client_info") == "1":
                body["client_info"] = client_info(user["id"], self.tenant_id)
        # MSAL chokes on null values: never send a key without a value.
        return json_response({key: value for key, value in body.items() if value is not None})

    # --- app ---------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, error: Exception) -> Response:
            status_code = error.status_code if isinstance(error, HTTPException) else 500
            if status_code in (404, 405):
                segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
                return self._graph_error(
                    GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'."), request
                )
            return self._graph_error(
                GraphError(status_code, "BadRequest", str(getattr(error, "detail", error))), request
            )

        async def graph_error(request: Request, error: Exception) -> Response:
            assert isinstance(error, GraphError)
            return self._graph_error(error, request)

        users_denied = GraphError(
            403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
        outlook_denied = GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        users_delta = self._graph_endpoint(self._users_delta, USERS_SCOPES, users_denied)
        contacts_delta = self._graph_endpoint(self._contacts_delta, CONTACTS_SCOPES, outlook_denied)
        events_delta = self._graph_endpoint(self._events_delta, EVENTS_SCOPES, outlook_denied)
        routes = [
            Route(
                "/{tenant}/oauth2/v2.0/authorize",
                with_consent_page(self._authorize, "Microsoft"),
                methods=["GET", "POST"],
            ),
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self._keys, methods=["GET"]),
            Route("/{tenant}/v2.0/adminconsent", self._admin_consent, methods=["GET"]),
            Route("/v1.0/me", self._graph_endpoint(self._get_me, ME_SCOPES, users_denied), methods=["GET"]),
            Route("/v1.0/users", self._graph_endpoint(self._list_users, USERS_SCOPES, users_denied), methods=["GET"]),
        ]
        # Graph serves `delta` and its fully qualified name, with or without parentheses; the SDK sends `delta()`.
        for function in ("delta()", "delta", "microsoft.graph.delta()", "microsoft.graph.delta"):
            routes += [
                Route(f"/v1.0/users/{function}", users_delta, methods=["GET"]),
                Route(f"/v1.0/me/contacts/{function}", contacts_delta, methods=["GET"]),
                Route(f"/v1.0/users/{{user_id}}/contacts/{function}", contacts_delta, methods=["GET"]),
                Route(f"/v1.0/me/calendarView/{function}", events_delta, methods=["GET"]),
                Route(f"/v1.0/users/{{user_id}}/calendarView/{function}", events_delta, methods=["GET"]),
            ]
        subscribable = USERS_SCOPES | CONTACTS_SCOPES | EVENTS_SCOPES
        routes += self.push.routes(lambda handler: self._graph_endpoint(handler, subscribable, outlook_denied))
        routes += write_routes(self, lambda handler, scopes: self._graph_endpoint(handler, scopes, outlook_denied))
        return Starlette(
            routes=routes,
            middleware=[Middleware(RequestLogMiddleware, log=self.request_log, lock=self._lock)],
            exception_handlers={HTTPException: http_error, GraphError: graph_error},
        )
