"""Salesforce REST: OAuth spec, raw models, SOQL readers for users, contacts and events, and their pure mappers.

Every read is one SOQL query whose pages are followed through `nextRecordsUrl`; each page of events then reads those
events' invitations (`EventRelation`) in queries of at most RELATION_BATCH ids. Incremental reads filter on
`SystemModstamp` (which moves on every change, deletion included) and go through `queryAll`, so deleted rows come
back with `IsDeleted: true` while they sit in the recycle bin. Before trusting a timestamp cursor for deletions
the reader asks the delete log how far back it still reaches (`earliestDateAvailable`): a cursor older than
that could miss purged deletions, so it is stale and the asset resyncs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import chain
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from integrations_pipeline.clients.cursors import modified_since, timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired, InvalidField, ProviderError
from integrations_pipeline.clients.field_requests import fit_budget, merge_by_id, new_fields, pages_dropping_refused
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.pagination import NextLinkPaginator
from integrations_pipeline.clients.spec import (
    AccountInfo,
    EntitySpec,
    OAuthEndpoints,
    Page,
    ProviderSpec,
    SyncRequest,
    day_page,
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

API_VERSION = "66.0"  # Spring '26, a current version (the emulator serves 31.0 up to 67.0)
DATA_PATH = f"/services/data/v{API_VERSION}"
BATCH_SIZE = 2000  # Salesforce's default and maximum; the header states it so a changed default cannot surprise us
PAGINATOR = NextLinkPaginator(path=("nextRecordsUrl",))
# A REST call's URI and headers may hold 16,384 bytes (414 / 431 beyond), and a SOQL statement 100,000 characters.
# One query's field list stays within FIELD_LIST_BUDGET URL-encoded bytes and a lookup's `Id IN (...)` within
# LOOKUP_IDS ids (about 27 encoded bytes each), so every query we send stays far below the URI limit.
QUERY_URI_MAX_BYTES = 16_384
FIELD_LIST_BUDGET = 8_000
LOOKUP_IDS = 200
_ENCODED_SEPARATOR = len("%2C%20")  # ", " at its widest once URL-encoded; field names need no escaping
_NO_SUCH_COLUMN = re.compile(r"No such column '([^']+)'")

USER_FIELDS = (
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Title",
    "IsActive",
    "CreatedDate",
    "SystemModstamp",
)  # User has no IsDeleted: Salesforce deactivates users, it never deletes them
CONTACT_FIELDS = (
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Phone",
    "Title",
    "Account.Name",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
)
EVENT_FIELDS = (
    "Id",
    "Subject",
    "Location",
    "StartDateTime",
    "EndDateTime",
    "IsAllDayEvent",
    "ActivityDate",
    "Owner.Email",
    "Who.Email",  # the invitee (a contact or lead): Event's own invitee field, read in the same query
    "Who.FirstName",
    "Who.LastName",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
)
# An event's invitees (IsInvitee), its related contacts or lead (IsParent) and related records (IsWhat, not people).
# Relation is the polymorphic Name object: a user, contact, lead or any other record, with its name and email.
RELATION_FIELDS = ("EventId", "Relation.Name", "Relation.Email", "Status", "IsInvitee", "IsParent", "IsWhat")
# Ids per `EventId IN (...)`: the query travels in the GET URL, which Salesforce caps at 16,384 bytes (414 beyond);
# 200 ids are about 6 KB once URL-encoded, so a page of 2,000 events costs 10 relation queries.
RELATION_BATCH = 200
# EventRelation.Status picklist -> our response status; a related record that was not invited has no answer.
INVITATION_STATUSES = {"Accepted": "accepted", "Declined": "declined", "New": "needs_action"}


class _Lenient(BaseModel):
    """Unknown fields (and `attributes`) are ignored; Salesforce datetimes (`...000+0000`) parse as aware UTC."""

    model_config = ConfigDict(extra="allow")


class _Emailed(_Lenient):
    Email: str | None = None


class _Named(_Emailed):
    Name: str | None = None


class _Person(_Emailed):
    FirstName: str | None = None
    LastName: str | None = None


class SalesforceUser(_Lenient):
    Id: str
    Email: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    Title: str | None = None
    IsActive: bool = True
    CreatedDate: datetime | None = None
    SystemModstamp: datetime


class SalesforceContact(_Lenient):
    Id: str
    Email: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    Phone: str | None = None
    Title: str | None = None
    Account: _Named | None = None
    CreatedDate: datetime | None = None
    SystemModstamp: datetime
    IsDeleted: bool = False


class SalesforceEvent(_Lenient):
    Id: str
    Subject: str | None = None
    Location: str | None = None
    StartDateTime: datetime | None = None
    EndDateTime: datetime | None = None
    IsAllDayEvent: bool = False
    ActivityDate: date | None = None
    Owner: _Emailed | None = None
    Who: _Person | None = None
    CreatedDate: datetime | None = None
    SystemModstamp: datetime
    IsDeleted: bool = False


class SalesforceEventRelation(_Lenient):
    EventId: str
    Relation: _Named | None = None  # the polymorphic Name: Name and Email
    Status: str | None = None
    IsInvitee: bool = False
    IsParent: bool = False
    IsWhat: bool = False


_USERS = TypeAdapter(list[SalesforceUser])
_CONTACTS = TypeAdapter(list[SalesforceContact])
_EVENTS = TypeAdapter(list[SalesforceEvent])
_RELATIONS = TypeAdapter(list[SalesforceEventRelation])


def to_user(raw: SalesforceUser, connection_id: str) -> UserRecord:
    return UserRecord(
        connection_id=connection_id,
        source_id=raw.Id,
        email=text_or_none(raw.Email),
        first_name=text_or_none(raw.FirstName),
        last_name=text_or_none(raw.LastName),
        title=text_or_none(raw.Title),
        is_active=raw.IsActive,
        created_at=as_utc(raw.CreatedDate),
        modified_at=as_utc(raw.SystemModstamp),
        is_deleted=False,
        raw=raw_json(raw),
    )


def to_contact(raw: SalesforceContact, connection_id: str) -> ContactRecord:
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.Id,
        email=text_or_none(raw.Email),
        first_name=text_or_none(raw.FirstName),
        last_name=text_or_none(raw.LastName),
        phone=text_or_none(raw.Phone),
        company=text_or_none(raw.Account.Name) if raw.Account is not None else None,
        job_title=text_or_none(raw.Title),
        created_at=as_utc(raw.CreatedDate),
        modified_at=as_utc(raw.SystemModstamp),  # moves on deletion too
        is_deleted=raw.IsDeleted,
        raw=raw_json(raw),
    )


def to_event(raw: SalesforceEvent, connection_id: str) -> EventRecord:
    """All-day events start at midnight UTC of their ActivityDate; their EndDateTime names the last day, so the
    record's exclusive end is the midnight after it (a one-day event spans exactly 24 hours)."""
    start_day = raw.StartDateTime.astimezone(UTC).date() if raw.StartDateTime is not None else None
    first_day = raw.ActivityDate or start_day
    if raw.IsAllDayEvent and first_day is not None:
        start_at = utc_midnight(first_day)
        last_day = raw.EndDateTime.astimezone(UTC).date() if raw.EndDateTime is not None else first_day
        end_at: datetime | None = utc_midnight(max(last_day, first_day)) + timedelta(days=1)
    elif raw.StartDateTime is not None:
        start_at, end_at = raw.StartDateTime.astimezone(UTC), as_utc(raw.EndDateTime)
    else:
        raise ProviderError(f"Salesforce event {raw.Id} has neither StartDateTime nor ActivityDate")
    return EventRecord(
        connection_id=connection_id,
        source_id=raw.Id,
        title=text_or_none(raw.Subject),
        organizer_email=text_or_none(raw.Owner.Email) if raw.Owner is not None else None,
        start_at=start_at,
        end_at=end_at,
        is_all_day=raw.IsAllDayEvent,
        location=text_or_none(raw.Location),
        created_at=as_utc(raw.CreatedDate),
        modified_at=as_utc(raw.SystemModstamp),
        is_deleted=raw.IsDeleted,
        raw=raw_json(raw),
    )


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal in whole seconds, floored: windows only ever widen at the start, and the next
    window's 5-minute overlap covers the sub-second tail cut from the end."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def soql_string(value: str) -> str:
    """A SOQL string literal: backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parse_salesforce_datetime(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def build_soql(
    sobject: str,
    fields: tuple[str, ...],
    *,
    modified_window: tuple[datetime, datetime] | None = None,
    start_window: tuple[datetime, datetime] | None = None,
) -> str:
    """SELECT ... FROM sobject with optional [start, end) windows. Every value is a datetime we format ourselves,
    never text from outside, so no escaping is involved."""
    conditions = []
    if start_window is not None:
        conditions += [
            f"StartDateTime >= {soql_datetime(start_window[0])}",
            f"StartDateTime < {soql_datetime(start_window[1])}",
        ]
    if modified_window is not None:
        conditions += [
            f"SystemModstamp >= {soql_datetime(modified_window[0])}",
            f"SystemModstamp < {soql_datetime(modified_window[1])}",
        ]
    soql = f"SELECT {', '.join(fields)} FROM {sobject}"
    if conditions:
        soql += " WHERE " + " AND ".join(conditions)
    if modified_window is not None:
        soql += " ORDER BY SystemModstamp"
    return soql


def field_groups(ours: tuple[str, ...], catalog: tuple[str, ...]) -> tuple[tuple[str, ...], list[list[str]]]:
    """Our fields plus the catalog's fields (those not already ours, compared as SOQL does, case-insensitively) that
    fit one query's FIELD_LIST_BUDGET; the rest in groups that each fit it too, read by Id in lookups."""
    head, groups = fit_budget(
        ours,
        new_fields(ours, catalog, case_sensitive=False),
        FIELD_LIST_BUDGET,
        lambda name: len(name) + _ENCODED_SEPARATOR,
        group_start=len("Id") + _ENCODED_SEPARATOR,
    )
    return tuple(head), groups


def lookup_soql(sobject: str, fields: list[str], ids: list[str]) -> str:
    """SELECT Id, fields FROM sobject WHERE Id IN (ids), the ids quoted as SOQL strings."""
    return f"SELECT Id, {', '.join(fields)} FROM {sobject} WHERE Id IN ({', '.join(map(soql_string, ids))})"


class SalesforceClient(ApiClient):
    """One org's REST API on its instance URL."""

    rate_limit_header_prefixes = ("sforce-limit-info",)

    def is_rate_limited(self, response: httpx.Response) -> bool:
        """The org's 24-hour API allowance is spent: 403 REQUEST_LIMIT_EXCEEDED, not a 429."""
        return response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text

    def raise_for_status(self, response: httpx.Response) -> httpx.Response:
        """INVALID_FIELD names the refused field (the message quotes the whole query, beyond an error excerpt)."""
        if response.status_code == 400 and "INVALID_FIELD" in response.text:
            try:
                errors = response.json()
            except ValueError:
                errors = []
            for error in errors if isinstance(errors, list) else []:
                named = _NO_SUCH_COLUMN.search(str(error.get("message", ""))) if isinstance(error, dict) else None
                if error.get("errorCode") == "INVALID_FIELD" and named is not None:
                    raise InvalidField(
                        f"{response.request.method} {response.request.url.path}: Salesforce has no field "
                        f"{named.group(1)!r}",
                        field=named.group(1),
                        status_code=400,
                    )
        return super().raise_for_status(response)

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[list[dict[str, Any]]]:
        """The records of `soql` a page at a time; `include_deleted` uses queryAll (recycle-bin rows too)."""
        resource = "queryAll" if include_deleted else "query"
        headers = {"Sforce-Query-Options": f"batchSize={BATCH_SIZE}"}
        for page in PAGINATOR.pages(self, f"{DATA_PATH}/{resource}", params={"q": soql}, headers=headers):
            yield page.get("records", [])

    def check_delete_log_covers(self, sobject: str, since: datetime, until: datetime) -> None:
        """Raise CursorExpired when deletions after `since` may already have been purged from the delete log."""
        log = self.get_json(
            f"{DATA_PATH}/sobjects/{sobject}/deleted/",
            params={"start": _whole_seconds(since).isoformat(), "end": _whole_seconds(until).isoformat()},
        )
        earliest = log.get("earliestDateAvailable")
        if earliest and _parse_salesforce_datetime(earliest) > _whole_seconds(since):
            raise CursorExpired(
                f"Salesforce's {sobject} delete log starts at {earliest}, after the cursor ({since.isoformat()}): "
                "deletions may have been purged, so a full resync is due"
            )

    relation_batch = RELATION_BATCH  # ids per EventRelation query

    def event_relations(self, event_ids: Sequence[str]) -> dict[str, list[SalesforceEventRelation]]:
        """The live relations of these events, by event id, in queries of at most `relation_batch` ids."""
        relations: dict[str, list[SalesforceEventRelation]] = {}
        for start in range(0, len(event_ids), self.relation_batch):
            batch = ", ".join(soql_string(event_id) for event_id in event_ids[start : start + self.relation_batch])
            soql = f"SELECT {', '.join(RELATION_FIELDS)} FROM EventRelation WHERE EventId IN ({batch})"
            for records in self.query(soql):
                for relation in _RELATIONS.validate_python(records):
                    relations.setdefault(relation.EventId, []).append(relation)
        return relations

    def select(
        self,
        sobject: str,
        ours: tuple[str, ...],
        catalog: tuple[str, ...],
        *,
        modified_window: tuple[datetime, datetime] | None = None,
        start_window: tuple[datetime, datetime] | None = None,
        include_deleted: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """The records of one SOQL query selecting our fields and the catalog's, a page at a time. Fields beyond
        one query's length budget are read in lookups by Id (`WHERE Id IN (...)`, LOOKUP_IDS at a time) for each
        page and merged into its records: every page arrives whole, however wide the object."""
        head, groups = field_groups(ours, catalog)
        head_catalog = list(head[len(ours) :])

        def head_pages() -> Iterator[list[dict[str, Any]]]:  # reads head_catalog as refusals shrink it
            fields = (*ours, *head_catalog)
            soql = build_soql(sobject, fields, modified_window=modified_window, start_window=start_window)
            return self.query(soql, include_deleted=include_deleted)

        for records in pages_dropping_refused(head_pages, head_catalog):
            for group in groups:
                self._merge_lookup(sobject, group, records, include_deleted)
            yield records

    def _merge_lookup(
        self, sobject: str, group: list[str], records: list[dict[str, Any]], include_deleted: bool
    ) -> None:
        ids = [record["Id"] for record in records]
        for start in range(0, len(ids), LOOKUP_IDS):
            if not group:  # every field of the group was refused
                return
            lookup = partial(self._lookup, sobject, group, ids[start : start + LOOKUP_IDS], include_deleted)
            merge_by_id(records, chain.from_iterable(pages_dropping_refused(lookup, group)), "Id", skip="attributes")

    def _lookup(
        self, sobject: str, fields: list[str], ids: list[str], include_deleted: bool
    ) -> Iterator[list[dict[str, Any]]]:
        return self.query(lookup_soql(sobject, fields, ids), include_deleted=include_deleted)

    def iter_users(
        self, window: tuple[datetime, datetime] | None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[SalesforceUser]]:
        for records in self.select("User", USER_FIELDS, catalog, modified_window=window):
            yield _USERS.validate_python(records)

    def iter_contacts(
        self, window: tuple[datetime, datetime] | None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[SalesforceContact]]:
        if window is not None:
            self.check_delete_log_covers("Contact", *window)
        for records in self.select("Contact", CONTACT_FIELDS, catalog, modified_window=window, include_deleted=True):
            yield _CONTACTS.validate_python(records)

    def iter_events(
        self, day: tuple[datetime, datetime], window: tuple[datetime, datetime] | None, catalog: tuple[str, ...] = ()
    ) -> Iterator[list[SalesforceEvent]]:
        """Events starting in `day` (all-day ones are stored at midnight UTC of their date, so they match too)."""
        if window is not None:
            self.check_delete_log_covers("Event", *window)
        pages = self.select(
            "Event", EVENT_FIELDS, catalog, modified_window=window, start_window=day, include_deleted=True
        )
        for records in pages:
            yield _EVENTS.validate_python(records)


def _modified_window(request: SyncRequest) -> tuple[datetime, datetime] | None:
    since = modified_since(request)
    return None if since is None else (since, request.started_at)


def read_users(client: SalesforceClient, request: SyncRequest) -> Iterator[Page]:
    """Full: every user. Incremental: users whose SystemModstamp is in [cursor - overlap, started_at)."""
    for page in client.iter_users(_modified_window(request), request.fields):
        yield Page([to_user(user, request.connection_id) for user in page])
    yield Page([], cursor=timestamp_cursor(request.started_at))


def read_contacts(client: SalesforceClient, request: SyncRequest) -> Iterator[Page]:
    """Full: every contact through queryAll (recycle-bin deletions as is_deleted). Incremental: the changes and
    deletions since the cursor, after checking the delete log still reaches back that far."""
    for page in client.iter_contacts(_modified_window(request), request.fields):
        yield Page([to_contact(contact, request.connection_id) for contact in page])
    yield Page([], cursor=timestamp_cursor(request.started_at))


def to_attendees(
    raw: SalesforceEvent, event: EventRecord, relations: Iterable[SalesforceEventRelation] = ()
) -> list[AttendeeRecord]:
    """The owner organizes; the people of the event's relations attend, invitees with their invitation's Status,
    related contacts or a lead that were not invited with none ("unknown"); related records (IsWhat) are not people.
    The `Who` comes last: an org without Shared Activities lists only invitees as relations, not the Who."""
    people: list[Invitee] = [(raw.Owner.Email, None, "accepted", True)] if raw.Owner else []
    for relation in relations:
        if relation.IsWhat or relation.Relation is None:
            continue
        status = relation.Status if relation.IsInvitee else None
        people.append((relation.Relation.Email, relation.Relation.Name, status, False))
    if raw.Who is not None:
        name = " ".join(part for part in (raw.Who.FirstName, raw.Who.LastName) if part) or None
        people.append((raw.Who.Email, name, None, False))
    return attendee_records(event, people, {"accepted": "accepted", **INVITATION_STATUSES})


def _with_relations(
    relations: Mapping[str, list[SalesforceEventRelation]], raw: SalesforceEvent, event: EventRecord
) -> list[AttendeeRecord]:
    return to_attendees(raw, event, relations.get(raw.Id, ()))


def read_events(client: SalesforceClient, request: SyncRequest) -> Iterator[Page]:
    """The events starting in the request's UTC day; incrementally only that day's changes since the cursor."""
    if request.window is None:
        raise ValueError("Salesforce events are read one UTC day at a time: the request needs a window")
    for page in client.iter_events(request.window, _modified_window(request), request.fields):
        mapped = [(event, to_event(event, request.connection_id)) for event in page]
        # A deleted event's relations are deleted with it: only live events' invitations are read.
        relations = client.event_relations([event.Id for event, record in mapped if not record["is_deleted"]])
        # StartDateTime decides the partition; an all-day event's midnight is the same instant, but keep the
        # contract explicit should an org store one differently.
        yield day_page(mapped, request.window, partial(_with_relations, relations))
    yield Page([], cursor=timestamp_cursor(request.started_at))


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    """The OpenID userinfo endpoint names the identity URL `.../id/<orgId>/<userId>`: the org is the account."""
    try:
        info = api.get_json("/services/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    except ProviderError as error:
        raise ProviderError("Salesforce did not describe the new token", status_code=error.status_code) from None
    identity = str(info.get("sub") or "").rstrip("/").split("/")
    org_id = identity[-2] if len(identity) >= 3 and identity[-3] == "id" else info.get("organization_id")
    metadata = {key: info[key] for key in ("organization_id", "user_id") if info.get(key)}
    return AccountInfo(external_account_id=org_id or None, metadata=metadata)


def _revoke(api: ApiClient, tokens: TokenSet, endpoints: OAuthEndpoints) -> bool:
    """Revoking the refresh token revokes the whole grant, its sessions included; the token goes in the body."""
    token = tokens.refresh_token or tokens.access_token
    try:
        api.request("POST", "/services/oauth2/revoke", data={"token": token.get_secret_value()})
    except ProviderError:
        return False
    return True


def _build_client(api_origin: str, auth: httpx.Auth, metadata: Mapping[str, Any]) -> SalesforceClient:
    # Data lives on the org's own instance (https://<domain>.my.salesforce.com), learnt from the token response.
    return SalesforceClient(str(metadata.get("instance_url") or api_origin).rstrip("/"), auth=auth)


SPEC = ProviderSpec(
    name="salesforce",
    display_name="Salesforce",
    authorize_url="https://login.salesforce.com/services/oauth2/authorize",
    token_url="https://login.salesforce.com/services/oauth2/token",
    api_base_url="https://login.salesforce.com",
    default_scopes=("api", "refresh_token"),
    sandbox_authorize_path="/services/oauth2/authorize",
    sandbox_token_path="/services/oauth2/token",
    describe_account=_describe_account,
    revoke=_revoke,
    build_client=_build_client,
)

ENTITIES = (
    EntitySpec(provider="salesforce", entity="users", columns=USER_COLUMNS, read=read_users),
    EntitySpec(provider="salesforce", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),
    EntitySpec(
        provider="salesforce", entity="events", columns=EVENT_COLUMNS, read=read_events, partitioned_by_day=True
    ),
)
