"""Zoho CRM v8: OAuth spec, raw models, pure mappers and the users / contacts / events readers.

Zoho facts this module relies on: data calls go to the `api_domain` of the token response (per data centre), the
header is `Authorization: Zoho-oauthtoken <token>`, scopes are comma-separated, list endpoints answer 204 when
empty and 304 when `If-Modified-Since` matched nothing, `page` alone stops at record 2,000 so records are paged
with `page_token`, and page tokens expire (400 EXPIRED_VALUE). Timestamps come in the org's time zone with an
offset and are converted to UTC here.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import chain
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from integrations_pipeline.clients.cursors import modified_since, timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired, InvalidField, NeedsReauth, ProviderError
from integrations_pipeline.clients.field_requests import merge_by_id, new_fields, pages_dropping_refused
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.pagination import dig, fetched_ahead, peek
from integrations_pipeline.clients.spec import (
    AccountInfo,
    EntitySpec,
    OAuthEndpoints,
    Page,
    ProviderSpec,
    SyncRequest,
)
from integrations_pipeline.clients.values import Invitee, as_utc, attendee_records, raw_json, text_or_none, utc_midnight
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

API_VERSION_PATH = "/crm/v8"
PER_PAGE = 200  # the maximum Zoho allows on every list endpoint used here
SEARCH_PAGE_CAP = 10  # search never serves past record 2,000 (10 pages of 200): split the window instead
# A records request names at most 50 fields and 100 ids: a wider catalog is read in chunks of 50 fields, the first
# with the records' pages and each other one looked up by the page's ids, then merged by id.
MAX_FIELDS = 50
LOOKUP_IDS = 100
CONTACT_FIELDS = ("First_Name", "Last_Name", "Email", "Phone", "Title", "Account_Name", "Created_Time", "Modified_Time")
EVENT_FIELDS = (
    "Event_Title",
    "Start_DateTime",
    "End_DateTime",
    "All_day",
    "Venue",
    "Owner",
    "Participants",
    "Created_Time",
    "Modified_Time",
)
# Zoho searches Start_DateTime as an instant, but an all-day event's instant is local midnight in the org's time
# zone (UTC-12..UTC+14) while its partition is the UTC day of its date: widen the search by the widest offsets and
# keep exactly the day's events after mapping.
ALL_DAY_SEARCH_MARGIN = timedelta(hours=14)
EMPTY_STATUSES = frozenset({204, 304})


# --- raw models ------------------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ZohoLookup(_Lenient):
    id: str | None = None
    name: str | None = None
    email: str | None = None


class ZohoUser(_Lenient):
    id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    status: str | None = None
    created_time: datetime | None = None
    Modified_Time: datetime | None = None


class ZohoContact(_Lenient):
    id: str
    First_Name: str | None = None
    Last_Name: str | None = None
    Email: str | None = None
    Phone: str | None = None
    Title: str | None = None
    Account_Name: ZohoLookup | None = None
    Created_Time: datetime | None = None
    Modified_Time: datetime | None = None


class ZohoParticipant(_Lenient):
    """An entry of an event's `Participants`: a contact, lead, user or bare email address invited to it."""

    Email: str | None = None
    name: str | None = None
    type: str | None = None  # contact | lead | user | email
    participant: str | None = None  # the record's id, or the address for type email
    status: str | None = None  # not_known | accepted | declined | tentative


class ZohoEvent(_Lenient):
    id: str
    Participants: list[ZohoParticipant] | None = None
    Event_Title: str | None = None
    Start_DateTime: datetime
    End_DateTime: datetime | None = None
    All_day: bool | None = None
    Venue: str | None = None
    Owner: ZohoLookup | None = None
    Created_Time: datetime | None = None
    Modified_Time: datetime | None = None


class ZohoDeletedRecord(_Lenient):
    """An entry of `GET /{module}/deleted`: no field values, only the id and when it was deleted."""

    id: str
    deleted_time: datetime
    type: str | None = None


_USERS = TypeAdapter(list[ZohoUser])
_CONTACTS = TypeAdapter(list[ZohoContact])
_EVENTS = TypeAdapter(list[ZohoEvent])
_DELETED = TypeAdapter(list[ZohoDeletedRecord])


# --- pure mappers ---------------------------------------------------------------------------------------------------


def to_user(raw: ZohoUser, connection_id: str) -> UserRecord:
    return UserRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=text_or_none(raw.email),
        first_name=text_or_none(raw.first_name),
        last_name=text_or_none(raw.last_name),
        title=None,  # Zoho users carry a role (a permission level), not a job title
        is_active=raw.status == "active",
        created_at=as_utc(raw.created_time),
        modified_at=as_utc(raw.Modified_Time),
        is_deleted=raw.status == "deleted",
        raw=raw_json(raw),
    )


def to_contact(raw: ZohoContact, connection_id: str) -> ContactRecord:
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=text_or_none(raw.Email),
        first_name=text_or_none(raw.First_Name),
        last_name=text_or_none(raw.Last_Name),
        phone=text_or_none(raw.Phone),
        company=text_or_none(raw.Account_Name.name) if raw.Account_Name else None,
        job_title=text_or_none(raw.Title),
        created_at=as_utc(raw.Created_Time),
        modified_at=as_utc(raw.Modified_Time),
        is_deleted=False,
        raw=raw_json(raw),
    )


def to_deleted_contact(raw: ZohoDeletedRecord, connection_id: str) -> ContactRecord:
    """A tombstone: Zoho's deleted list keeps no field values, so only the id and deletion time survive."""
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=None,
        first_name=None,
        last_name=None,
        phone=None,
        company=None,
        job_title=None,
        created_at=None,
        modified_at=as_utc(raw.deleted_time),
        is_deleted=True,
        raw=raw_json(raw),
    )


def to_event(raw: ZohoEvent, connection_id: str) -> EventRecord:
    """All-day events start at midnight UTC of their local date (Zoho sends local midnight with the org offset)."""
    all_day = bool(raw.All_day)
    if all_day:
        start_at = utc_midnight(raw.Start_DateTime.date())
        end_at = utc_midnight(raw.End_DateTime.date()) if raw.End_DateTime else None
    else:
        start_at = as_utc(raw.Start_DateTime) or raw.Start_DateTime
        end_at = as_utc(raw.End_DateTime)
    return EventRecord(
        connection_id=connection_id,
        source_id=raw.id,
        title=text_or_none(raw.Event_Title),
        organizer_email=text_or_none(raw.Owner.email) if raw.Owner else None,
        start_at=start_at,
        end_at=end_at,
        is_all_day=all_day,
        location=text_or_none(raw.Venue),
        created_at=as_utc(raw.Created_Time),
        modified_at=as_utc(raw.Modified_Time),
        is_deleted=False,
        raw=raw_json(raw),
    )


# --- paging -----------------------------------------------------------------------------------------------------------


def zoho_instant(moment: datetime) -> str:
    """Zoho's ISO 8601 form for headers and criteria: whole seconds with an explicit offset."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class PageTokenPaginator:
    """Zoho's record paging: `info.next_page_token` goes back as `page_token` while `info.more_records` holds.

    Neither shared strategy fits: 204 and 304 answers have no body (an empty result), and `If-Modified-Since`
    must travel with every page."""

    def pages(
        self, api: ApiClient, url: str, *, params: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Each page as a JSON document (fetched ahead)."""
        return fetched_ahead(self._bodies(api, url, params, headers), json.loads)

    def _bodies(
        self, api: ApiClient, url: str, params: Mapping[str, Any], headers: Mapping[str, str] | None
    ) -> Iterator[bytes]:
        token: str | None = None
        while True:
            query = dict(params) | ({"page_token": token} if token else {})
            response = api.request("GET", url, params=query, headers=headers)
            if response.status_code in EMPTY_STATUSES:
                return
            yield response.content
            info = peek(response.content, ("info",)) or {}
            token = info.get("next_page_token")
            if not info.get("more_records") or not token:
                return


@dataclass(frozen=True)
class PageNumberPaginator:
    """`page=1,2,...` while `info.more_records` holds (users, deleted records and search have no page tokens)."""

    max_pages: int | None = None

    def pages(
        self, api: ApiClient, url: str, *, params: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Each page as a JSON document (fetched ahead)."""
        return fetched_ahead(self._bodies(api, url, params, headers), json.loads)

    def _bodies(
        self, api: ApiClient, url: str, params: Mapping[str, Any], headers: Mapping[str, str] | None
    ) -> Iterator[bytes]:
        page_number = 1
        while self.max_pages is None or page_number <= self.max_pages:
            response = api.request("GET", url, params=dict(params) | {"page": page_number}, headers=headers)
            if response.status_code in EMPTY_STATUSES:
                return
            yield response.content
            if not peek(response.content, ("info", "more_records")):
                return
            page_number += 1


RECORD_PAGES = PageTokenPaginator()
NUMBERED_PAGES = PageNumberPaginator()


class SearchCapReached(Exception):
    """A search window holds more than the 2,000 records Zoho will page through."""


# --- client ----------------------------------------------------------------------------------------------------------


class ZohoClient(ApiClient):
    """Zoho CRM on the connection's `api_domain`. Errors keep Zoho's `code` and never the request's query string."""

    rate_limit_header_prefixes = ("x-ratelimit",)

    def raise_for_status(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        code, details = _zoho_error(response)
        where = f"{response.request.method} {response.request.url.path}"
        if code == "INVALID_DATA" and details.get("param_name", "fields") == "fields" and details.get("api_name"):
            field = str(details["api_name"])
            raise InvalidField(f"{where}: Zoho has no field {field!r}", field=field, status_code=response.status_code)
        if code == "EXPIRED_VALUE" and details.get("param_name") == "page_token":
            raise CursorExpired(f"{where}: Zoho's page token expired mid-read", status_code=response.status_code)
        if response.status_code == 401:
            raise NeedsReauth(f"{where}: Zoho refused the token ({code or 'HTTP 401'})", status_code=401)
        raise ProviderError(
            f"{where}: HTTP {response.status_code} {code or ''}: {details}", status_code=response.status_code
        )

    @staticmethod
    def _since_header(since: datetime | None) -> dict[str, str]:
        return {"If-Modified-Since": zoho_instant(since)} if since is not None else {}

    def iter_users(self, user_type: str, since: datetime | None = None) -> Iterator[list[ZohoUser]]:
        params = {"type": user_type, "per_page": PER_PAGE}
        for page in NUMBERED_PAGES.pages(
            self, f"{API_VERSION_PATH}/users", params=params, headers=self._since_header(since)
        ):
            yield _USERS.validate_python(page.get("users") or [])

    def iter_records(
        self, module: str, fields: tuple[str, ...], since: datetime | None = None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[Any]]:
        """Live records (modified at or after `since`), oldest change first, one page of up to 200 at a time, with
        our fields and the catalog's (chunked by MAX_FIELDS; the extra chunks merged in by id)."""
        head, chunks = field_chunks(fields, catalog)
        head_catalog = head[len(fields) :]

        def pages() -> Iterator[dict[str, Any]]:  # reads head_catalog as refusals shrink it
            params = {"fields": ",".join((*fields, *head_catalog)), "per_page": PER_PAGE}
            params |= {"sort_by": "Modified_Time", "sort_order": "asc"}
            url, headers = f"{API_VERSION_PATH}/{module}", self._since_header(since)
            return RECORD_PAGES.pages(self, url, params=params, headers=headers)

        for page in pages_dropping_refused(pages, head_catalog):
            yield self.with_chunks(module, page.get("data") or [], chunks)

    def with_chunks(self, module: str, records: list[dict[str, Any]], chunks: list[list[str]]) -> list[dict[str, Any]]:
        """`records` with the fields of `chunks` looked up by id (LOOKUP_IDS at a time) and merged in."""
        ids = [str(record["id"]) for record in records]
        for chunk in chunks:
            for start in range(0, len(ids), LOOKUP_IDS):
                if not chunk:  # every field of the chunk was refused
                    break
                lookup = partial(self._lookup, module, chunk, ids[start : start + LOOKUP_IDS])
                merge_by_id(records, chain.from_iterable(pages_dropping_refused(lookup, chunk)), "id")
        return records

    def _lookup(self, module: str, fields: list[str], ids: list[str]) -> Iterator[list[dict[str, Any]]]:
        params = {"ids": ",".join(ids), "fields": ",".join(fields)}
        response = self.request("GET", f"{API_VERSION_PATH}/{module}", params=params)
        body = response.json() if response.status_code not in EMPTY_STATUSES and response.content else {}
        return iter([body.get("data") or []])

    def iter_contacts(
        self, since: datetime | None = None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[ZohoContact]]:
        for data in self.iter_records("Contacts", CONTACT_FIELDS, since, catalog):
            yield _CONTACTS.validate_python(data)

    def iter_deleted(self, module: str, since: datetime | None = None) -> Iterator[list[ZohoDeletedRecord]]:
        """Recycle-bin and permanently deleted records (deleted at or after `since`)."""
        params = {"type": "all", "per_page": PER_PAGE}
        url = f"{API_VERSION_PATH}/{module}/deleted"
        for page in NUMBERED_PAGES.pages(self, url, params=params, headers=self._since_header(since)):
            yield _DELETED.validate_python(page.get("data") or [])

    def iter_events_starting(
        self, low: datetime, high: datetime, since: datetime | None = None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[ZohoEvent]]:
        """Events whose Start_DateTime instant is in [low, high] (and modified at or after `since`), via search.

        Search stops at record 2,000: a window holding more is split in halves, so some events may come twice
        (callers dedupe by id)."""
        criteria = f"(Start_DateTime:between:{zoho_instant(low)},{zoho_instant(high)})"
        if since is not None:
            criteria = f"({criteria}and(Modified_Time:greater_equal:{zoho_instant(since)}))"
        head, chunks = field_chunks(EVENT_FIELDS, catalog)
        head_catalog = head[len(EVENT_FIELDS) :]

        opened: list[Generator[dict[str, Any], None, None]] = []

        def search() -> Generator[dict[str, Any], None, None]:  # reads head_catalog as refusals shrink it
            fields = ",".join((*EVENT_FIELDS, *head_catalog))
            params = {"criteria": criteria, "fields": fields, "per_page": PER_PAGE}
            opened.append(NUMBERED_PAGES.pages(self, f"{API_VERSION_PATH}/Events/search", params=params))
            return opened[-1]

        for number, page in enumerate(pages_dropping_refused(search, head_catalog), start=1):
            if number == SEARCH_PAGE_CAP and dig(page, ("info", "more_records")) and high - low > timedelta(seconds=1):
                opened[-1].close()  # stop its read-ahead before the halves are read
                middle = low + (high - low) / 2
                yield from self.iter_events_starting(low, middle, since, catalog)
                yield from self.iter_events_starting(middle, high, since, catalog)
                return
            yield _EVENTS.validate_python(self.with_chunks("Events", page.get("data") or [], chunks))


def field_chunks(ours: tuple[str, ...], catalog: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Our fields then the catalog's new ones, in chunks of MAX_FIELDS: the first (ours first) goes with the
    records' pages, the others are looked up by id. `id` comes back unasked, so it is never named."""
    every = [*ours, *new_fields((*ours, "id"), catalog)]
    chunks = [every[start : start + MAX_FIELDS] for start in range(0, len(every), MAX_FIELDS)]
    return chunks[0], chunks[1:]


def _zoho_error(response: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return None, {}
    if not isinstance(body, dict):
        return None, {}
    details = body.get("details")
    return body.get("code"), details if isinstance(details, dict) else {}


# --- readers ---------------------------------------------------------------------------------------------------------


def read_users(client: ZohoClient, request: SyncRequest) -> Iterator[Page]:
    """Active and deactivated users, then deleted ones (as is_deleted=True), changed since the cursor if any."""
    since = modified_since(request)
    for user_type in ("AllUsers", "DeletedUsers"):
        for users in client.iter_users(user_type, since):
            yield Page([to_user(user, request.connection_id) for user in users])
    yield Page([], cursor=timestamp_cursor(request.started_at))


def read_contacts(client: ZohoClient, request: SyncRequest) -> Iterator[Page]:
    """Live contacts by Modified_Time with page tokens, then the deleted list as tombstones. Incremental reads
    send `If-Modified-Since` on both, so only changes travel. An expired page token raises CursorExpired."""
    since = modified_since(request)
    for contacts in client.iter_contacts(since, request.fields):
        yield Page([to_contact(contact, request.connection_id) for contact in contacts])
    for deleted in client.iter_deleted("Contacts", since):
        yield Page([to_deleted_contact(record, request.connection_id) for record in deleted])
    yield Page([], cursor=timestamp_cursor(request.started_at))


ZOHO_RESPONSES = {"accepted": "accepted", "declined": "declined", "tentative": "tentative", "not_known": "unknown"}


def to_attendees(raw: ZohoEvent, event: EventRecord) -> list[AttendeeRecord]:
    """The owner hosts the event; `Participants` are the invitees (an email participant names the address itself)."""
    people: list[Invitee] = [(raw.Owner.email, raw.Owner.name, "accepted", True)] if raw.Owner else []
    for person in raw.Participants or ():
        email = person.Email or (person.participant if person.type == "email" else None)
        people.append((email, person.name, person.status, False))
    return attendee_records(event, people, ZOHO_RESPONSES)


def read_events(client: ZohoClient, request: SyncRequest) -> Iterator[Page]:
    """Events starting in the request's UTC day, through Zoho's search API so a day never pages through every
    event; incremental reads add a Modified_Time criterion. Zoho's deleted-records list carries no start time, so a
    deletion cannot be placed in a day partition: a full read of the day (cursor None) is what drops it."""
    if request.window is None:
        raise ValueError("Zoho events are read one UTC day at a time: the request needs a window")
    day_start, day_end = request.window
    since = modified_since(request)
    low, high = day_start - ALL_DAY_SEARCH_MARGIN, day_end + ALL_DAY_SEARCH_MARGIN - timedelta(seconds=1)
    seen: set[str] = set()
    for events in client.iter_events_starting(low, high, since, request.fields):
        records: list[Mapping[str, Any]] = []
        attendees: list[Mapping[str, Any]] = []
        for event in events:
            record = to_event(event, request.connection_id)
            if day_start <= record["start_at"] < day_end and event.id not in seen:
                seen.add(event.id)
                records.append(record)
                attendees.extend(to_attendees(event, record))
        yield Page(records, attendees=attendees)
    yield Page([], cursor=timestamp_cursor(request.started_at))


# --- OAuth spec ------------------------------------------------------------------------------------------------------


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    try:
        response = api.request(
            "GET", f"{API_VERSION_PATH}/org", headers={"Authorization": f"Zoho-oauthtoken {access_token}"}
        )
    except ProviderError as error:
        raise ProviderError("Zoho did not describe the new connection's org", status_code=error.status_code) from None
    orgs = response.json().get("org") or [{}]
    org = orgs[0]
    metadata = {key: org[key] for key in ("zgid", "company_name", "time_zone", "domain_name") if org.get(key)}
    return AccountInfo(external_account_id=str(org["id"]) if org.get("id") else None, metadata=metadata)


def _revoke(api: ApiClient, tokens: TokenSet, endpoints: OAuthEndpoints) -> bool:
    """POST the refresh token in the form body (Zoho also takes it in the query string, which would log it), to the
    accounts server that issued it (the token URL's `/revoke`)."""
    if tokens.refresh_token is None:
        return False
    try:
        response = api.request(
            "POST",
            endpoints.token_url + "/revoke",
            data={"token": tokens.refresh_token.get_secret_value()},
        )
    except ProviderError:
        return False
    body = response.json() if response.content else {}
    return isinstance(body, dict) and body.get("status") == "success"


def _build_client(api_origin: str, auth: httpx.Auth, metadata: Mapping[str, Any]) -> ZohoClient:
    # Every data call goes to the api_domain of the connection's data centre, learnt from the token response.
    return ZohoClient(str(metadata.get("api_domain") or api_origin), auth=auth)


SPEC = ProviderSpec(
    name="zoho",
    display_name="Zoho CRM",
    authorize_url="https://accounts.zoho.com/oauth/v2/auth",
    token_url="https://accounts.zoho.com/oauth/v2/token",
    api_base_url="https://www.zohoapis.com",
    default_scopes=(
        "ZohoCRM.users.READ",
        "ZohoCRM.org.READ",
        "ZohoCRM.modules.contacts.READ",
        "ZohoCRM.modules.events.READ",
        "ZohoSearch.securesearch.READ",
        "ZohoCRM.settings.fields.READ",  # the field catalog (clients/catalog.py)
        "ZohoCRM.notifications.ALL",  # push: watch channels (clients/push.py)
    ),
    sandbox_authorize_path="/oauth/v2/auth",
    sandbox_token_path="/oauth/v2/token",
    scope_separator=",",
    reauth_errors=("invalid_grant", "invalid_code"),  # Zoho's answer to a revoked refresh token is invalid_code
    refresh_tokens_rotate=False,  # a refresh answers with an access token only, in every data centre
    accounts_servers=tuple(
        f"https://accounts.{domain}"
        for domain in (
            "zoho.com",
            "zoho.eu",
            "zoho.in",
            "zoho.com.au",
            "zoho.com.cn",
            "zoho.jp",
            "zohocloud.ca",
            "zoho.sa",
            "zoho.uk",
        )  # Zoho's documented data centres (multi-DC): US, EU, IN, AU, CN, JP, CA, SA, UK
    ),
    auth_scheme="Zoho-oauthtoken",
    # offline: a refresh token at all; consent: a fresh one even when the user had already authorized the app.
    extra_authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    describe_account=_describe_account,
    revoke=_revoke,
    build_client=_build_client,
)

ENTITIES = (
    EntitySpec(provider="zoho", entity="users", columns=USER_COLUMNS, read=read_users),
    EntitySpec(provider="zoho", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),
    EntitySpec(provider="zoho", entity="events", columns=EVENT_COLUMNS, read=read_events, partitioned_by_day=True),
)
