"""The HubSpot connector (users = owners, contacts, events = meetings) against the emulator over real HTTP, plus
unit tests of its pure mappers.

Expected records are built here from the emulator's raw records with plain dict access, independently of the
mappers, so a wrong mapping, filter or cursor in the connector makes these tests fail.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.clients.cursors import timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired
from integrations_pipeline.clients.hubspot import (
    ENTITIES,
    SEARCH_RESULT_CAP,
    SPEC,
    HubSpotClient,
    HubSpotObject,
    HubSpotOwner,
    read_contacts,
    read_events,
    read_users,
    to_contact,
    to_event,
    to_user,
)
from integrations_pipeline.clients.spec import Page, SyncRequest
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.records import CONTACT_COLUMNS, EVENT_COLUMNS, USER_COLUMNS
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline_tests.clients import AttendeeRow, RawOf, attendees_of
from integrations_pipeline_tests.sandbox.conftest import CLIENT_ID, CLIENT_SECRET, ManualClock, run_code_flow

CONNECTION_ID = "hubspot-test"
SCOPES = " ".join(SPEC.default_scopes)
DAY = datetime(2026, 4, 10, tzinfo=UTC)


class BearerAuth(httpx.Auth):
    """Sets the header from a token obtained through the emulator's OAuth endpoints; tests may swap the token."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        yield request


@dataclass
class Connected:
    emulator: HubSpotEmulator
    client: HubSpotClient
    auth: BearerAuth
    clock: ManualClock
    http: httpx.Client

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now, UTC)

    def request(self, cursor: str | None = None, window: tuple[datetime, datetime] | None = None) -> SyncRequest:
        # A second after the clock, so writes stamped "now" fall inside the incremental window.
        return SyncRequest(CONNECTION_ID, cursor, self.now() + timedelta(seconds=1), window)

    def log_position(self) -> int:
        return len(self.emulator.request_log)

    def crm_requests(self, since: int) -> list[str]:
        return [
            f"{r.method} {r.path}?{r.query}" for r in self.emulator.request_log[since:] if r.path.startswith("/crm/")
        ]

    def reconnect(self) -> None:
        """After the clock jumps past the token's life: a fresh grant, as the gateway's refresh would give."""
        self.auth.access_token = run_code_flow(self.http, scope=SCOPES)["access_token"]


def connect(clock: ManualClock, **sizes: Any) -> Iterator[Connected]:
    options: dict[str, Any] = {"contacts": 150, "owners": 6, "meetings": 1_200} | sizes
    emulator = HubSpotEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, burst_limit=None, search_limit=None, clock=clock, **options
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        auth = BearerAuth(run_code_flow(http, scope=SCOPES)["access_token"])
        client = HubSpotClient(server.url, auth=auth)
        try:
            yield Connected(emulator, client, auth, clock, http)
        finally:
            client.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def hubspot(clock: ManualClock) -> Iterator[Connected]:
    yield from connect(clock)


def collect(pages: Iterator[Page]) -> tuple[list[dict[str, Any]], str | None, int]:
    """Every record, the final cursor, and how many pages carried records."""
    records: list[dict[str, Any]] = []
    cursor, pages_with_records = None, 0
    for page in pages:
        records.extend(dict(record) for record in page.records)
        pages_with_records += bool(page.records)
        cursor = page.cursor or cursor
    return records, cursor, pages_with_records


def stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["source_id"]: record for record in records}


def expected_contact(record: dict[str, Any]) -> dict[str, Any]:
    properties = record["properties"]
    modified = stamp(record["updatedAt"])
    if record["archived"]:
        modified = max(modified, stamp(record["archivedAt"]))  # type: ignore[type-var]
    return {
        "connection_id": CONNECTION_ID,
        "source_id": record["id"],
        "email": properties["email"],
        "first_name": properties["firstname"],
        "last_name": properties["lastname"],
        "phone": properties["phone"],
        "company": properties["company"],
        "job_title": properties["jobtitle"],
        "created_at": stamp(record["createdAt"]),
        "modified_at": modified,
        "is_deleted": record["archived"],
        "raw": RawOf(record),
    }


def expected_user(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION_ID,
        "source_id": owner["id"],
        "email": owner["email"],
        "first_name": owner["firstName"],
        "last_name": owner["lastName"],
        "title": None,
        "is_active": not owner["archived"],
        "created_at": stamp(owner["createdAt"]),
        "modified_at": stamp(owner["updatedAt"]),
        "is_deleted": owner["archived"],
        "raw": RawOf(owner),
    }


def expected_event(record: dict[str, Any], emails: dict[str, str]) -> dict[str, Any]:
    properties = record["properties"]
    start, end = stamp(properties["hs_meeting_start_time"]), stamp(properties["hs_meeting_end_time"])
    assert start is not None and end is not None
    modified = stamp(record["updatedAt"])
    if record["archived"]:
        modified = max(modified, stamp(record["archivedAt"]))  # type: ignore[type-var]
    return {
        "connection_id": CONNECTION_ID,
        "source_id": record["id"],
        "title": properties["hs_meeting_title"],
        "organizer_email": emails.get(properties["hubspot_owner_id"] or ""),
        "start_at": start,
        "end_at": end,
        "is_all_day": start == start.replace(hour=0, minute=0, second=0, microsecond=0) and end - start == timedelta(1),
        "location": properties["hs_meeting_location"],
        "created_at": stamp(record["createdAt"]),
        "modified_at": modified,
        "is_deleted": record["archived"],
        "raw": RawOf(record),
    }


def owner_emails(emulator: HubSpotEmulator) -> dict[str, str]:
    return {owner["id"]: owner["email"] for owner in emulator.user_records()}


def day_of(start: datetime) -> tuple[datetime, datetime]:
    return start, start + timedelta(days=1)


def meetings_starting_in(emulator: HubSpotEmulator, window: tuple[datetime, datetime]) -> list[dict[str, Any]]:
    return [
        record
        for record in emulator.event_records()
        if window[0] <= stamp(record["properties"]["hs_meeting_start_time"]) < window[1]  # type: ignore[operator]
    ]


# --- registration -------------------------------------------------------------------------------------------------


def test_entities_register_users_contacts_and_day_partitioned_events() -> None:
    assert [(spec.entity, spec.columns, spec.read, spec.partitioned_by_day) for spec in ENTITIES] == [
        ("users", USER_COLUMNS, read_users, False),
        ("contacts", CONTACT_COLUMNS, read_contacts, False),
        ("events", EVENT_COLUMNS, read_events, True),
    ]
    assert {"crm.objects.contacts.read", "crm.objects.owners.read"} <= set(SPEC.default_scopes)


# --- users ----------------------------------------------------------------------------------------------------------


def test_users_are_a_full_read_every_time_with_archived_owners_deleted(hubspot: Connected) -> None:
    removed = hubspot.emulator.user_records()[1]["id"]
    hubspot.clock.advance(60)
    hubspot.emulator.archive_owner(removed)
    position = hubspot.log_position()
    records, cursor, _ = collect(read_users(hubspot.client, hubspot.request()))
    assert records == [expected_user(owner) for owner in hubspot.emulator.user_records()]
    assert by_id(records)[removed]["is_deleted"] is True and by_id(records)[removed]["is_active"] is False
    assert cursor is None  # no modified filter: the next sync reads everything again
    assert hubspot.crm_requests(position) == [
        "GET /crm/v3/owners/?limit=500&archived=false",
        "GET /crm/v3/owners/?limit=500&archived=true",
    ]


# --- contacts -------------------------------------------------------------------------------------------------------


def test_contacts_full_then_incremental_returns_exactly_the_changes(hubspot: Connected) -> None:
    emulator = hubspot.emulator
    full, cursor, pages = collect(read_contacts(hubspot.client, hubspot.request()))
    assert full == [expected_contact(record) for record in emulator.contact_records()]
    assert pages == 2 and cursor is not None and "modified_since" in cursor

    hubspot.clock.advance(300)
    emulator.update_contact("7", {"company": "Renamed Ltd"})
    emulator.update_contact("99", {"firstname": "Changed"})
    created = emulator.create_contact({"email": "new.person@example.com", "firstname": "New"})
    emulator.archive_contact("12")
    position = hubspot.log_position()
    changes, next_cursor, _ = collect(read_contacts(hubspot.client, hubspot.request(cursor)))

    expected = {record["id"]: expected_contact(record) for record in emulator.contact_records()}
    assert by_id(changes) == {contact_id: expected[contact_id] for contact_id in ("7", "99", created, "12")}
    assert by_id(changes)["12"]["is_deleted"] is True and by_id(changes)["7"]["company"] == "Renamed Ltd"
    requests = hubspot.crm_requests(position)
    # The live count (one fewer than expected after a creation: a deletion), the changes, then the archived list.
    assert len(requests) == 3 and all(r.startswith("POST /crm/v3/objects/contacts/search") for r in requests[:2])
    assert "archived=true" in requests[2]
    assert json.loads(next_cursor or "{}")["modified_since"] > json.loads(cursor)["modified_since"]


def test_an_incremental_reads_the_archived_list_only_when_a_deletion_may_have_happened(clock: ManualClock) -> None:
    for hubspot in connect(clock, contacts=400, meetings=0):
        emulator = hubspot.emulator
        for contact_id in range(1, 400, 3):  # 133 archived contacts: two pages of the archived list
            emulator.archive_contact(str(contact_id))
        clock.advance(600)  # deleted well before the full sync, outside its cursor's overlap
        full, cursor, _ = collect(read_contacts(hubspot.client, hubspot.request()))
        assert sum(record["is_deleted"] for record in full) == 133

        clock.advance(300)
        emulator.update_contact("2", {"company": "Renamed Ltd"})
        created = emulator.create_contact({"email": "new.person@example.com", "firstname": "New"})
        clock.advance(400)  # so that the next window, which starts 5 minutes early, does not read them again
        position = hubspot.log_position()
        changes, cursor, _ = collect(read_contacts(hubspot.client, hubspot.request(cursor)))
        assert sorted(by_id(changes)) == sorted(["2", created])
        assert [r.split("?")[0] for r in hubspot.crm_requests(position)] == ["POST /crm/v3/objects/contacts/search"] * 2

        clock.advance(300)
        emulator.archive_contact("5")  # an old contact, below the ids already on the archived list's pages
        emulator.update_contact("8", {"jobtitle": "Changed"})
        position = hubspot.log_position()
        changes, cursor, _ = collect(read_contacts(hubspot.client, hubspot.request(cursor)))
        assert by_id(changes) == {
            record["id"]: expected_contact(record)
            for record in emulator.contact_records()
            if record["id"] in ("5", "8")
        }
        assert by_id(changes)["5"]["is_deleted"] is True
        archived_pages = [r for r in hubspot.crm_requests(position) if "archived=true" in r]
        assert len(archived_pages) == 2  # the whole list is read, and only what was deleted since is kept

        clock.advance(timedelta(days=1).total_seconds())  # nothing changed for a day: the sweep is due anyway
        hubspot.reconnect()
        position = hubspot.log_position()
        changes, _, _ = collect(read_contacts(hubspot.client, hubspot.request(cursor)))
        assert sorted(by_id(changes)) == ["5", "8"]  # the previous window's last 5 minutes, read again
        assert len([r for r in hubspot.crm_requests(position) if "archived=true" in r]) == 2


def test_contact_search_splits_its_window_at_the_10000_cap(clock: ManualClock) -> None:
    for connected in connect(clock, contacts=SEARCH_RESULT_CAP + 150, meetings=0):
        before = connected.now()
        for contact_id in range(1, SEARCH_RESULT_CAP + 151):
            clock.advance(0.05)  # distinct lastmodifieddate stamps, as real edits have
            connected.emulator.update_contact(str(contact_id), {"jobtitle": "Bulk edited"})
        position = connected.log_position()
        changes, _, _ = collect(read_contacts(connected.client, connected.request(timestamp_cursor(before))))
        ids = [record["source_id"] for record in changes]
        assert len(ids) == len(set(ids)) == SEARCH_RESULT_CAP + 150
        assert set(ids) == {str(contact_id) for contact_id in range(1, SEARCH_RESULT_CAP + 151)}
        log = connected.emulator.request_log[position:]
        assert all(record.status == 200 for record in log)  # never paged past the cap
        searches = [record for record in log if record.path.endswith("/search")]
        assert len(searches) > (SEARCH_RESULT_CAP + 150) // 100 + 1  # the probe that found the cap, then halves


def test_a_catalog_too_wide_for_one_list_uri_is_batch_read_and_merged(hubspot: Connected) -> None:
    """Hundreds of custom properties do not fit one list request's URI (HubSpot answers 414): the list names what
    fits, the rest are batch-read by the page's ids, and every record carries every property."""
    emulator = hubspot.emulator
    names = [f"quarterly_custom_score_number_{n:03d}" for n in range(500)]  # about 18 KB of names
    for name in names:
        emulator.properties.add("contacts", name, type="number", field_type="number", label=name)
    emulator.update_contact("7", {names[0]: "1", names[-1]: "2"})
    whole = hubspot.http.get(
        "/crm/v3/objects/contacts",
        params={"properties": ",".join(names)},
        headers={"Authorization": f"Bearer {hubspot.auth.access_token}"},
    )
    assert whole.status_code == 414

    position = hubspot.log_position()
    request = replace(hubspot.request(), fields=tuple(names))
    records, _, pages = collect(read_contacts(hubspot.client, request))
    assert records == [expected_contact(record) for record in emulator.contact_records()]
    raw = {record["source_id"]: json.loads(record["raw"])["properties"] for record in records}
    assert raw["7"][names[0]] == "1" and raw["7"][names[-1]] == "2"
    assert all(set(names) <= set(properties) for properties in raw.values())
    requests = hubspot.crm_requests(position)
    listed = [r for r in requests if r.startswith("GET /crm/v3/objects/contacts?")]
    batches = [r for r in requests if r.startswith("POST /crm/v3/objects/contacts/batch/read")]
    assert listed and all(len(r) < 16_384 for r in listed) and "email" in listed[0]
    assert len(batches) == pages  # one batch read per page of records (100 ids at most each)


def test_a_cursor_older_than_hubspots_deleted_record_retention_is_stale(hubspot: Connected) -> None:
    emulator = hubspot.emulator
    _, cursor, _ = collect(read_contacts(hubspot.client, hubspot.request()))
    emulator.archive_contact("20")
    hubspot.clock.advance(timedelta(days=91).total_seconds())
    assert emulator.purge_archived() == 1  # HubSpot forgets the delete: an old cursor can no longer see it
    hubspot.reconnect()
    position = hubspot.log_position()
    with pytest.raises(CursorExpired):
        collect(read_contacts(hubspot.client, hubspot.request(cursor)))
    with pytest.raises(CursorExpired):
        collect(read_events(hubspot.client, hubspot.request(cursor, day_of(DAY))))
    assert hubspot.crm_requests(position) == []  # refused before a call is spent
    full, _, _ = collect(read_contacts(hubspot.client, hubspot.request()))
    assert "20" not in by_id(full)  # the asset's full resync flags what is missing as deleted


def test_an_archived_list_last_read_before_the_retention_is_stale_too(hubspot: Connected) -> None:
    """A recent window start is not enough: deletions since the last read of the archived list must be readable."""
    swept_at = hubspot.now() - timedelta(days=91)
    cursor = timestamp_cursor(hubspot.now(), archived_swept_at=swept_at.isoformat(), live_contacts=150)
    position = hubspot.log_position()
    with pytest.raises(CursorExpired, match="archived contacts were last read"):
        collect(read_contacts(hubspot.client, hubspot.request(cursor)))
    assert hubspot.crm_requests(position) == []


# --- events ---------------------------------------------------------------------------------------------------------


def test_a_day_window_returns_exactly_the_meetings_starting_that_day(hubspot: Connected) -> None:
    emulator, ms = hubspot.emulator, lambda moment: str(int(moment.timestamp() * 1000))
    owner = emulator.user_records()[0]["id"]
    edge_cases = {
        "all day": (DAY, DAY + timedelta(days=1)),
        "late, over midnight": (DAY + timedelta(hours=23, minutes=30), DAY + timedelta(days=1, minutes=30)),
        "day before, over midnight": (DAY - timedelta(minutes=30), DAY + timedelta(minutes=30)),
        "next midnight": (DAY + timedelta(days=1), DAY + timedelta(days=1, hours=1)),
    }
    ids = {
        title: emulator.create_meeting(
            {
                "hs_meeting_title": title,
                "hs_meeting_start_time": ms(start),
                "hs_meeting_end_time": ms(end),
                "hubspot_owner_id": owner,
            }
        )
        for title, (start, end) in edge_cases.items()
    }
    archived_in_day = next(
        record["id"] for record in meetings_starting_in(emulator, day_of(DAY)) if record["id"] not in ids.values()
    )
    emulator.archive_meeting(archived_in_day)
    position = hubspot.log_position()
    records, cursor, _ = collect(read_events(hubspot.client, hubspot.request(window=day_of(DAY))))

    emails = owner_emails(emulator)
    expected = [expected_event(record, emails) for record in meetings_starting_in(emulator, day_of(DAY))]
    assert sorted(records, key=lambda r: r["source_id"]) == sorted(expected, key=lambda r: r["source_id"])
    assert {ids["all day"], ids["late, over midnight"]} <= set(by_id(records))
    assert not {ids["day before, over midnight"], ids["next midnight"]} & set(by_id(records))
    assert by_id(records)[ids["all day"]]["is_all_day"] is True
    assert by_id(records)[ids["late, over midnight"]]["organizer_email"] == emails[owner]
    assert by_id(records)[archived_in_day]["is_deleted"] is True
    assert cursor is not None
    requests = hubspot.crm_requests(position)
    assert requests[0].startswith("POST /crm/v3/objects/meetings/search")
    assert sum("/crm/v3/owners/" in request for request in requests) == 2  # one owners read, not one per meeting


def test_an_incremental_day_read_fetches_only_that_days_changes(hubspot: Connected) -> None:
    emulator = hubspot.emulator
    window = day_of(datetime(2025, 9, 3, tzinfo=UTC))
    other_day = day_of(datetime(2025, 9, 4, tzinfo=UTC))
    _, cursor, _ = collect(read_events(hubspot.client, hubspot.request(window=window)))
    in_day = [record["id"] for record in meetings_starting_in(emulator, window)]
    elsewhere = [record["id"] for record in meetings_starting_in(emulator, other_day)]
    assert len(in_day) >= 2 and elsewhere

    hubspot.clock.advance(600)
    emulator.update_meeting(in_day[0], {"hs_meeting_outcome": "COMPLETED", "hs_meeting_location": "Room 9"})
    emulator.archive_meeting(in_day[1])
    emulator.update_meeting(elsewhere[0], {"hs_meeting_location": "Elsewhere"})
    emulator.archive_meeting(elsewhere[-1])
    created = emulator.create_meeting({"hs_meeting_title": "Added", "hs_meeting_start_time": "2025-09-03T16:00:00Z"})
    position = hubspot.log_position()
    changes, next_cursor, _ = collect(read_events(hubspot.client, hubspot.request(cursor, window)))

    emails = owner_emails(emulator)
    truth = {record["id"]: record for record in emulator.event_records()}
    assert set(by_id(changes)) == {in_day[0], in_day[1], created}
    for meeting_id in (in_day[0], in_day[1]):
        assert by_id(changes)[meeting_id] == expected_event(truth[meeting_id], emails)
    assert by_id(changes)[in_day[1]]["is_deleted"] is True
    assert by_id(changes)[created]["start_at"] == datetime(2025, 9, 3, 16, tzinfo=UTC)
    assert by_id(changes)[created]["end_at"] is None and by_id(changes)[created]["organizer_email"] is None
    # One search page, one owners read (live and archived, for the organizers), the live page's attending contacts
    # (one associations call, one batch read when any contact attends), one page of archived meetings.
    attended = any(emulator.meeting_contact_ids(meeting_id) for meeting_id in (in_day[0], created))
    search, *rest = hubspot.crm_requests(position)
    assert search.startswith("POST /crm/v3/objects/meetings/search")
    assert [request.split("&properties")[0] for request in rest] == [
        "GET /crm/v3/owners/?limit=500&archived=false",
        "GET /crm/v3/owners/?limit=500&archived=true",
        "POST /crm/v4/associations/meetings/contacts/batch/read?",
        *(["POST /crm/v3/objects/contacts/batch/read?archived=false"] if attended else []),
        "GET /crm/v3/objects/meetings?limit=100&archived=true",
    ]
    assert next_cursor is not None and next_cursor != cursor


def expected_attendees(emulator: HubSpotEmulator, meeting_ids: set[str]) -> set[AttendeeRow]:
    """(meeting, email, name, response, organizer): the owner, the attending owners, then associated contacts."""
    emails = owner_emails(emulator)
    contacts = {record["id"]: record["properties"] for record in emulator.contact_records()}
    people: dict[tuple[str, str], AttendeeRow] = {}
    for meeting in emulator.event_records(include_archived=False):
        if meeting["id"] not in meeting_ids:
            continue
        owner = meeting["properties"]["hubspot_owner_id"]
        for owner_id in [owner, *(meeting["properties"]["hs_attendee_owner_ids"] or "").split(";")]:
            if owner_id:
                person = (meeting["id"], emails[owner_id], None, "accepted" if owner_id == owner else "unknown")
                people.setdefault(person[:2], (*person, owner_id == owner))
        for contact_id in emulator.meeting_contact_ids(meeting["id"]):
            contact = contacts[contact_id]
            name = f"{contact['firstname']} {contact['lastname']}"
            people.setdefault(
                (meeting["id"], contact["email"]), (meeting["id"], contact["email"], name, "unknown", False)
            )
    return set(people.values())


def test_attendees_are_the_owners_and_the_associated_contacts(hubspot: Connected) -> None:
    emulator, window = hubspot.emulator, day_of(datetime(2025, 9, 3, tzinfo=UTC))
    position = hubspot.log_position()
    pages = list(read_events(hubspot.client, hubspot.request(window=window)))
    in_day = {record["source_id"] for page in pages for record in page.records}
    assert attendees_of(pages) == expected_attendees(emulator, in_day)
    assert any(name for _, _, name, _, _ in attendees_of(pages))  # contacts attend, with their names
    requests = hubspot.crm_requests(position)
    assert sum("/associations/" in request for request in requests) == 1  # one call for the page of meetings

    # A contact leaves one meeting and another joins: the next incremental read has exactly the new attendees.
    meeting_id = next(iter(in_day))
    leaving = emulator.meeting_contact_ids(meeting_id)
    joining = next(str(n) for n in range(1, 150) if str(n) not in leaving)
    hubspot.clock.advance(600)
    for contact_id in leaving:
        emulator.dissociate_meeting_contact(meeting_id, contact_id)
    emulator.associate_meeting_contact(meeting_id, joining)
    changed = list(read_events(hubspot.client, hubspot.request(pages[-1].cursor, window)))
    assert {record["source_id"] for page in changed for record in page.records} == {meeting_id}
    assert attendees_of(changed) == expected_attendees(emulator, {meeting_id})
    assert [c for _, c, _, _, o in attendees_of(changed) if not o and "@sandbox-portal" not in c] == [
        emulator.contact_records()[int(joining) - 1]["properties"]["email"]
    ]


def test_an_incremental_day_with_no_changes_costs_one_search_and_one_archived_page(hubspot: Connected) -> None:
    window = day_of(DAY)
    _, cursor, _ = collect(read_events(hubspot.client, hubspot.request(window=window)))
    hubspot.clock.advance(60)
    position = hubspot.log_position()
    changes, _, _ = collect(read_events(hubspot.client, hubspot.request(cursor, window)))
    assert changes == []
    assert len(hubspot.crm_requests(position)) == 2  # nothing changed, so no owners read either


# --- pure mappers ---------------------------------------------------------------------------------------------------


def test_to_contact_maps_properties_and_takes_the_archive_time_as_the_modification() -> None:
    raw = HubSpotObject.model_validate(
        {
            "id": "5",
            "properties": {"email": "a@b.example", "firstname": "Ada", "jobtitle": "CTO", "phone": None},
            "createdAt": "2025-01-02T03:04:05.006Z",
            "updatedAt": "2025-02-01T00:00:00.000Z",
            "archived": True,
            "archivedAt": "2025-03-01T00:00:00.000Z",
        }
    )
    contact = to_contact(raw, "c1")
    assert list(contact) == list(CONTACT_COLUMNS)
    assert (contact["email"], contact["first_name"], contact["job_title"], contact["phone"]) == (
        "a@b.example",
        "Ada",
        "CTO",
        None,
    )
    assert contact["modified_at"] == datetime(2025, 3, 1, tzinfo=UTC) and contact["is_deleted"] is True
    assert contact["created_at"] == datetime(2025, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def test_to_user_maps_an_owner_and_flags_an_archived_one() -> None:
    raw = HubSpotOwner.model_validate(
        {
            "id": "41",
            "email": "o@x.example",
            "firstName": "Omar",
            "lastName": "",
            "userId": None,
            "createdAt": "2025-01-01T00:00:00Z",
            "updatedAt": "2025-06-01T12:00:00.000Z",
            "archived": True,
            "teams": [],
        }
    )
    user = to_user(raw, "c1")
    assert list(user) == list(USER_COLUMNS)
    assert (user["source_id"], user["email"], user["first_name"], user["last_name"], user["title"]) == (
        "41",
        "o@x.example",
        "Omar",
        None,
        None,
    )
    assert (user["is_active"], user["is_deleted"]) == (False, True)
    assert user["modified_at"] == datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "all_day"),
    [
        ("2026-04-10T00:00:00.000Z", "2026-04-11T00:00:00.000Z", True),
        ("2026-04-10T00:00:00Z", "2026-04-12T00:00:00Z", True),
        ("2026-04-10T00:00:00.000Z", "2026-04-10T01:00:00.000Z", False),
        ("2026-04-10T09:30:00.000Z", "2026-04-11T09:30:00.000Z", False),
        (str(int(datetime(2026, 4, 10, tzinfo=UTC).timestamp() * 1000)), None, False),
    ],
)
def test_to_event_reads_times_in_utc_and_infers_all_day(start: str, end: str | None, all_day: bool) -> None:
    raw = HubSpotObject.model_validate(
        {
            "id": "80",
            "properties": {
                "hs_meeting_title": "Review",
                "hs_meeting_start_time": start,
                "hs_meeting_end_time": end,
                "hs_meeting_location": "",
                "hubspot_owner_id": "41",
            },
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-02T00:00:00Z",
        }
    )
    event = to_event(raw, "c1", {"41": "o@x.example"})
    assert list(event) == list(EVENT_COLUMNS)
    assert event["start_at"].date() == datetime(2026, 4, 10).date() and event["start_at"].utcoffset() == timedelta(0)
    assert (event["is_all_day"], event["location"], event["organizer_email"]) == (all_day, None, "o@x.example")
    assert to_event(raw, "c1")["organizer_email"] is None  # no owner directory, no guess
