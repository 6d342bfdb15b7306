"""HubSpot CRM v3: OAuth spec, raw models, the connectors for users (owners), contacts and events (meetings) and
their pure mappers.

Contacts and meetings are both CRM objects read the same way (list, search with the 10,000-result cap, archived
list), so one set of client methods serves both, parameterized by a `CrmObjectType`; only the mappers differ.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from integrations_pipeline.clients.cursors import CURSOR_OVERLAP, modified_since, timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired, ProviderError
from integrations_pipeline.clients.field_requests import fit_budget
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.pagination import CursorPaginator
from integrations_pipeline.clients.spec import (
    AccountInfo,
    EntitySpec,
    OAuthEndpoints,
    Page,
    ProviderSpec,
    SyncRequest,
)
from integrations_pipeline.clients.values import Invitee, as_utc, attendee_records, raw_json, text_or_none
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

PAGE_LIMIT = 100  # the list endpoint's maximum
OWNER_PAGE_LIMIT = 500  # the owners endpoint's maximum
SEARCH_PAGE_LIMIT = 100
SEARCH_RESULT_CAP = 10_000  # HubSpot search answers no more than this per query: split the window instead
# HubSpot purges deleted (archived) records 90 days after the delete. An incremental cursor older than that could
# miss deletions that are no longer listed anywhere, so it is stale: a full resync reconciles them instead.
DELETED_RECORD_RETENTION = timedelta(days=90)
# The archived list has no modified-since filter and is ordered by id, so a contact deleted today can sit on any
# page: finding it costs a read of every archived contact. Incremental syncs read it only when the live count says
# something was archived, and at least this often, which bounds how late a deletion the count missed can land.
ARCHIVED_SWEEP_INTERVAL = timedelta(days=1)
CONTACT_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    "createdate",
    "lastmodifieddate",
)
MEETING_START_PROPERTY = "hs_meeting_start_time"
MEETING_PROPERTIES = (
    "hs_meeting_title",
    MEETING_START_PROPERTY,
    "hs_meeting_end_time",
    "hs_meeting_location",
    "hs_meeting_outcome",
    "hubspot_owner_id",
    "hs_attendee_owner_ids",
    "hs_createdate",
    "hs_lastmodifieddate",
)
LIST_PAGINATOR = CursorPaginator(path=("paging", "next", "after"), param="after")
SEARCH_PAGINATOR = CursorPaginator(path=("paging", "next", "after"), param="after", in_body=True)
OWNERS_PATH = "/crm/v3/owners/"  # with the trailing slash, as HubSpot documents it and the SDK sends it
# Meetings' attending contacts: the search API returns no associations, so each page of meetings asks the v4
# associations batch read (up to 1,000 meetings a call), then reads the contacts not seen yet in batches of 100.
MEETING_CONTACTS_PATH = "/crm/v4/associations/meetings/contacts/batch/read"
ASSOCIATIONS_BATCH = 1_000
BATCH_READ = 100  # ids per `POST /crm/v3/objects/{type}/batch/read`
# URL-encoded bytes of `properties` one list request names. HubSpot refuses a longer URI with 414 somewhere near
# 16 KB (undocumented; accounts with several hundred custom properties meet it), so the properties past this budget
# are batch-read by id, where they travel in the body.
LIST_PROPERTIES_BUDGET = 8_000
ATTENDEE_CONTACT_PROPERTIES = ("email", "firstname", "lastname")


@dataclass(frozen=True)
class CrmObjectType:
    """What differs between the CRM objects we read: the path segment, the properties to fetch, and which
    property holds the last modification (contacts `lastmodifieddate`, every other object `hs_lastmodifieddate`)."""

    name: str
    properties: tuple[str, ...]
    modified_property: str

    @property
    def path(self) -> str:
        return f"/crm/v3/objects/{self.name}"

    def requesting(self, request: SyncRequest) -> CrmObjectType:
        """Our properties plus every property of the connection's catalog (custom ones included)."""
        return replace(self, properties=tuple(dict.fromkeys((*self.properties, *request.fields))))


CONTACTS = CrmObjectType("contacts", CONTACT_PROPERTIES, "lastmodifieddate")
MEETINGS = CrmObjectType("meetings", MEETING_PROPERTIES, "hs_lastmodifieddate")


class HubSpotObject(BaseModel):
    """Lenient: unknown fields are ignored, property values stay strings as HubSpot sends them."""

    model_config = ConfigDict(extra="allow")

    id: str
    properties: dict[str, str | None]
    createdAt: datetime | None = None
    updatedAt: datetime
    archived: bool = False
    archivedAt: datetime | None = None


class HubSpotOwner(BaseModel):
    """An owner (HubSpot's user as the CRM sees it); `userId` is null once the user is deactivated."""

    model_config = ConfigDict(extra="allow")

    id: str
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    userId: int | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    archived: bool = False
    teams: list[dict[str, Any]] = Field(default_factory=list)


class _ObjectsPage(TypedDict, total=False):
    results: list[HubSpotObject]
    total: int
    paging: dict[str, Any]


class _OwnersPage(TypedDict, total=False):
    results: list[HubSpotOwner]
    paging: dict[str, Any]


# Pages are parsed and validated from the raw body in one pass (twice as fast as json.loads, then validation).
_OBJECTS_PAGE = TypeAdapter(_ObjectsPage)
_OWNERS_PAGE = TypeAdapter(_OwnersPage)


def parse_instant(value: str | None) -> datetime | None:
    """A datetime property's value: ISO 8601 (HubSpot's output) or epoch milliseconds (what callers may write)."""
    if not value:
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    return as_utc(datetime.fromisoformat(text))


def _modified_at(raw: HubSpotObject) -> datetime:
    deleted_at = raw.archivedAt if raw.archived else None
    return max(raw.updatedAt, deleted_at) if deleted_at else raw.updatedAt


def to_contact(raw: HubSpotObject, connection_id: str) -> ContactRecord:
    properties = raw.properties
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=properties.get("email"),
        first_name=properties.get("firstname"),
        last_name=properties.get("lastname"),
        phone=properties.get("phone"),
        company=properties.get("company"),
        job_title=properties.get("jobtitle"),
        created_at=raw.createdAt,
        modified_at=_modified_at(raw),
        is_deleted=raw.archived,
        raw=raw_json(raw),
    )


def to_user(raw: HubSpotOwner, connection_id: str) -> UserRecord:
    """Owners carry no job title; an archived owner is a deactivated (removed) user."""
    return UserRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=text_or_none(raw.email),
        first_name=text_or_none(raw.firstName),
        last_name=text_or_none(raw.lastName),
        title=None,
        is_active=not raw.archived,
        created_at=raw.createdAt,
        modified_at=raw.updatedAt,
        is_deleted=raw.archived,
        raw=raw_json(raw),
    )


def to_event(raw: HubSpotObject, connection_id: str, owner_emails: Mapping[str, str] | None = None) -> EventRecord:
    """A meeting as an event. HubSpot has no all-day flag: a meeting from midnight UTC lasting whole days counts
    as all-day. The organizer is the meeting's owner, looked up in `owner_emails` (owner id -> email)."""
    properties = raw.properties
    start_at = parse_instant(properties.get(MEETING_START_PROPERTY))
    end_at = parse_instant(properties.get("hs_meeting_end_time"))
    whole_days = (
        start_at is not None
        and end_at is not None
        and end_at > start_at
        and start_at.timetz().replace(tzinfo=None) == datetime.min.time()
        and (end_at - start_at) % timedelta(days=1) == timedelta(0)
    )
    owner_id = properties.get("hubspot_owner_id")
    return EventRecord(
        connection_id=connection_id,
        source_id=raw.id,
        title=text_or_none(properties.get("hs_meeting_title")),
        organizer_email=(owner_emails or {}).get(owner_id) if owner_id else None,
        # A meeting always has a start in practice; the creation time keeps the required column filled if not.
        start_at=start_at or raw.createdAt or raw.updatedAt,
        end_at=end_at,
        is_all_day=whole_days,
        location=text_or_none(properties.get("hs_meeting_location")),
        created_at=raw.createdAt,
        modified_at=_modified_at(raw),
        is_deleted=raw.archived,
        raw=raw_json(raw),
    )


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def range_filters(property_name: str, low: datetime, high: datetime) -> list[dict[str, str]]:
    """Search filters for low <= property < high."""
    return [
        {"propertyName": property_name, "operator": "GTE", "value": _ms(low)},
        {"propertyName": property_name, "operator": "LT", "value": _ms(high)},
    ]


def split_properties(
    properties: Sequence[str], budget: int = LIST_PROPERTIES_BUDGET
) -> tuple[Sequence[str], Sequence[str]]:
    """The properties one list request names within `budget` URL-encoded bytes (ours come first in the list, so
    they always fit), and the rest (batch-read: their bodies have no such limit)."""
    listed, groups = fit_budget((), properties, budget, lambda name: len(quote(name, safe="")) + len("%2C"))
    return listed, [name for group in groups for name in group]


class HubSpotClient(ApiClient):
    rate_limit_header_prefixes = ("x-hubspot-ratelimit",)

    # --- any CRM object ---

    def iter_objects(self, object_type: CrmObjectType, *, archived: bool = False) -> Iterator[list[HubSpotObject]]:
        """Every live (or every archived) object of the type, a page at a time, with every property asked for:
        those past the URI's budget are batch-read for the page's ids and folded in."""
        listed, rest = split_properties(object_type.properties)
        # one comma-separated value, as documented: shorter than repeating `properties=`
        params = [
            ("limit", PAGE_LIMIT),
            ("archived", "true" if archived else "false"),
            ("properties", ",".join(listed)),
        ]
        for page in LIST_PAGINATOR.pages(
            self, "GET", object_type.path, params=params, parse=_OBJECTS_PAGE.validate_json
        ):
            objects = page.get("results", [])
            if rest and objects:
                found = self.batch_read(object_type.path, [item.id for item in objects], rest, archived=archived)
                by_id = {item.id: item for item in found}
                for item in objects:
                    if item.id in by_id:  # else archived or purged since the list: the next sync sees it
                        item.properties.update(by_id[item.id].properties)
            yield objects

    def iter_search(
        self,
        object_type: CrmObjectType,
        *,
        split_property: str,
        low: datetime,
        high: datetime,
        filters: Sequence[Mapping[str, str]] = (),
    ) -> Iterator[list[HubSpotObject]]:
        """Live objects with low <= split_property < high (and `filters`), sorted by split_property. Wherever a
        query would exceed the search API's 10,000-result cap, the range is halved and each half read in turn."""
        body = self._search_body(object_type, split_property, low, high, filters)
        pages = SEARCH_PAGINATOR.pages(
            self, "POST", f"{object_type.path}/search", json=body, parse=_OBJECTS_PAGE.validate_json
        )
        first = next(pages)
        if first.get("total", 0) > SEARCH_RESULT_CAP and high - low > timedelta(milliseconds=1):
            pages.close()
            middle = low + (high - low) / 2
            yield from self.iter_search(
                object_type, split_property=split_property, low=low, high=middle, filters=filters
            )
            yield from self.iter_search(
                object_type, split_property=split_property, low=middle, high=high, filters=filters
            )
            return
        for page in itertools.chain([first], pages):
            yield page.get("results", [])

    def count_live(self, object_type: CrmObjectType) -> int:
        """How many live objects of the type there are now: the `total` of a search without filters (one call)."""
        body = {"filterGroups": [], "properties": ["hs_object_id"], "limit": 1}
        page = _OBJECTS_PAGE.validate_json(self.request("POST", f"{object_type.path}/search", json=body).content)
        return page.get("total", 0)

    def iter_archived_since(self, object_type: CrmObjectType, since: datetime) -> Iterator[list[HubSpotObject]]:
        """Objects archived at or after `since` (the list endpoint has no server-side filter for it)."""
        for page in self.iter_objects(object_type, archived=True):
            recent = [item for item in page if item.archivedAt is None or item.archivedAt >= since]
            if recent:
                yield recent

    @staticmethod
    def _search_body(
        object_type: CrmObjectType,
        split_property: str,
        low: datetime,
        high: datetime,
        filters: Sequence[Mapping[str, str]] = (),
    ) -> dict[str, Any]:
        return {
            "filterGroups": [{"filters": [*range_filters(split_property, low, high), *map(dict, filters)]}],
            "sorts": [{"propertyName": split_property, "direction": "ASCENDING"}],
            "properties": list(object_type.properties),
            "limit": SEARCH_PAGE_LIMIT,
        }

    # --- owners ---

    def iter_owners(self, *, archived: bool = False) -> Iterator[list[HubSpotOwner]]:
        """Every active (or every archived) owner, a page at a time; the API has no modified filter."""
        params = [("limit", OWNER_PAGE_LIMIT), ("archived", "true" if archived else "false")]
        for page in LIST_PAGINATOR.pages(self, "GET", OWNERS_PATH, params=params, parse=_OWNERS_PAGE.validate_json):
            yield page.get("results", [])

    def associated_contacts(self, meeting_ids: Sequence[str]) -> dict[str, list[str]]:
        """Meeting id -> its contacts' ids (meetings without contacts are absent: HubSpot answers them with a
        NO_ASSOCIATIONS_FOUND error in a 207), following each meeting's own `paging.next.after`."""
        contacts: dict[str, list[str]] = {}
        pending = [{"id": meeting_id} for meeting_id in meeting_ids]
        while pending:
            batch, pending = pending[:ASSOCIATIONS_BATCH], pending[ASSOCIATIONS_BATCH:]
            answer = self.request("POST", MEETING_CONTACTS_PATH, json={"inputs": batch}).json()
            for result in answer.get("results") or []:
                meeting_id = str(result["from"]["id"])
                contacts.setdefault(meeting_id, []).extend(str(to["toObjectId"]) for to in result.get("to") or [])
                after = ((result.get("paging") or {}).get("next") or {}).get("after")
                if after:
                    pending.append({"id": meeting_id, "after": after})
        return contacts

    def batch_read(
        self, path: str, ids: Sequence[str], properties: Sequence[str], *, archived: bool = False
    ) -> list[HubSpotObject]:
        """The live (or archived) objects among these ids with these properties (the rest, in the other state or
        gone, are a 207's errors), 100 per call."""
        found: list[HubSpotObject] = []
        for start in range(0, len(ids), BATCH_READ):
            body = {
                "properties": list(properties),
                "propertiesWithHistory": [],
                "inputs": [{"id": object_id} for object_id in ids[start : start + BATCH_READ]],
            }
            params = {"archived": "true" if archived else "false"}
            answer = self.request("POST", f"{path}/batch/read", params=params, json=body)
            found += _OBJECTS_PAGE.validate_json(answer.content).get("results", [])
        return found

    def read_contacts(self, contact_ids: Sequence[str]) -> list[HubSpotObject]:
        """The live contacts among these ids, with what an attendee needs."""
        return self.batch_read(CONTACTS.path, contact_ids, ATTENDEE_CONTACT_PROPERTIES)

    def owner_emails(self) -> dict[str, str]:
        """Owner id -> email for every owner, archived ones included (old meetings keep their owner)."""
        owners = itertools.chain(self.iter_owners(), self.iter_owners(archived=True))
        return {owner.id: owner.email for page in owners for owner in page if owner.email}


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    # The token travels in the path here, so failures are reported without the URL.
    try:
        info = api.get_json(f"/oauth/v1/access-tokens/{access_token}")
    except ProviderError as error:
        raise ProviderError("HubSpot did not describe the new token", status_code=error.status_code) from None
    return AccountInfo(
        external_account_id=str(info["hub_id"]) if "hub_id" in info else None,
        granted_scopes=list(info.get("scopes") or []) or None,
        metadata={"hub_domain": info["hub_domain"]} if info.get("hub_domain") else {},
    )


def _revoke(api: ApiClient, tokens: TokenSet, endpoints: OAuthEndpoints) -> bool:
    if tokens.refresh_token is None:
        return False
    try:
        api.request("DELETE", f"/oauth/v1/refresh-tokens/{tokens.refresh_token.get_secret_value()}")
    except ProviderError:
        return False
    return True


def _incremental_since(request: SyncRequest) -> datetime | None:
    """Where an incremental window starts (None for a full sync); a cursor too old to see every deletion since
    raises CursorExpired."""
    since = modified_since(request)
    if since is not None and request.started_at - since > DELETED_RECORD_RETENTION:
        raise CursorExpired(
            f"the cursor starts at {since.isoformat()}, before the {DELETED_RECORD_RETENTION.days} days HubSpot "
            "keeps deleted records: a full resync is due"
        )
    return since


def _read_day(
    client: HubSpotClient,
    request: SyncRequest,
    object_type: CrmObjectType,
    to_page: Callable[[list[HubSpotObject]], Page],
    window_property: str,
) -> Iterator[Page]:
    """Objects whose `window_property` falls in the request's day: the search API over the window (and,
    incrementally, modified in [since, started_at)), then the archived objects (since the cursor) in the window."""
    assert request.window is not None, "a day-partitioned read always has its day's window"
    since = _incremental_since(request)
    start, end = request.window
    modified = () if since is None else range_filters(object_type.modified_property, since, request.started_at)
    live = client.iter_search(object_type, split_property=window_property, low=start, high=end, filters=modified)
    archived = (
        client.iter_objects(object_type, archived=True)
        if since is None
        else client.iter_archived_since(object_type, since)
    )
    for page in itertools.chain(live, _within(archived, window_property, start, end)):
        yield to_page(page)
    yield Page([], cursor=timestamp_cursor(request.started_at))


def _within(
    pages: Iterator[list[HubSpotObject]], property_name: str, start: datetime, end: datetime
) -> Iterator[list[HubSpotObject]]:
    for page in pages:
        kept = [
            item
            for item in page
            if (moment := parse_instant(item.properties.get(property_name))) is not None and start <= moment < end
        ]
        if kept:
            yield kept


@dataclass(frozen=True)
class _ArchivedState:
    """What a contacts cursor keeps beside its window start: when the archived list was last read in full
    (`swept_at`, a sync's started_at) and how many live contacts there were at the start of that sync."""

    swept_at: datetime
    live: int

    @staticmethod
    def of(cursor: str | None) -> _ArchivedState | None:
        """None for a full sync, and for a cursor written before this state existed (its next sync sweeps)."""
        fields = json.loads(cursor) if cursor else {}
        if "archived_swept_at" not in fields or "live_contacts" not in fields:
            return None
        return _ArchivedState(datetime.fromisoformat(fields["archived_swept_at"]), int(fields["live_contacts"]))


def read_contacts(client: HubSpotClient, request: SyncRequest) -> Iterator[Page]:
    """Full: every live then every archived contact. Incremental: the search API over [since, started_at), then,
    only when a deletion may have happened, the contacts archived since the last full read of the archived list.

    The archived list can't be filtered (and search never returns archived objects), so an incremental sync first
    counts the live contacts (one search call). Deletions lower that count and nothing else does except a contact
    that stops being live; creations raise it, and each one created since the previous sync began is in this
    window's search results. So a count below previous + created proves a deletion and the archived list is read;
    at or above it, it is read only once ARCHIVED_SWEEP_INTERVAL has passed since it last was (a restore or a
    back-dated import in the same window can hide a deletion from the count: the sweep bounds how late it lands).
    """
    since = _incremental_since(request)
    state = None if since is None else _ArchivedState.of(request.cursor)
    if state is not None and request.started_at - (state.swept_at - CURSOR_OVERLAP) > DELETED_RECORD_RETENTION:
        raise CursorExpired(
            f"the archived contacts were last read at {state.swept_at.isoformat()}, before the "
            f"{DELETED_RECORD_RETENTION.days} days HubSpot keeps deleted records: a full resync is due"
        )
    live_now = client.count_live(CONTACTS)  # first: a contact created after the count is in the next window
    contacts = CONTACTS.requesting(request)  # our properties and the catalog's

    def records(page: list[HubSpotObject]) -> list[Mapping[str, Any]]:
        return [to_contact(contact, request.connection_id) for contact in page]

    swept_at = request.started_at
    if since is None:
        for page in itertools.chain(client.iter_objects(contacts), client.iter_objects(contacts, archived=True)):
            yield Page(records(page))
    else:
        created = 0
        previous_start = since + CURSOR_OVERLAP  # the previous sync's started_at
        live = client.iter_search(
            contacts, split_property=contacts.modified_property, low=since, high=request.started_at
        )
        for page in live:
            created += sum(1 for contact in page if contact.createdAt and contact.createdAt >= previous_start)
            yield Page(records(page))
        if (
            state is not None
            and live_now >= state.live + created
            and request.started_at - state.swept_at < ARCHIVED_SWEEP_INTERVAL
        ):
            swept_at = state.swept_at  # no deletion to find: the archived list is left unread
        else:
            sweep_since = since if state is None else state.swept_at - CURSOR_OVERLAP
            for page in client.iter_archived_since(contacts, sweep_since):
                yield Page(records(page))
    yield Page(
        [],
        cursor=timestamp_cursor(
            request.started_at, archived_swept_at=swept_at.astimezone(UTC).isoformat(), live_contacts=live_now
        ),
    )


def read_users(client: HubSpotClient, request: SyncRequest) -> Iterator[Page]:
    """Owners have no modified filter, so every sync reads them all (active, then archived as is_deleted) and
    ends with cursor None: the next sync is a full read again, which also reconciles owners that vanished."""
    for page in itertools.chain(client.iter_owners(), client.iter_owners(archived=True)):
        yield Page([to_user(owner, request.connection_id) for owner in page])
    yield Page([], cursor=None)


def _owner_ids(meeting: HubSpotObject) -> list[str]:
    """The meeting's owner, then the owners attending (`hs_attendee_owner_ids`, semicolon-separated)."""
    attending = (meeting.properties.get("hs_attendee_owner_ids") or "").split(";")
    return [owner_id for owner_id in (meeting.properties.get("hubspot_owner_id"), *attending) if owner_id]


def to_attendees(
    raw: HubSpotObject,
    event: EventRecord,
    owner_emails: Mapping[str, str] | None = None,
    contacts: Iterable[HubSpotObject] = (),
) -> list[AttendeeRecord]:
    """The meeting's owner organizes it; `hs_attendee_owner_ids` are the owners attending, `contacts` the contacts
    associated with it. HubSpot records no answer to a meeting (no property per attendee), so attendees' responses
    are "unknown" (the organizer's "accepted")."""
    organizer = raw.properties.get("hubspot_owner_id")
    owners: list[Invitee] = [
        (
            (owner_emails or {}).get(owner_id),
            None,
            "organizer" if owner_id == organizer else None,
            owner_id == organizer,
        )
        for owner_id in _owner_ids(raw)
    ]
    people = [(contact.properties.get("email"), _full_name(contact.properties), None, False) for contact in contacts]
    return attendee_records(event, [*owners, *people], {"organizer": "accepted"})


def _full_name(properties: Mapping[str, str | None]) -> str | None:
    return " ".join(part for part in (properties.get("firstname"), properties.get("lastname")) if part) or None


def read_events(client: HubSpotClient, request: SyncRequest) -> Iterator[Page]:
    """Meetings starting in the request's UTC day (hs_meeting_start_time in [start, end)); incrementally only
    those modified since the cursor, plus the day's meetings archived since. Organizer emails come from one read
    of the owners, made only when a page names an owner, never a call per meeting; attending contacts from one
    associations call per page of live meetings and a batch read of the contacts the read has not seen yet."""
    emails: dict[str, str] | None = None
    contacts: dict[str, HubSpotObject] = {}  # attending contacts read so far, by id

    def to_events(page: list[HubSpotObject]) -> Page:
        nonlocal emails
        if emails is None and any(_owner_ids(meeting) for meeting in page):
            emails = client.owner_emails()
        attending = client.associated_contacts([meeting.id for meeting in page if not meeting.archived])
        unseen = sorted({contact_id for ids in attending.values() for contact_id in ids} - contacts.keys())
        contacts.update((contact.id, contact) for contact in client.read_contacts(unseen))
        events = [(meeting, to_event(meeting, request.connection_id, emails)) for meeting in page]
        return Page(
            [event for _, event in events],
            attendees=[
                person
                for meeting, event in events
                for person in to_attendees(
                    meeting, event, emails, [contacts[i] for i in attending.get(meeting.id, ()) if i in contacts]
                )
            ],
        )

    return _read_day(client, request, MEETINGS.requesting(request), to_events, MEETING_START_PROPERTY)


SPEC = ProviderSpec(
    name="hubspot",
    display_name="HubSpot",
    authorize_url="https://app.hubspot.com/oauth/authorize",
    token_url="https://api.hubapi.com/oauth/v1/token",
    api_base_url="https://api.hubapi.com",
    default_scopes=("oauth", "crm.objects.contacts.read", "crm.objects.owners.read"),
    sandbox_authorize_path="/oauth/authorize",
    sandbox_token_path="/oauth/v1/token",
    refresh_tokens_rotate=False,  # documented: HubSpot refresh tokens do not rotate
    describe_account=_describe_account,
    revoke=_revoke,
    build_client=lambda origin, auth, _metadata: HubSpotClient(origin, auth=auth),
)

ENTITIES = (
    EntitySpec("hubspot", "users", USER_COLUMNS, read_users),
    EntitySpec(provider="hubspot", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),
    EntitySpec("hubspot", "events", EVENT_COLUMNS, read_events, partitioned_by_day=True),
)
