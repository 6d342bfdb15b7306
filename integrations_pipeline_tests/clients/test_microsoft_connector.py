"""The Microsoft Graph connector against the emulator over real HTTP, plus unit tests of its pure mappers.

Expected records are mapped by hand here from the emulator's raw truth (`*_records()`), independently of the
connector's mappers, so a wrong mapping, a missed page or a lost deletion fails a test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.clients.errors import CursorExpired
from integrations_pipeline.clients.http import RetryPolicy
from integrations_pipeline.clients.microsoft import (
    ENTITIES,
    SPEC,
    GraphContact,
    GraphEvent,
    GraphUser,
    MicrosoftClient,
    read_contacts,
    read_events,
    read_users,
    to_contact,
    to_event,
    to_user,
)
from integrations_pipeline.clients.spec import Page, SyncRequest
from integrations_pipeline.records import CONTACT_COLUMNS, EVENT_COLUMNS, USER_COLUMNS
from integrations_pipeline_tests.clients import RawOf
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_microsoft_emulator import ServedMicrosoft, serve_microsoft

CONNECTION = "conn-ms-1"
DAY = datetime(2026, 6, 10, tzinfo=UTC)


class BearerAuth(httpx.Auth):
    """The token obtained through the emulator's OAuth endpoints, as the gateway's auth transport would send it."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        yield request


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def graph(clock: ManualClock) -> Iterator[ServedMicrosoft]:
    with serve_microsoft(clock, users=12, contacts=230, events=90) as served:
        yield served


@pytest.fixture
def sleeps() -> list[float]:
    """What the client's retry policy waited: recorded instead of slept."""
    return []


@pytest.fixture
def client(graph: ServedMicrosoft, sleeps: list[float]) -> Iterator[MicrosoftClient]:
    auth = BearerAuth(graph.tokens["access_token"])
    built = MicrosoftClient(graph.url, auth=auth, retry=RetryPolicy(max_attempts=3), sleep=sleeps.append)
    with built:
        yield built


def sync(pages: Iterator[Page]) -> tuple[list[dict[str, Any]], str | None, int]:
    """(records, final cursor, pages) of one read; only the last page may carry a cursor."""
    collected = list(pages)
    assert all(page.cursor is None for page in collected[:-1])
    return [dict(record) for page in collected for record in page.records], collected[-1].cursor, len(collected)


def request(cursor: str | None = None, window: tuple[datetime, datetime] | None = None) -> SyncRequest:
    return SyncRequest(CONNECTION, cursor, datetime.now(UTC), window=window)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text[:26] + "+00:00" if not text.endswith("Z") else text)


def expected_contact(raw: dict[str, Any], deleted: bool = False) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION,
        "source_id": raw["id"],
        "email": raw["emailAddresses"][0]["address"],
        "first_name": raw["givenName"],
        "last_name": raw["surname"],
        "phone": raw["businessPhones"][0],
        "company": raw["companyName"],
        "job_title": raw["jobTitle"],
        "created_at": instant(raw["createdDateTime"]),
        "modified_at": instant(raw["lastModifiedDateTime"]),
        "is_deleted": deleted,
        "raw": RawOf(raw),
    }


def expected_user(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION,
        "source_id": raw["id"],
        "email": raw["mail"] or raw["userPrincipalName"],
        "first_name": raw["givenName"],
        "last_name": raw["surname"],
        "title": raw["jobTitle"],
        "is_active": raw["accountEnabled"],
        "created_at": instant(raw["createdDateTime"]),
        "modified_at": None,
        "is_deleted": False,
        "raw": RawOf(raw),
    }


def starts_on(raw: dict[str, Any], day: datetime) -> bool:
    return day <= instant(raw["start"]["dateTime"]) < day + timedelta(days=1)


def graph_requests(graph: ServedMicrosoft, suffix: str) -> int:
    return sum(1 for record in graph.emulator.request_log if record.path.endswith(suffix))


# --- contacts ---------------------------------------------------------------------------------------------------------


def test_full_contacts_sync_returns_exactly_the_mailbox_one_page_per_request(
    graph: ServedMicrosoft, client: MicrosoftClient
) -> None:
    records, cursor, pages = sync(read_contacts(client, request()))
    assert records == [expected_contact(raw) for raw in graph.emulator.contact_records()]
    assert all(tuple(record) == CONTACT_COLUMNS for record in records)
    assert graph_requests(graph, "/contacts/delta()") == 3 and pages == 4  # 230 contacts, 100 a page, + cursor
    assert cursor is not None and "$deltatoken=" in cursor


def test_incremental_contacts_sync_returns_only_the_changes_and_deletions(
    graph: ServedMicrosoft, client: MicrosoftClient
) -> None:
    _, cursor, _ = sync(read_contacts(client, request()))
    graph.clock.advance(300)
    raws = graph.emulator.contact_records()
    graph.emulator.update_contact(raws[7]["id"], jobTitle="Head of Data")
    graph.emulator.delete_contact(raws[8]["id"])
    new_id = graph.emulator.create_contact(
        givenName="Nia", surname="Okoro", emailAddress="nia@example.com", businessPhone="+1 555 0100"
    )
    before = graph_requests(graph, "/contacts/delta()")
    records, next_cursor, _ = sync(read_contacts(client, request(cursor)))
    assert graph_requests(graph, "/contacts/delta()") - before == 1
    truth = {raw["id"]: raw for raw in graph.emulator.contact_records()}
    deleted = {key: None for key in CONTACT_COLUMNS} | {
        "connection_id": CONNECTION,
        "source_id": raws[8]["id"],
        "is_deleted": True,
        "raw": RawOf(["id", "@removed"], must=["@removed"]),  # the tombstone as Graph sent it
    }
    assert records == [expected_contact(truth[raws[7]["id"]]), deleted, expected_contact(truth[new_id])]
    assert records[0]["job_title"] == "Head of Data"
    assert records[0]["modified_at"] == datetime.fromtimestamp(int(graph.clock.now), UTC)
    assert next_cursor and next_cursor != cursor
    assert sync(read_contacts(client, request(next_cursor)))[0] == []


def test_stale_contacts_cursor_raises_cursor_expired(graph: ServedMicrosoft, client: MicrosoftClient) -> None:
    _, cursor, _ = sync(read_contacts(client, request()))
    graph.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired, match="SyncStateNotFound"):
        sync(read_contacts(client, request(cursor)))


def test_a_throttled_page_is_retried_after_retry_after(
    graph: ServedMicrosoft, client: MicrosoftClient, sleeps: list[float]
) -> None:
    graph.emulator.throttle_next(1, retry_after_s=2)
    records, _, _ = sync(read_contacts(client, request()))
    assert len(records) == 230 and client.stats.retries == 1 and sleeps == [2.0]
    assert [r.status for r in graph.emulator.request_log if r.path.endswith("/contacts/delta()")][:2] == [429, 200]


# --- users ------------------------------------------------------------------------------------------------------------


def test_full_then_incremental_users_sync(graph: ServedMicrosoft, client: MicrosoftClient) -> None:
    records, cursor, _ = sync(read_users(client, request()))
    assert records == [expected_user(raw) for raw in graph.emulator.user_records()]
    assert all(tuple(record) == USER_COLUMNS for record in records)
    assert any(record["is_active"] is False for record in records)
    raws = graph.emulator.user_records()
    graph.emulator.update_user(raws[3]["id"], jobTitle="Principal Engineer")
    graph.emulator.delete_user(raws[4]["id"])
    changes, _, _ = sync(read_users(client, request(cursor)))
    assert changes[0] == expected_user(graph.emulator.user_records()[3]) | {"title": "Principal Engineer"}
    assert changes[1]["source_id"] == raws[4]["id"] and changes[1]["is_deleted"] is True
    assert changes[1]["is_active"] is False and len(changes) == 2
    graph.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired, match="resyncRequired"):
        sync(read_users(client, request(cursor)))


# --- events -----------------------------------------------------------------------------------------------------------


def test_day_window_returns_exactly_the_events_starting_that_day(
    graph: ServedMicrosoft, client: MicrosoftClient
) -> None:
    window = (DAY, DAY + timedelta(days=1))
    records, cursor, _ = sync(read_events(client, request(window=window)))
    truth = [raw for raw in graph.emulator.event_records() if starts_on(raw, DAY)]
    assert len(truth) >= 2
    assert sorted(record["source_id"] for record in records) == sorted(raw["id"] for raw in truth)
    assert all(tuple(record) == EVENT_COLUMNS and window[0] <= record["start_at"] < window[1] for record in records)
    by_id = {raw["id"]: raw for raw in truth}
    for record in records:
        raw = by_id[record["source_id"]]
        assert record["title"] == raw["subject"]
        assert record["end_at"] == instant(raw["end"]["dateTime"])
        assert record["organizer_email"] == raw["organizer"]["emailAddress"]["address"]
        assert record["location"] == (raw["location"]["displayName"] or None)
        assert record["modified_at"] == instant(raw["lastModifiedDateTime"]) and record["is_deleted"] is False
    assert cursor is not None and "$deltatoken=" in json.loads(cursor)["delta_link"]


def test_an_event_from_the_day_before_running_past_midnight_is_not_this_days(
    graph: ServedMicrosoft, client: MicrosoftClient
) -> None:
    late = graph.emulator.create_event(
        subject="Late", start=DAY - timedelta(minutes=30), end=DAY + timedelta(minutes=30)
    )
    records, _, _ = sync(read_events(client, request(window=(DAY, DAY + timedelta(days=1)))))
    assert late not in {record["source_id"] for record in records}
    previous, _, _ = sync(read_events(client, request(window=(DAY - timedelta(days=1), DAY))))
    assert late in {record["source_id"] for record in previous}


def test_incremental_day_sync_returns_the_days_changes_and_tombstones(
    graph: ServedMicrosoft, client: MicrosoftClient
) -> None:
    window = (DAY, DAY + timedelta(days=1))
    records, cursor, _ = sync(read_events(client, request(window=window)))
    held = sorted(records, key=lambda record: record["start_at"])
    assert len(held) >= 3
    graph.clock.advance(600)
    graph.emulator.update_event(held[0]["source_id"], subject="Moved in time only")
    graph.emulator.delete_event(held[1]["source_id"])
    moved_away = DAY + timedelta(days=3, hours=9)
    graph.emulator.update_event(held[2]["source_id"], start=moved_away, end=moved_away + timedelta(hours=1))
    added = graph.emulator.create_event(
        subject="All hands", start=DAY, end=DAY + timedelta(days=1), is_all_day=True, location="Harbor View"
    )
    elsewhere = next(raw["id"] for raw in graph.emulator.event_records() if starts_on(raw, DAY + timedelta(days=5)))
    graph.emulator.update_event(elsewhere, subject="Not this partition's business")

    before = graph_requests(graph, "/calendarView/delta()")
    changes, next_cursor, _ = sync(read_events(client, request(cursor, window)))
    assert graph_requests(graph, "/calendarView/delta()") - before == 1
    by_id = {record["source_id"]: record for record in changes}
    assert set(by_id) == {held[0]["source_id"], held[1]["source_id"], held[2]["source_id"], added}
    assert by_id[held[0]["source_id"]]["title"] == "Moved in time only"
    for gone in (held[1], held[2]):  # deleted, and moved to another day: tombstones at the start this day held
        assert by_id[gone["source_id"]]["is_deleted"] is True
        assert by_id[gone["source_id"]]["start_at"] == gone["start_at"]
    assert by_id[added]["is_all_day"] is True and by_id[added]["start_at"] == DAY
    assert by_id[added]["end_at"] == DAY + timedelta(days=1) and by_id[added]["location"] == "Harbor View"

    # The moved event's new day sees it as its own; this day's next round sees nothing more.
    assert sync(read_events(client, request(next_cursor, window)))[0] == []
    new_day = (DAY + timedelta(days=3), DAY + timedelta(days=4))
    assert held[2]["source_id"] in {
        record["source_id"] for record in sync(read_events(client, request(None, new_day)))[0]
    }


def test_stale_day_cursor_raises_cursor_expired(graph: ServedMicrosoft, client: MicrosoftClient) -> None:
    window = (DAY, DAY + timedelta(days=1))
    _, cursor, _ = sync(read_events(client, request(window=window)))
    graph.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired):
        sync(read_events(client, request(cursor, window)))


def test_events_need_a_window(client: MicrosoftClient) -> None:
    with pytest.raises(ValueError, match="window"):
        sync(read_events(client, request()))


def test_describe_account_reads_the_signed_in_user(graph: ServedMicrosoft) -> None:
    assert SPEC.describe_account is not None
    with MicrosoftClient(graph.url) as api:
        info = SPEC.describe_account(api, graph.tokens["access_token"])
    me = graph.emulator.user_records()[0]
    assert info.external_account_id == me["id"] == graph.emulator.me_id
    assert info.metadata["userPrincipalName"] == me["userPrincipalName"]


def test_spec_builds_a_microsoft_client_on_the_given_origin(graph: ServedMicrosoft) -> None:
    assert SPEC.build_client is not None
    with SPEC.build_client(graph.url, BearerAuth(graph.tokens["access_token"]), {"token_type": "Bearer"}) as built:
        assert isinstance(built, MicrosoftClient)
        assert len(sync(read_users(built, request()))[0]) == 12


def test_spec_and_entities() -> None:
    assert SPEC.name == "microsoft" and "offline_access" in SPEC.default_scopes
    assert SPEC.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert [(entity.entity, entity.partitioned_by_day) for entity in ENTITIES] == [
        ("users", False),
        ("contacts", False),
        ("events", True),
    ]


# --- pure mappers -----------------------------------------------------------------------------------------------------


def test_to_contact_prefers_business_phone_and_maps_blanks_to_none() -> None:
    raw = GraphContact.model_validate(
        {
            "id": "c1",
            "givenName": "",
            "surname": "Lee",
            "emailAddresses": [{"name": "x", "address": None}, {"address": "lee@example.com"}],
            "businessPhones": [],
            "mobilePhone": "+44 7700 900000",
            "companyName": None,
            "createdDateTime": "2026-01-02T03:04:05Z",
            "lastModifiedDateTime": "2026-02-02T03:04:05Z",
        }
    )
    record = to_contact(raw, CONNECTION)
    assert record["email"] == "lee@example.com" and record["phone"] == "+44 7700 900000"
    assert record["first_name"] is None and record["company"] is None and record["is_deleted"] is False
    assert record["modified_at"] == datetime(2026, 2, 2, 3, 4, 5, tzinfo=UTC)
    removed = to_contact(GraphContact.model_validate({"id": "c2", "@removed": {"reason": "deleted"}}), CONNECTION)
    assert removed["is_deleted"] is True and removed["email"] is None and removed["modified_at"] is None


def test_to_user_falls_back_to_the_sign_in_name_and_reads_removal() -> None:
    raw = GraphUser.model_validate(
        {"id": "u1", "mail": None, "userPrincipalName": "kim@contoso.example", "accountEnabled": True}
    )
    assert to_user(raw, CONNECTION)["email"] == "kim@contoso.example"
    assert to_user(raw, CONNECTION)["is_active"] is True
    gone = to_user(GraphUser.model_validate({"id": "u2", "@removed": {"reason": "changed"}}), CONNECTION)
    assert (gone["is_deleted"], gone["is_active"]) == (True, False)


def test_to_event_converts_zones_seven_digit_fractions_and_all_day_dates() -> None:
    timed = GraphEvent.model_validate(
        {
            "id": "e1",
            "subject": "Standup",
            "start": {"dateTime": "2026-06-10T09:30:00.1234567", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-06-10T10:00:00.0000000", "timeZone": "Europe/Berlin"},
            "location": {"displayName": ""},
            "organizer": {"emailAddress": {"address": "boss@example.com"}},
            "lastModifiedDateTime": "2026-05-01T10:00:00.1234567Z",
        }
    )
    record = to_event(timed, CONNECTION)
    assert record["start_at"] == datetime(2026, 6, 10, 7, 30, 0, 123456, tzinfo=UTC)
    assert record["end_at"] == datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
    assert record["location"] is None and record["organizer_email"] == "boss@example.com"
    assert record["modified_at"] == datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    all_day = GraphEvent.model_validate(
        {
            "id": "e2",
            "isAllDay": True,
            "start": {"dateTime": "2026-06-11T00:00:00.0000000", "timeZone": "Pacific Standard Time"},
            "end": {"dateTime": "2026-06-13T00:00:00.0000000", "timeZone": "Pacific Standard Time"},
        }
    )
    record = to_event(all_day, CONNECTION)
    assert (record["start_at"], record["end_at"], record["is_all_day"]) == (
        datetime(2026, 6, 11, tzinfo=UTC),
        datetime(2026, 6, 13, tzinfo=UTC),
        True,
    )
