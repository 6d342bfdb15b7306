"""The Salesforce readers against the emulator over real HTTP, plus unit tests of the pure mappers.

Expected records are built from the emulator's own truth (`contact_records()` etc., plain dicts) with small
independent conversions, so a wrong query, page walk, window or mapping in the connector makes these fail.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from integrations_pipeline.clients.errors import CursorExpired, NeedsReauth, RateLimited
from integrations_pipeline.clients.http import ApiClient, RetryPolicy
from integrations_pipeline.clients.salesforce import (
    ENTITIES,
    SPEC,
    SalesforceClient,
    SalesforceContact,
    SalesforceEvent,
    SalesforceUser,
    read_contacts,
    read_events,
    read_users,
    to_contact,
    to_event,
    to_user,
)
from integrations_pipeline.clients.spec import Page, SyncRequest
from integrations_pipeline.settings import ProviderApp
from integrations_pipeline.store import TokenSet
from integrations_pipeline_tests.clients import AttendeeRow, RawOf, attendees_of
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_salesforce_emulator import ServedSalesforce, serve_salesforce

CONNECTION_ID = "conn-salesforce-1"
DAY = (datetime(2026, 7, 14, tzinfo=UTC), datetime(2026, 7, 15, tzinfo=UTC))


class BearerAuth(httpx.Auth):
    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        yield request


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def org(clock: ManualClock) -> Iterator[ServedSalesforce]:
    with serve_salesforce(clock) as served:
        yield served


def client_for(org: ServedSalesforce, **options: Any) -> SalesforceClient:
    # The API origin is deliberately unusable: data calls must go to the instance_url of the token response.
    client = SPEC.build_client("http://127.0.0.1:9", BearerAuth(org.tokens["access_token"]), org.tokens)  # type: ignore[misc]
    assert isinstance(client, SalesforceClient)
    if options:
        client.close()
        client = SalesforceClient(org.tokens["instance_url"], auth=BearerAuth(org.tokens["access_token"]), **options)
    return client


@pytest.fixture
def client(org: ServedSalesforce) -> Iterator[SalesforceClient]:
    with client_for(org) as api:
        yield api  # type: ignore[misc]


def now(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def sync(client: SalesforceClient, reader: Any, request: SyncRequest) -> tuple[list[Page], dict[str, Any]]:
    pages = list(reader(client, request))
    assert pages[-1].cursor is not None and all(page.cursor is None for page in pages[:-1])
    records = {record["source_id"]: record for page in pages for record in page.records}
    assert len(records) == sum(len(page.records) for page in pages)  # no record twice
    return pages, records


def parse(value: str | None) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC) if value else None


def expected_contact(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION_ID,
        "source_id": record["Id"],
        "email": record["Email"],
        "first_name": record["FirstName"],
        "last_name": record["LastName"],
        "phone": record["Phone"],
        "company": record["Account"]["Name"] if record["Account"] else None,
        "job_title": record["Title"],
        "created_at": parse(record["CreatedDate"]),
        "modified_at": parse(record["SystemModstamp"]),
        "is_deleted": record["IsDeleted"],
        "raw": RawOf(record),
    }


def data_requests(org: ServedSalesforce, since: int) -> list[str]:
    return [f"{r.method} {r.path}" for r in org.emulator.request_log[since:] if r.path.startswith("/services/data")]


# --- contacts ---------------------------------------------------------------------------------------------------------


def test_full_then_incremental_contacts(org: ServedSalesforce, client: SalesforceClient, clock: ManualClock) -> None:
    victim = org.emulator.contact_records()[7]["Id"]
    org.emulator.delete_contact(victim)  # already in the recycle bin before the first sync
    clock.advance(600)  # beyond the cursor's 5-minute overlap, so the next window does not re-read it
    pages, records = sync(client, read_contacts, SyncRequest(CONNECTION_ID, None, now(clock)))
    assert records == {record["Id"]: expected_contact(record) for record in org.emulator.contact_records()}
    assert records[victim]["is_deleted"] is True and len(records) == 450
    assert any(record["company"] for record in records.values())

    clock.advance(600)  # inside the 2-hour session: no refreshing transport here
    created = org.emulator.create_contact({"LastName": "New", "Email": "new@example.com"})
    changed = org.emulator.contact_records()[20]["Id"]
    org.emulator.update_contact(changed, {"Title": "Chief Sandbox Officer"})
    deleted = org.emulator.contact_records()[30]["Id"]
    org.emulator.delete_contact(deleted)
    clock.advance(600)  # inside the 2-hour session: no refreshing transport here
    before = len(org.emulator.request_log)
    _, changes = sync(client, read_contacts, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock)))
    truth = {record["Id"]: expected_contact(record) for record in org.emulator.contact_records()}
    assert changes == {record_id: truth[record_id] for record_id in (created, changed, deleted)}
    assert changes[deleted]["is_deleted"] is True and changes[changed]["job_title"] == "Chief Sandbox Officer"
    # Only the changes travelled: one delete-log check and one page of queryAll.
    assert data_requests(org, before) == [
        "GET /services/data/v66.0/sobjects/Contact/deleted/",
        "GET /services/data/v66.0/queryAll",
    ]


def test_a_purged_recycle_bin_makes_the_cursor_stale(
    org: ServedSalesforce, client: SalesforceClient, clock: ManualClock
) -> None:
    pages, _ = sync(client, read_contacts, SyncRequest(CONNECTION_ID, None, now(clock)))
    clock.advance(600)
    org.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired, match="delete log"):
        list(read_contacts(client, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock))))
    for request in (SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock), DAY),):
        with pytest.raises(CursorExpired):
            list(read_events(client, request))


def test_contacts_page_through_next_records_url(clock: ManualClock) -> None:
    with serve_salesforce(clock, contacts=4500) as org, client_for(org) as client:
        pages, records = sync(client, read_contacts, SyncRequest(CONNECTION_ID, None, now(clock)))  # type: ignore[arg-type]
        assert [len(page.records) for page in pages] == [2000, 2000, 500, 0]
        assert set(records) == {record["Id"] for record in org.emulator.contact_records()}


# --- users ------------------------------------------------------------------------------------------------------------


def test_users_full_and_incremental(org: ServedSalesforce, client: SalesforceClient, clock: ManualClock) -> None:
    pages, records = sync(client, read_users, SyncRequest(CONNECTION_ID, None, now(clock)))
    truth = org.emulator.user_records()
    assert records == {
        record["Id"]: {
            "connection_id": CONNECTION_ID,
            "source_id": record["Id"],
            "email": record["Email"],
            "first_name": record["FirstName"],
            "last_name": record["LastName"],
            "title": record["Title"],
            "is_active": record["IsActive"],
            "created_at": parse(record["CreatedDate"]),
            "modified_at": parse(record["SystemModstamp"]),
            "is_deleted": False,
            "raw": RawOf(record),
        }
        for record in truth
    }
    clock.advance(3600)
    org.emulator.update_user(truth[3]["Id"], {"IsActive": False})
    clock.advance(60)
    _, changes = sync(client, read_users, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock)))
    assert list(changes) == [truth[3]["Id"]] and changes[truth[3]["Id"]]["is_active"] is False


# --- events -----------------------------------------------------------------------------------------------------------


def test_a_day_window_returns_exactly_the_events_starting_that_day(
    org: ServedSalesforce, client: SalesforceClient, clock: ManualClock
) -> None:
    all_day = org.emulator.create_event({"Subject": "Offsite", "StartDateTime": DAY[0], "IsAllDayEvent": True})
    last_minute = org.emulator.create_event(
        {"Subject": "Late", "StartDateTime": DAY[1] - timedelta(minutes=1), "EndDateTime": DAY[1]}
    )
    next_day = org.emulator.create_event(
        {"Subject": "Next", "StartDateTime": DAY[1], "EndDateTime": DAY[1] + timedelta(hours=1)}
    )
    pages, records = sync(client, read_events, SyncRequest(CONNECTION_ID, None, now(clock), DAY))
    expected = {
        record["Id"]
        for record in org.emulator.event_records()
        if DAY[0] <= parse(record["StartDateTime"]) < DAY[1]  # type: ignore[operator]
    }
    assert set(records) == expected and {all_day, last_minute} <= expected and next_day not in expected
    offsite = records[all_day]
    assert (offsite["start_at"], offsite["end_at"], offsite["is_all_day"]) == (DAY[0], DAY[1], True)
    assert offsite["organizer_email"] == org.emulator.user_records()[0]["Email"]

    clock.advance(3600)
    org.emulator.update_event(last_minute, {"Subject": "Later"})
    org.emulator.delete_event(all_day)
    org.emulator.update_event(next_day, {"Subject": "Not this day"})
    clock.advance(60)
    before = len(org.emulator.request_log)
    _, changes = sync(client, read_events, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock), DAY))
    assert set(changes) == {last_minute, all_day}
    assert changes[all_day]["is_deleted"] is True and changes[last_minute]["title"] == "Later"
    # the delete log, the events, and the invitations of the one live event changed
    assert len(data_requests(org, before)) == 3


def expected_attendees(org: ServedSalesforce, event_ids: set[str]) -> set[AttendeeRow]:
    """(event, email, name, response, organizer) from the emulator's truth: the owner, then related people."""
    statuses = {"Accepted": "accepted", "Declined": "declined", "New": "needs_action"}
    users = {record["Id"]: record["Email"] for record in org.emulator.user_records()}
    people: dict[tuple[str, str], AttendeeRow] = {}
    for event in org.emulator.event_records(include_deleted=False):
        if event["Id"] in event_ids:
            owner = users[event["OwnerId"]].lower()
            people[event["Id"], owner] = (event["Id"], owner, None, "accepted", True)
    for relation in org.emulator.event_relation_records(include_deleted=False):
        person = relation["Relation"]
        if relation["EventId"] in event_ids and not relation["IsWhat"]:
            answer = statuses[relation["Status"]] if relation["IsInvitee"] else "unknown"
            email = person["Email"].lower()
            people.setdefault((relation["EventId"], email), (relation["EventId"], email, person["Name"], answer, False))
    return set(people.values())


def test_attendees_are_the_owner_and_the_event_relations_read_in_batches(
    org: ServedSalesforce, clock: ManualClock
) -> None:
    with client_for(org) as client:
        client.relation_batch = 2  # three batches for a day of five events
        window = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 4, tzinfo=UTC))
        before = len(org.emulator.request_log)
        pages, records = sync(client, read_events, SyncRequest(CONNECTION_ID, None, now(clock), window))
        relation_queries = [r for r in org.emulator.request_log[before:] if "EventRelation" in r.query]
        assert len(records) > 2 and len(relation_queries) == -(-len(records) // 2)
        assert attendees_of(pages) == expected_attendees(org, set(records))
        statuses = {answer for *_, answer, organizer in attendees_of(pages) if not organizer}
        assert {"accepted", "declined", "needs_action"} <= statuses

        # Invited, answered and uninvited at the provider: the next incremental read fetches the event again, with
        # exactly the people it has now.
        event_id = next(iter(records))
        contact = org.emulator.contact_records()[0]
        clock.advance(60)
        removed = org.emulator.add_event_relation({"EventId": event_id, "RelationId": contact["Id"]})
        org.emulator.update_event_relation(removed, {"Status": "Declined"})
        newcomer = org.emulator.user_records()[-1]
        org.emulator.add_event_relation({"EventId": event_id, "RelationId": newcomer["Id"], "Status": "Accepted"})
        org.emulator.delete_event_relation(removed)
        clock.advance(60)
        changed, _ = sync(client, read_events, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock), window))
        assert {record["source_id"] for page in changed for record in page.records} == {event_id}
        assert attendees_of(changed) == expected_attendees(org, {event_id})
        emails = {email: answer for _, email, _, answer, _ in attendees_of(changed)}
        assert emails[newcomer["Email"].lower()] == "accepted" and contact["Email"].lower() not in emails


def test_events_need_a_day_window(client: SalesforceClient, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="window"):
        list(read_events(client, SyncRequest(CONNECTION_ID, None, now(clock))))


# --- limits, sessions and the spec ------------------------------------------------------------------------------------


def test_a_spent_api_allowance_is_rate_limited(clock: ManualClock) -> None:
    waits: list[float] = []
    with serve_salesforce(clock, api_request_limit=1) as org:
        retry = RetryPolicy(max_attempts=3)
        with client_for(org, retry=retry, sleep=waits.append) as client:
            request = SyncRequest(CONNECTION_ID, None, now(clock))
            assert len(list(read_users(client, request))) == 2  # type: ignore[arg-type]
            with pytest.raises(RateLimited):
                list(read_users(client, request))  # type: ignore[arg-type]
            assert len(waits) == 2 and client.stats.rate_limit_headers["sforce-limit-info"] == "api-usage=1/1"


def test_an_expired_session_needs_reauth_without_a_refreshing_transport(
    org: ServedSalesforce, client: SalesforceClient, clock: ManualClock
) -> None:
    org.emulator.expire_access_tokens()
    with pytest.raises(NeedsReauth):
        list(read_contacts(client, SyncRequest(CONNECTION_ID, None, now(clock))))


def test_describe_account_and_revoke_through_the_spec(org: ServedSalesforce) -> None:
    assert SPEC.describe_account is not None and SPEC.revoke is not None
    with ApiClient(org.url) as api:
        info = SPEC.describe_account(api, org.tokens["access_token"])
        assert info.external_account_id == org.emulator.org_id
        assert info.metadata == {"organization_id": org.emulator.org_id, "user_id": org.emulator.admin_user_id}
        tokens = TokenSet(
            access_token=SecretStr(org.tokens["access_token"]),
            refresh_token=SecretStr(org.tokens["refresh_token"]),
            expires_at=None,
        )
        endpoints = SPEC.oauth_endpoints(ProviderApp(client_id="id", client_secret=SecretStr("s"), base_url=org.url))
        assert SPEC.revoke(api, tokens, endpoints) is True
        assert SPEC.revoke(api, tokens, endpoints) is False  # already gone
    assert [entity.entity for entity in ENTITIES] == ["users", "contacts", "events"]
    assert [entity.partitioned_by_day for entity in ENTITIES] == [False, False, True]


# --- pure mappers -----------------------------------------------------------------------------------------------------


def test_to_contact_maps_account_name_and_deletion() -> None:
    raw = SalesforceContact.model_validate(
        {
            "attributes": {"type": "Contact", "url": "/x"},
            "Id": "003A",
            "Email": "",
            "LastName": "Lovelace",
            "Account": None,
            "SystemModstamp": "2026-03-09T18:30:57.220+0000",
            "IsDeleted": True,
        }
    )
    record = to_contact(raw, CONNECTION_ID)
    assert (record["email"], record["company"], record["is_deleted"]) == (None, None, True)
    assert record["modified_at"] == datetime(2026, 3, 9, 18, 30, 57, 220000, tzinfo=UTC)
    with_account = SalesforceContact.model_validate(
        {
            "Id": "003B",
            "SystemModstamp": "2026-03-09T18:30:57Z",
            "Account": {"attributes": {"type": "Account"}, "Name": "Acme"},
        }
    )
    assert to_contact(with_account, CONNECTION_ID)["company"] == "Acme"


def test_to_event_all_day_spans_whole_days_and_timed_events_keep_their_times() -> None:
    base = {"Id": "00UA", "SystemModstamp": "2026-03-09T18:30:57.220+0000", "Owner": {"Email": "o@example.com"}}
    all_day = SalesforceEvent.model_validate(
        base
        | {
            "IsAllDayEvent": True,
            "ActivityDate": "2026-07-14",
            "StartDateTime": "2026-07-14T00:00:00.000+0000",
            "EndDateTime": "2026-07-15T00:00:00.000+0000",  # a two-day event ends on its last day
        }
    )
    record = to_event(all_day, CONNECTION_ID)
    assert (record["start_at"], record["end_at"]) == (DAY[0], DAY[0] + timedelta(days=2))
    assert record["organizer_email"] == "o@example.com" and record["is_all_day"] is True
    timed = SalesforceEvent.model_validate(
        base | {"StartDateTime": "2026-07-14T09:30:00.000+0200", "EndDateTime": "2026-07-14T10:00:00.000+0200"}
    )
    record = to_event(timed, CONNECTION_ID)
    assert record["start_at"] == datetime(2026, 7, 14, 7, 30, tzinfo=UTC) and record["start_at"].tzinfo is UTC
    assert record["end_at"] == datetime(2026, 7, 14, 8, 0, tzinfo=UTC)


def test_to_user_is_never_deleted_and_keeps_is_active() -> None:
    raw = SalesforceUser.model_validate(
        {"Id": "005A", "IsActive": False, "SystemModstamp": "2026-03-09T18:30:57.000+0000", "Title": None}
    )
    record = to_user(raw, CONNECTION_ID)
    assert (record["is_active"], record["is_deleted"], record["title"]) == (False, False, None)
    assert record["created_at"] is None
