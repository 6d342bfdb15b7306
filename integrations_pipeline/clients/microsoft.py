"""Microsoft 365 (Graph v1.0): OAuth spec, raw models, delta-query readers for users, contacts and events, and
their pure mappers.

Every entity is read with Graph's delta queries: a read without a cursor starts a new round (everything in scope),
pages are followed through `@odata.nextLink` verbatim, and the `@odata.deltaLink` of the round's last page is the
cursor the next incremental read follows. A delta link Graph no longer knows is answered 410 (`SyncStateNotFound`
for Outlook, `resyncRequired` for the directory), which becomes CursorExpired.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field

from integrations_pipeline.clients.errors import CursorExpired, ProviderError
from integrations_pipeline.clients.field_requests import new_fields
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import APP_ONLY, AUTH_MODE
from integrations_pipeline.clients.pagination import NextLinkPaginator
from integrations_pipeline.clients.spec import AccountInfo, EntitySpec, Page, ProviderSpec, SyncRequest
from integrations_pipeline.clients.values import Invitee, attendee_records, raw_json, text_or_none
from integrations_pipeline.records import (
    CONTACT_COLUMNS,
    EVENT_COLUMNS,
    USER_COLUMNS,
    AttendeeRecord,
    ContactRecord,
    EventRecord,
    UserRecord,
)

PAGE_SIZE = 100  # asked for with `Prefer: odata.maxpagesize`; Graph may send fewer
USER_SELECT = "id,givenName,surname,mail,userPrincipalName,jobTitle,accountEnabled,createdDateTime"
CONTACT_SELECT = (
    "id,givenName,surname,emailAddresses,businessPhones,mobilePhone,homePhones,companyName,jobTitle,"
    "createdDateTime,lastModifiedDateTime"
)
USERS_DELTA = "/v1.0/users/delta()"
# Graph returns only the `$select`ed properties (a default handful without it): users and contacts ask for ours and
# every property of the connection's catalog. The delta link keeps the round's `$select`, so a catalog change takes
# effect at the next full round. calendarView delta takes no `$select` and returns whole events.


def select(ours: str, catalog: tuple[str, ...]) -> str:
    """`$select`: our properties, then the catalog's not already among them."""
    names = ours.split(",")
    return ",".join((*names, *new_fields(names, catalog)))


CONTACTS_DELTA = "/v1.0/me/contacts/delta()"
EVENTS_DELTA = "/v1.0/me/calendarView/delta()"
DELTA_PAGINATOR = NextLinkPaginator(path=("@odata.nextLink",))
# Outlook resources answer in the time zone asked for; UTC spares us Windows time-zone names.
OUTLOOK_PREFER = f'odata.maxpagesize={PAGE_SIZE}, outlook.timezone="UTC"'


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Removed(_Lenient):
    reason: str | None = None


class GraphUser(_Lenient):
    id: str
    givenName: str | None = None
    surname: str | None = None
    mail: str | None = None
    userPrincipalName: str | None = None
    jobTitle: str | None = None
    accountEnabled: bool | None = None
    createdDateTime: datetime | None = None
    removed: Removed | None = Field(default=None, alias="@removed")


class EmailAddress(_Lenient):
    name: str | None = None
    address: str | None = None


class GraphContact(_Lenient):
    id: str
    givenName: str | None = None
    surname: str | None = None
    emailAddresses: list[EmailAddress] = Field(default_factory=list)
    businessPhones: list[str] = Field(default_factory=list)
    mobilePhone: str | None = None
    homePhones: list[str] = Field(default_factory=list)
    companyName: str | None = None
    jobTitle: str | None = None
    createdDateTime: datetime | None = None
    lastModifiedDateTime: datetime | None = None
    removed: Removed | None = Field(default=None, alias="@removed")


class DateTimeTimeZone(_Lenient):
    dateTime: str
    timeZone: str | None = None


class Location(_Lenient):
    displayName: str | None = None


class Recipient(_Lenient):
    emailAddress: EmailAddress | None = None


class ResponseStatus(_Lenient):
    response: str | None = None  # none | organizer | tentativelyAccepted | accepted | declined | notResponded


class Attendee(Recipient):
    status: ResponseStatus | None = None


class GraphEvent(_Lenient):
    id: str
    attendees: list[Attendee] = Field(default_factory=list)
    subject: str | None = None
    start: DateTimeTimeZone | None = None
    end: DateTimeTimeZone | None = None
    isAllDay: bool = False
    location: Location | None = None
    organizer: Recipient | None = None
    createdDateTime: datetime | None = None
    lastModifiedDateTime: datetime | None = None
    removed: Removed | None = Field(default=None, alias="@removed")


def graph_datetime(value: DateTimeTimeZone) -> datetime:
    """A `dateTimeTimeZone` as an aware UTC datetime. Graph writes seven fraction digits, which Python 3.11's
    fromisoformat refuses, so the fraction is cut to microseconds first."""
    text = value.dateTime
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        zone_name = value.timeZone or "UTC"
        try:
            zone: Any = UTC if zone_name.upper() in ("UTC", "ETC/UTC") else ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            zone = UTC  # a Windows zone name despite outlook.timezone="UTC": treat as UTC rather than fail the sync
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def to_user(raw: GraphUser, connection_id: str) -> UserRecord:
    """`mail` is empty for accounts without a mailbox, where the sign-in name is the best address there is.
    Graph keeps no modification time on users, so modified_at is None."""
    return UserRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=text_or_none(raw.mail) or text_or_none(raw.userPrincipalName),
        first_name=text_or_none(raw.givenName),
        last_name=text_or_none(raw.surname),
        title=text_or_none(raw.jobTitle),
        is_active=raw.removed is None and raw.accountEnabled is not False,
        created_at=raw.createdDateTime,
        modified_at=None,
        is_deleted=raw.removed is not None,
        raw=raw_json(raw),
    )


def to_contact(raw: GraphContact, connection_id: str) -> ContactRecord:
    phones = [*raw.businessPhones, *([raw.mobilePhone] if raw.mobilePhone else []), *raw.homePhones]
    emails = [email.address for email in raw.emailAddresses if email.address]
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=emails[0] if emails else None,
        first_name=text_or_none(raw.givenName),
        last_name=text_or_none(raw.surname),
        phone=next((phone for phone in phones if phone), None),
        company=text_or_none(raw.companyName),
        job_title=text_or_none(raw.jobTitle),
        created_at=raw.createdDateTime,
        modified_at=raw.lastModifiedDateTime,
        is_deleted=raw.removed is not None,
        raw=raw_json(raw),
    )


def to_event(raw: GraphEvent, connection_id: str) -> EventRecord:
    """A live event; all-day events start at midnight UTC of their date, whatever zone they were written in."""
    if raw.start is None:
        raise ProviderError(f"Graph event {raw.id} has no start")
    end_at: datetime | None
    if raw.isAllDay:
        day = datetime.fromisoformat(raw.start.dateTime[:10]).replace(tzinfo=UTC)
        end_day = datetime.fromisoformat(raw.end.dateTime[:10]).replace(tzinfo=UTC) if raw.end else None
        start_at, end_at = day, (end_day or day + timedelta(days=1))
    else:
        start_at, end_at = graph_datetime(raw.start), graph_datetime(raw.end) if raw.end else None
    organizer = raw.organizer.emailAddress if raw.organizer else None
    return EventRecord(
        connection_id=connection_id,
        source_id=raw.id,
        title=text_or_none(raw.subject),
        organizer_email=text_or_none(organizer.address) if organizer else None,
        start_at=start_at,
        end_at=end_at,
        is_all_day=raw.isAllDay,
        location=text_or_none(raw.location.displayName) if raw.location else None,
        created_at=raw.createdDateTime,
        modified_at=raw.lastModifiedDateTime,
        is_deleted=False,
        raw=raw_json(raw),
    )


def event_tombstone(event_id: str, start_at: datetime, connection_id: str) -> EventRecord:
    """Graph reports a removed event by id alone; the start is what this partition last saw of it."""
    return EventRecord(
        connection_id=connection_id,
        source_id=event_id,
        title=None,
        organizer_email=None,
        start_at=start_at,
        end_at=None,
        is_all_day=False,
        location=None,
        created_at=None,
        modified_at=None,
        is_deleted=True,
        raw=None,
    )


class MicrosoftClient(ApiClient):
    """Graph on its one global origin; a stale delta link raises CursorExpired. An app-only client (client
    credentials, admin-consented) reads the directory; it has no signed-in mailbox, so no contacts or events."""

    def __init__(self, base_url: str, *, app_only: bool = False, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.app_only = app_only

    def raise_for_status(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 410:
            code = _error_code(response)
            raise CursorExpired(
                f"{response.request.method} {response.request.url.path}: Graph answered 410 ({code}): "
                "the delta link is no longer valid",
                status_code=410,
            )
        return super().raise_for_status(response)

    def iter_delta(
        self, start: str, *, params: Mapping[str, str] | None = None, prefer: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Each page's items with, on the round's last page, its delta link (None on every other page).

        `start` is a path (a new round, with `params`) or a stored delta link (followed verbatim)."""
        headers = {"Prefer": prefer} if prefer else None
        for page in DELTA_PAGINATOR.pages(self, start, params=params, headers=headers):
            delta_link = page.get("@odata.deltaLink")
            if not page.get("@odata.nextLink") and not delta_link:
                raise ProviderError(f"Graph ended a delta round on {start.split('?')[0]} without a delta link")
            yield list(page.get("value", [])), delta_link


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no error code"


def read_users(client: MicrosoftClient, request: SyncRequest) -> Iterator[Page]:
    """Full: a new users delta round (live users only). Incremental: the stored delta link (changes, and deletions
    as `@removed`)."""
    first = (USERS_DELTA, {"$select": select(USER_SELECT, request.fields)})
    start, params = (request.cursor, None) if request.cursor else first
    delta_link: str | None = None
    for items, page_delta_link in client.iter_delta(start, params=params):
        delta_link = page_delta_link or delta_link
        yield Page([to_user(GraphUser.model_validate(item), request.connection_id) for item in items])
    yield Page([], cursor=delta_link)


def read_contacts(client: MicrosoftClient, request: SyncRequest) -> Iterator[Page]:
    """The signed-in user's personal contacts, by delta round (full) or delta link (incremental); none for an
    app-only connection, which has no signed-in user."""
    if client.app_only:
        yield Page([], cursor=None)
        return
    first = (CONTACTS_DELTA, {"$select": select(CONTACT_SELECT, request.fields)})
    start, params = (request.cursor, None) if request.cursor else first
    delta_link: str | None = None
    for items, page_delta_link in client.iter_delta(start, params=params, prefer=OUTLOOK_PREFER):
        delta_link = page_delta_link or delta_link
        yield Page([to_contact(GraphContact.model_validate(item), request.connection_id) for item in items])
    yield Page([], cursor=delta_link)


def _graph_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_events(client: MicrosoftClient, request: SyncRequest) -> Iterator[Page]:
    """The events starting in the partition's UTC day, through a calendarView delta round bound to that day.

    The view holds every event overlapping the day, and a removal names only an id, so the cursor carries, with the
    delta link, the start of each event this partition holds: a removal, or an event moved to start on another
    day, becomes a tombstone here only for events that started here; everything else belongs to another day."""
    if request.window is None:
        raise ValueError("Microsoft events are read one UTC day at a time: the request needs a window")
    if client.app_only:  # no signed-in mailbox: an app-only connection reads the directory only
        yield Page([], cursor=None)
        return
    window_start, window_end = request.window
    starts: dict[str, str]
    if request.cursor:
        state = json.loads(request.cursor)
        start, params, starts = state["delta_link"], None, dict(state["starts"])
    else:
        start = EVENTS_DELTA
        params = {"startDateTime": _graph_instant(window_start), "endDateTime": _graph_instant(window_end)}
        starts = {}
    delta_link: str | None = None
    for items, page_delta_link in client.iter_delta(start, params=params, prefer=OUTLOOK_PREFER):
        delta_link = page_delta_link or delta_link
        records: list[Mapping[str, Any]] = []
        attendees: list[Mapping[str, Any]] = []
        for item in items:
            raw = GraphEvent.model_validate(item)
            event = None if raw.removed is not None else to_event(raw, request.connection_id)
            if event is not None and window_start <= event["start_at"] < window_end:
                starts[raw.id] = event["start_at"].isoformat()
                records.append(event)
                attendees.extend(to_attendees(raw, event))
            elif raw.id in starts:  # removed, or now starting on another day: gone from this partition
                previous_start = datetime.fromisoformat(starts.pop(raw.id))
                records.append(event_tombstone(raw.id, previous_start, request.connection_id))
        yield Page(records, attendees=attendees)
    yield Page([], cursor=json.dumps({"delta_link": delta_link, "starts": starts}) if delta_link else None)


GRAPH_RESPONSES = {
    "accepted": "accepted",
    "organizer": "accepted",
    "declined": "declined",
    "tentativelyAccepted": "tentative",
    "notResponded": "needs_action",
    "none": "needs_action",
}


def to_attendees(raw: GraphEvent, event: EventRecord) -> list[AttendeeRecord]:
    """The organizer (Graph keeps it apart from `attendees[]`) first, then `attendees[]` with `status.response`."""
    organizer = raw.organizer.emailAddress if raw.organizer else None
    people: list[Invitee] = [(organizer.address, organizer.name, "organizer", True)] if organizer else []
    for attendee in raw.attendees:
        address = attendee.emailAddress
        response = attendee.status.response if attendee.status else None
        people.append((address.address if address else None, address.name if address else None, response, False))
    return attendee_records(event, people, GRAPH_RESPONSES)


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    """The signed-in user (`GET /v1.0/me`) is the account; the token's scopes come from the token response."""
    try:
        me = api.get_json("/v1.0/me", headers={"Authorization": f"Bearer {access_token}"})
    except ProviderError as error:
        raise ProviderError("Graph did not describe the signed-in user", status_code=error.status_code) from None
    metadata = {key: me[key] for key in ("userPrincipalName", "displayName", "mail") if me.get(key)}
    return AccountInfo(external_account_id=me.get("id"), metadata=metadata)


SPEC = ProviderSpec(
    name="microsoft",
    display_name="Microsoft 365",
    authorize_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
    api_base_url="https://graph.microsoft.com",
    # offline_access is what makes Entra ID issue a refresh token at all.
    default_scopes=("offline_access", "User.Read", "User.Read.All", "Contacts.Read", "Calendars.Read"),
    sandbox_authorize_path="/common/oauth2/v2.0/authorize",
    sandbox_token_path="/common/oauth2/v2.0/token",
    describe_account=_describe_account,
    app_only_scope="https://graph.microsoft.com/.default",
    # No revoke: the identity platform has no per-grant revocation endpoint, and Graph's revokeSignInSessions
    # would sign the user out of every application, not just ours. The tenant removes the app's consent instead.
    revoke=None,
    build_client=lambda origin, auth, metadata: MicrosoftClient(
        origin, auth=auth, app_only=metadata.get(AUTH_MODE) == APP_ONLY
    ),
)

ENTITIES = (
    EntitySpec(provider="microsoft", entity="users", columns=USER_COLUMNS, read=read_users),
    EntitySpec(provider="microsoft", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),
    EntitySpec(provider="microsoft", entity="events", columns=EVENT_COLUMNS, read=read_events, partitioned_by_day=True),
)
