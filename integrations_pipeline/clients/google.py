"""Google Workspace: OAuth spec (offline access, incremental authorization), lenient raw models, the users,
contacts and events connectors, and their pure mappers.

The three APIs live on three hosts: Admin SDK Directory on admin.googleapis.com, People on people.googleapis.com
and Calendar on www.googleapis.com. A sandbox origin (the app's base_url) serves all three paths itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from integrations_pipeline.clients.cursors import modified_since, timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired, ProviderError
from integrations_pipeline.clients.field_requests import new_fields
from integrations_pipeline.clients.http import ApiClient, RetryPolicy
from integrations_pipeline.clients.pagination import CursorPaginator
from integrations_pipeline.clients.spec import (
    AccountInfo,
    EntitySpec,
    OAuthEndpoints,
    Page,
    ProviderSpec,
    SyncRequest,
    day_page,
)
from integrations_pipeline.clients.values import as_utc, attendee_records, raw_json, text_or_none, utc_midnight
from integrations_pipeline.records import (
    CONTACT_COLUMNS,
    EVENT_COLUMNS,
    USER_COLUMNS,
    AttendeeRecord,
    ContactRecord,
    EventRecord,
    UserRecord,
)
from integrations_pipeline.store import TokenSet

DIRECTORY_ORIGIN = "https://admin.googleapis.com"
PEOPLE_ORIGIN = "https://people.googleapis.com"
CALENDAR_ORIGIN = "https://www.googleapis.com"
OAUTH_ORIGIN = "https://oauth2.googleapis.com"
API_BASE_URL = CALENDAR_ORIGIN  # SPEC's default origin: seeing it means "the real per-API hosts"

DIRECTORY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.readonly"
USERSCHEMA_SCOPE = "https://www.googleapis.com/auth/admin.directory.userschema.readonly"  # the field catalog

USERS_PAGE_SIZE = 500  # Directory's maximum (it answers 400 above it)
CONNECTIONS_PAGE_SIZE = 1000  # People's maximum
EVENTS_PAGE_SIZE = 2500  # Calendar's maximum
PERSON_FIELDS = "names,emailAddresses,phoneNumbers,organizations,metadata"


def person_fields(catalog: tuple[str, ...]) -> str:
    """The People `personFields` mask: ours, then the catalog's (every documented person field) not among them."""
    ours = PERSON_FIELDS.split(",")
    return ",".join((*ours, *new_fields(ours, catalog)))


PAGINATOR = CursorPaginator(path=("nextPageToken",), param="pageToken")

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# Calendar: 410 fullSyncRequired (stale syncToken) or updatedMinTooLongAgo; People: 400 with ErrorInfo reason
# EXPIRED_SYNC_TOKEN (not a 410, whatever one might expect).
CURSOR_EXPIRED_REASONS = frozenset({"fullSyncRequired", "updatedMinTooLongAgo", "EXPIRED_SYNC_TOKEN"})


def error_reasons(response: httpx.Response) -> set[str]:
    """Every `reason` in Google's error body: legacy `errors[]` items and newer `details[]` ErrorInfos."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return set()
    if not isinstance(error, dict):
        return set()
    items = [*(error.get("errors") or []), *(error.get("details") or [])]
    return {item["reason"] for item in items if isinstance(item, dict) and isinstance(item.get("reason"), str)}


# --- raw models (lenient: unknown fields ignored) ---------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class DirectoryName(_Lenient):
    givenName: str | None = None
    familyName: str | None = None


class DirectoryOrganization(_Lenient):
    title: str | None = None
    primary: bool = False


class DirectoryUser(_Lenient):
    id: str
    primaryEmail: str | None = None
    name: DirectoryName = Field(default_factory=DirectoryName)
    organizations: list[DirectoryOrganization] = Field(default_factory=list)
    suspended: bool = False
    archived: bool = False
    creationTime: datetime | None = None
    deletionTime: datetime | None = None


class FieldMetadata(_Lenient):
    primary: bool = False


class PersonName(_Lenient):
    metadata: FieldMetadata = Field(default_factory=FieldMetadata)
    givenName: str | None = None
    familyName: str | None = None


class PersonValue(_Lenient):
    metadata: FieldMetadata = Field(default_factory=FieldMetadata)
    value: str | None = None


class PersonOrganization(_Lenient):
    metadata: FieldMetadata = Field(default_factory=FieldMetadata)
    name: str | None = None
    title: str | None = None


class PersonSource(_Lenient):
    type: str | None = None
    updateTime: datetime | None = None


class PersonMetadata(_Lenient):
    sources: list[PersonSource] = Field(default_factory=list)
    deleted: bool = False


class Person(_Lenient):
    resourceName: str
    metadata: PersonMetadata = Field(default_factory=PersonMetadata)
    names: list[PersonName] = Field(default_factory=list)
    emailAddresses: list[PersonValue] = Field(default_factory=list)
    phoneNumbers: list[PersonValue] = Field(default_factory=list)
    organizations: list[PersonOrganization] = Field(default_factory=list)


CalendarDate = date  # a field below is called `date`, which would shadow the type inside the class body


class EventTime(_Lenient):
    date: CalendarDate | None = None  # all-day events
    dateTime: datetime | None = None


class EventPerson(_Lenient):
    email: str | None = None


class EventAttendee(_Lenient):
    email: str | None = None
    displayName: str | None = None
    organizer: bool = False
    responseStatus: str | None = None  # needsAction | declined | tentative | accepted


class CalendarEvent(_Lenient):
    id: str
    attendees: list[EventAttendee] = Field(default_factory=list)
    status: str | None = None
    summary: str | None = None
    location: str | None = None
    organizer: EventPerson | None = None
    start: EventTime | None = None  # Google only guarantees `id` on a cancelled event
    end: EventTime | None = None
    created: datetime | None = None
    updated: datetime | None = None


_USERS = TypeAdapter(list[DirectoryUser])
_PEOPLE = TypeAdapter(list[Person])
_EVENTS = TypeAdapter(list[CalendarEvent])


# --- pure mappers --------------------------------------------------------------------------------------------------


_Entry = TypeVar("_Entry", PersonName, PersonValue, PersonOrganization)


def _primary(items: list[_Entry]) -> _Entry | None:
    """The entry Google marks primary, else the first one."""
    return next((item for item in items if item.metadata.primary), items[0] if items else None)


def to_user(raw: DirectoryUser, connection_id: str) -> UserRecord:
    organization = next((org for org in raw.organizations if org.primary), None) or (
        raw.organizations[0] if raw.organizations else None
    )
    deleted = raw.deletionTime is not None
    return UserRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=text_or_none(raw.primaryEmail),
        first_name=text_or_none(raw.name.givenName),
        last_name=text_or_none(raw.name.familyName),
        title=text_or_none(organization.title) if organization else None,
        is_active=not (raw.suspended or raw.archived or deleted),
        created_at=as_utc(raw.creationTime),
        modified_at=as_utc(raw.deletionTime),  # Directory exposes no modification time; a deletion is one
        is_deleted=deleted,
        raw=raw_json(raw),
    )


def to_contact(raw: Person, connection_id: str) -> ContactRecord:
    name, email = _primary(raw.names), _primary(raw.emailAddresses)
    phone, organization = _primary(raw.phoneNumbers), _primary(raw.organizations)
    updates = [source.updateTime for source in raw.metadata.sources if source.updateTime is not None]
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.resourceName,
        email=text_or_none(email.value) if email else None,
        first_name=text_or_none(name.givenName) if name else None,
        last_name=text_or_none(name.familyName) if name else None,
        phone=text_or_none(phone.value) if phone else None,
        company=text_or_none(organization.name) if organization else None,
        job_title=text_or_none(organization.title) if organization else None,
        created_at=None,  # People does not expose when a contact was created
        modified_at=as_utc(max(updates)) if updates else None,
        is_deleted=raw.metadata.deleted,
        raw=raw_json(raw),
    )


def _event_instant(moment: EventTime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.dateTime is not None:
        return moment.dateTime.astimezone(UTC)
    if moment.date is not None:
        return utc_midnight(moment.date)
    return None


def to_event(raw: CalendarEvent, connection_id: str, *, fallback_start: datetime | None = None) -> EventRecord:
    """`fallback_start` stands in for a cancelled event Google returned without its times (it only guarantees the
    id): the reader passes the start of the day it asked about, so the deletion lands in that partition."""
    start = _event_instant(raw.start) or fallback_start
    if start is None:
        raise ProviderError(f"Google Calendar event {raw.id} has no start time")
    return EventRecord(
        connection_id=connection_id,
        source_id=raw.id,
        title=text_or_none(raw.summary),
        organizer_email=text_or_none(raw.organizer.email) if raw.organizer else None,
        start_at=start,
        end_at=_event_instant(raw.end),
        is_all_day=raw.start is not None and raw.start.date is not None,
        location=text_or_none(raw.location),
        created_at=as_utc(raw.created),
        modified_at=as_utc(raw.updated),
        is_deleted=raw.status == "cancelled",
        raw=raw_json(raw),
    )


# --- the client ----------------------------------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class GoogleClient(ApiClient):
    """One connection's Google APIs. Given SPEC's default origin it calls each API on its real host; given any
    other origin (a sandbox) it sends all three APIs there."""

    def __init__(
        self,
        api_origin: str,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        origin = api_origin.rstrip("/")
        real = origin == API_BASE_URL
        self.users_url = (DIRECTORY_ORIGIN if real else origin) + "/admin/directory/v1/users"
        self.connections_url = (PEOPLE_ORIGIN if real else origin) + "/v1/people/me/connections"
        self.events_url = (CALENDAR_ORIGIN if real else origin) + "/calendar/v3/calendars/primary/events"
        super().__init__(origin, auth=auth, retry=retry, sleep=sleep)

    def is_rate_limited(self, response: httpx.Response) -> bool:
        """Google signals most per-user limits as 403 with a rate-limit reason; any other 403 is final."""
        return response.status_code == 403 and bool(error_reasons(response) & RATE_LIMIT_REASONS)

    def raise_for_status(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 410 or (
            response.status_code == 400 and error_reasons(response) & CURSOR_EXPIRED_REASONS
        ):
            raise CursorExpired(
                f"{response.request.method} {response.request.url.path}: Google no longer accepts the cursor "
                f"({', '.join(sorted(error_reasons(response))) or response.status_code})",
                status_code=response.status_code,
            )
        return super().raise_for_status(response)

    def iter_users(self, *, deleted: bool = False) -> Iterator[list[DirectoryUser]]:
        """Every live user (or every user deleted in the last 20 days, which Directory still lists)."""
        params: list[tuple[str, Any]] = [
            ("customer", "my_customer"),
            ("maxResults", USERS_PAGE_SIZE),
            ("orderBy", "email"),
            ("projection", "full"),
        ]
        if deleted:
            params.append(("showDeleted", "true"))
        for page in PAGINATOR.pages(self, "GET", self.users_url, params=params):
            yield _USERS.validate_python(page.get("users", []))

    def iter_connections(
        self, sync_token: str | None, mask: str = PERSON_FIELDS
    ) -> Iterator[tuple[list[Person], str | None]]:
        """Every contact (sync_token None) or the changes since the token, deletions included; each page comes
        with the nextSyncToken that only the last page carries. `mask` is the `personFields` asked for."""
        params: list[tuple[str, Any]] = [
            ("personFields", mask),
            ("pageSize", CONNECTIONS_PAGE_SIZE),
            ("requestSyncToken", "true"),
        ]
        if sync_token is not None:
            params.append(("syncToken", sync_token))
        for page in PAGINATOR.pages(self, "GET", self.connections_url, params=params):
            yield _PEOPLE.validate_python(page.get("connections", [])), page.get("nextSyncToken")

    def iter_events(
        self, window: tuple[datetime, datetime], *, updated_min: datetime | None = None
    ) -> Iterator[list[CalendarEvent]]:
        """Events overlapping the window (Calendar's timeMin bounds the end, timeMax the start), cancelled ones
        included; with `updated_min`, only those changed since then."""
        params: list[tuple[str, Any]] = [
            ("timeMin", _rfc3339(window[0])),
            ("timeMax", _rfc3339(window[1])),
            ("singleEvents", "true"),
            ("showDeleted", "true"),
            ("maxResults", EVENTS_PAGE_SIZE),
        ]
        if updated_min is not None:
            params.append(("updatedMin", _rfc3339(updated_min)))
        for page in PAGINATOR.pages(self, "GET", self.events_url, params=params):
            yield _EVENTS.validate_python(page.get("items", []))


GOOGLE_RESPONSES = {
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "tentative",
    "needsAction": "needs_action",
}


def to_attendees(raw: CalendarEvent, event: EventRecord) -> list[AttendeeRecord]:
    """`attendees[]` as Calendar lists them (the organizer is among them, flagged `organizer`)."""
    people = ((a.email, a.displayName, a.responseStatus, a.organizer) for a in raw.attendees)
    return attendee_records(event, people, GOOGLE_RESPONSES)


# --- readers -------------------------------------------------------------------------------------------------------


def read_users(client: GoogleClient, request: SyncRequest) -> Iterator[Page]:
    """Always a full read (Directory has no modified filter): live users, then recently deleted ones flagged
    is_deleted; users gone for good simply vanish, which the asset reconciles. The cursor stays None."""
    for deleted in (False, True):
        for users in client.iter_users(deleted=deleted):
            yield Page([to_user(user, request.connection_id) for user in users])
    yield Page([], cursor=None)


def read_contacts(client: GoogleClient, request: SyncRequest) -> Iterator[Page]:
    """Full: every contact, ending with a People sync token. Incremental: the changes since that token, deleted
    contacts as is_deleted records. An expired token (7 days) raises CursorExpired.

    A sync-token request must repeat the first call's parameters, so the cursor keeps the `personFields` its round
    began with (cursors from before it was kept began with PERSON_FIELDS); a catalog change reaches the mask at the
    next full read."""
    state = json.loads(request.cursor) if request.cursor else {}
    mask = str(state.get("person_fields") or PERSON_FIELDS) if state else person_fields(request.fields)
    next_sync_token: str | None = None
    for people, page_sync_token in client.iter_connections(state.get("sync_token"), mask):
        next_sync_token = page_sync_token or next_sync_token
        yield Page([to_contact(person, request.connection_id) for person in people])
    cursor = {"sync_token": next_sync_token, "person_fields": mask}
    yield Page([], cursor=json.dumps(cursor) if next_sync_token else None)


def read_events(client: GoogleClient, request: SyncRequest) -> Iterator[Page]:
    """The events starting in the request's UTC day. Calendar's syncToken cannot be combined with timeMin/timeMax,
    so day partitions use a timestamp cursor as `updatedMin` (which always returns deletions since then)."""
    if request.window is None:
        raise ValueError("Google Calendar events are read one day partition at a time")
    window_start = request.window[0]
    for events in client.iter_events(request.window, updated_min=modified_since(request)):
        mapped = [(event, to_event(event, request.connection_id, fallback_start=window_start)) for event in events]
        yield day_page(mapped, request.window, to_attendees)
    yield Page([], cursor=timestamp_cursor(request.started_at))


# --- OAuth hooks ---------------------------------------------------------------------------------------------------


def _oauth_url(api: ApiClient, path: str) -> str:
    """On the real origin, OAuth calls go to oauth2.googleapis.com; a sandbox serves them on its own origin."""
    return OAUTH_ORIGIN + path if str(api.http.base_url).rstrip("/") == API_BASE_URL else path


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    """Google's tokeninfo, asked the way its own client libraries do (POST, token in the Authorization header):
    the granted scopes, and the user's id and email when an identity scope was granted."""
    try:
        response = api.request(
            "POST", _oauth_url(api, "/tokeninfo"), headers={"Authorization": f"Bearer {access_token}"}
        )
        info = response.json()
    except ProviderError as error:
        raise ProviderError("Google did not describe the new token", status_code=error.status_code) from None
    scopes = str(info.get("scope") or "").split()
    return AccountInfo(
        external_account_id=info.get("sub"),
        granted_scopes=scopes or None,
        metadata={"email": info["email"]} if info.get("email") else {},
    )


def _revoke(api: ApiClient, tokens: TokenSet, endpoints: OAuthEndpoints) -> bool:
    """Revoking the refresh token ends the whole grant (and its access tokens); the token goes in the form body."""
    secret = tokens.refresh_token or tokens.access_token
    response = api.request(
        "POST", _oauth_url(api, "/revoke"), data={"token": secret.get_secret_value()}, check_status=False
    )
    return response.status_code == 200


def _build_client(api_origin: str, auth: httpx.Auth, _metadata: Any) -> GoogleClient:
    return GoogleClient(api_origin, auth=auth)


SPEC = ProviderSpec(
    name="google",
    display_name="Google Workspace",
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url=OAUTH_ORIGIN + "/token",
    api_base_url=API_BASE_URL,
    default_scopes=("openid", "email", DIRECTORY_SCOPE, CONTACTS_SCOPE, CALENDAR_SCOPE, USERSCHEMA_SCOPE),
    sandbox_authorize_path="/o/oauth2/v2/auth",
    sandbox_token_path="/token",
    # offline + consent: a refresh token on every connect; include_granted_scopes: a later grant (Directory) keeps
    # the earlier ones (Calendar), and the token response's `scope` lists the union.
    extra_authorize_params=(("access_type", "offline"), ("include_granted_scopes", "true"), ("prompt", "consent")),
    refresh_tokens_rotate=False,  # a refresh answers with an access token only; the refresh token stays
    describe_account=_describe_account,
    revoke=_revoke,
    build_client=_build_client,
)

ENTITIES = (
    EntitySpec(provider="google", entity="users", columns=USER_COLUMNS, read=read_users),
    EntitySpec(provider="google", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),
    EntitySpec(provider="google", entity="events", columns=EVENT_COLUMNS, read=read_events, partitioned_by_day=True),
)
